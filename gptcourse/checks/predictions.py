"""Checkers for the "predict, then measure" exercises: one per chapter.

The learner writes down a number (a count, a size, a loss) before computing it. The checker
measures the true value on the real objects of the package and says whether the prediction was
right, and why: the working, or the likely slip behind a wrong number.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..attention import MultiHeadAttention
from ..config import GPTConfig
from ..data import SlidingWindowDataset
from ..kvcache import KVCache
from ..layers import TransformerBlock
from ..loss import calc_loss_batch
from ..model import GPTModel
from . import Check
from .slips import Slip, judge_prediction, read_prediction, unit_slips

GPT2_SMALL = GPTConfig(vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12,
                       n_layers=12, drop_rate=0.0, qkv_bias=True)


def slip_table(checker: Callable) -> tuple[float, float, list[Slip]]:
    """(actual, tolerance of a right answer, every slip with its number) for a prediction
    checker: what the tests use to prove that every slip gives its own distinct answer."""
    actual, rel_tol, kind, slips = PROBLEMS[checker]()
    return actual, rel_tol, [*slips, *unit_slips(actual, kind)]


# Each question is a function giving (actual, tolerance, kind, slips), measured where it can be on
# the package's real objects, and a checker that judges the learner's number against it. The
# numbers are chosen so that every slip gives its own answer (tests/test_checks_predictions.py).

# --- chapter 1: how many windows? -----------------------------------------------------------------
WINDOWS = {"num_ids": 1_000, "context_length": 64, "stride": 24}


def _window_count() -> tuple:
    n, T, s = WINDOWS.values()
    actual = len(SlidingWindowDataset(torch.arange(n), T, s))
    return actual, 0.0, "count", [
        ("that is num_ids / stride, as if every start had a full window after it", n / s, 0.0),
        ("that is num_ids // stride, as if every start had a full window after it", n // s, 0.0),
        ("that forgets the target: a window needs context_length + 1 ids, its inputs and one "
         "more for the last target", (n - T) // s + 1, 0.0),
        ("that is one short: the window at position 0 counts too (the + 1)", (n - T - 1) // s, 0.0),
        ("that is not rounded down: a window that does not fit is not made (use //)",
         (n - T - 1) / s + 1, 0.0),
        ("that counts windows that do not overlap (stride = context_length)", n // T, 0.0),
        ("that counts every start position, as with stride 1", n - T, 0.0),
    ]


def check_window_count_prediction(prediction_fn) -> Check:
    """How many windows SlidingWindowDataset makes from 1,000 ids (context 64, stride 24)."""
    with Check("window count prediction") as check:
        predicted = read_prediction(check, prediction_fn, "predicted_window_count")
        n, T, s = WINDOWS.values()
        actual, rel_tol, kind, slips = _window_count()
        why = (f"A window starting at i needs ids i .. i + {T} (its last target), so the last start "
               f"is at most {n} - {T} - 1 = {n - T - 1}; the starts 0, {s}, {2 * s}, ... up to it "
               f"number ({n - T - 1}) // {s} + 1 = {actual}")
        judge_prediction(check, predicted, actual, why, slips, rel_tol, kind)
    return check


# --- chapter 2: the loss of knowing nothing -------------------------------------------------------
def _uniform_loss(vocab_size: int = 65) -> tuple:
    logits = torch.zeros(1, vocab_size)  # equal scores: a uniform distribution
    actual = torch.nn.functional.cross_entropy(logits, torch.tensor([0])).item()
    V = vocab_size
    return actual, 2e-3, "loss", [
        (f"that is log2({V}), in bits; cross_entropy uses the natural log (nats)", math.log2(V), 2e-3),
        (f"that is log10({V}); cross_entropy uses the natural log", math.log10(V), 2e-3),
        ("that is the probability 1/vocab_size, not its negative log", 1 / V, 2e-3),
        ("that is ln of GPT-2's vocabulary (50,257 tokens); this model predicts one of "
         f"{V} characters", math.log(50257), 2e-3),
        (f"that is ln(256), the number of byte values; this model predicts one of {V} characters",
         math.log(256), 2e-3),
        (f"that is ln(26), the letters alone; the vocabulary has {V} characters (capitals, "
         f"punctuation, space, newline)", math.log(26), 2e-3),
        (f"that is the vocabulary size itself: the loss is its natural log, ln({V})", V, 2e-3),
    ]


def check_uniform_loss_prediction(prediction_fn, vocab_size: int = 65) -> Check:
    """The cross-entropy of a model that gives every one of `vocab_size` characters the same chance."""
    with Check("uniform loss prediction") as check:
        predicted = read_prediction(check, prediction_fn, "predicted_uniform_loss")
        actual, rel_tol, kind, slips = _uniform_loss(vocab_size)
        why = (f"Each of the {vocab_size} characters gets probability 1/{vocab_size}, so every "
               f"position costs -ln(1/{vocab_size}) = ln({vocab_size}) ≈ {actual:.4f} nats, "
               f"whatever the text")
        judge_prediction(check, predicted, actual, why, slips, rel_tol, kind)
    return check


# --- chapter 3: what do heads cost? ----------------------------------------------------------------
def _attention_params(d: int = 64, num_heads: int = 4) -> tuple:
    att = MultiHeadAttention(d_in=d, d_out=d, context_length=8, dropout=0.0,
                             num_heads=num_heads, qkv_bias=False)
    actual = sum(p.numel() for p in att.parameters())
    hd = d // num_heads
    return actual, 0.0, "count", [
        ("that multiplies by the number of heads; the heads split one matrix, they do not add more",
         num_heads * actual, 0.0),
        ("that leaves out the output projection's bias", 4 * d * d, 0.0),
        ("that leaves out the output projection", 3 * d * d, 0.0),
        ("that also leaves out the output projection's bias", 3 * d * d + d, 0.0),
        (f"that gives every head its own ({d}, {d}) q, k and v", 3 * num_heads * d * d + d * d + d, 0.0),
        ("that gives q, k and v biases too; here qkv_bias=False", 4 * d * d + 4 * d, 0.0),
        (f"that uses the head size ({hd}) as the width; every projection is ({d}, {d})",
         4 * hd * hd + hd, 0.0),
    ]


def check_attention_params_prediction(prediction_fn, d: int = 64, num_heads: int = 4) -> Check:
    """The parameter count of MultiHeadAttention(d, d, ..., num_heads, qkv_bias=False)."""
    with Check("attention parameter prediction") as check:
        predicted = read_prediction(check, prediction_fn, "predicted_attention_params")
        actual, rel_tol, kind, slips = _attention_params(d, num_heads)
        why = (f"Query, key and value are each one ({d}, {d}) matrix shared by all heads, and the "
               f"output projection is ({d}, {d}) plus a bias of {d}: 4 * {d}² + {d} = {actual}. "
               f"The number of heads only decides how the {d} features are split")
        judge_prediction(check, predicted, actual, why, slips, rel_tol, kind)
    return check


# --- chapter 4: what does a block cost? -------------------------------------------------------------
def _block_params(d: int = 128) -> tuple:
    cfg = GPTConfig(vocab_size=10, context_length=8, emb_dim=d, n_heads=4, n_layers=1,
                    drop_rate=0.0, qkv_bias=False)
    actual = sum(p.numel() for p in TransformerBlock(cfg).parameters())
    return actual, 0.0, "count", [
        ("that leaves out the biases and LayerNorms; the d² terms alone", 12 * d * d, 0.0),
        ("that leaves out the two LayerNorms (a scale and a shift each)", 12 * d * d + 6 * d, 0.0),
        ("that is 2 * d short: either one LayerNorm is left out, or each LayerNorm counts one "
         "vector; there are two LayerNorms, each with a scale and a shift of d",
         12 * d * d + 8 * d, 0.0),
        ("that leaves out the feed-forward biases (4 * d in the first layer, d in the second)",
         12 * d * d + 5 * d, 0.0),
        ("that leaves out every bias; only the LayerNorms are added to the d² terms", 12 * d * d + 4 * d, 0.0),
        ("that gives q, k and v biases too; here qkv_bias=False", 12 * d * d + 13 * d, 0.0),
        ("that gives the feed-forward layer a hidden size of d, not 4 * d", 6 * d * d + 7 * d, 0.0),
        ("that counts the attention only; the feed-forward network holds two thirds of a block",
         4 * d * d + d, 0.0),
    ]


def check_block_params_prediction(prediction_fn, d: int = 128) -> Check:
    """The parameter count of one TransformerBlock with emb_dim d (qkv_bias=False)."""
    with Check("block parameter prediction") as check:
        predicted = read_prediction(check, prediction_fn, "predicted_block_params")
        actual, rel_tol, kind, slips = _block_params(d)
        why = (f"Attention: 4 * {d}² + {d} (q, k, v without bias, the output projection with). "
               f"Feed-forward: {d} -> {4 * d} -> {d} with biases, 8 * {d}² + 5 * {d}. Two "
               f"LayerNorms: 4 * {d}. In all 12 * {d}² + 10 * {d} = {actual}: the feed-forward "
               f"network holds two thirds")
        judge_prediction(check, predicted, actual, why, slips, rel_tol, kind)
    return check


# --- chapter 5: what does weight tying save? ---------------------------------------------------------
def _tying_savings() -> tuple:
    V, d, T = GPT2_SMALL.vocab_size, GPT2_SMALL.emb_dim, GPT2_SMALL.context_length
    actual = V * d
    return actual, 0.0, "count", [
        ("that adds the head's bias, but GPT-2's output head has none", V * d + V, 0.0),
        ("that counts both matrices; tying keeps one of them", 2 * V * d, 0.0),
        ("that is the position embedding (context_length, d), not the head", T * d, 0.0),
        ("that uses a vocabulary of 50,000; GPT-2's has 50,257 tokens", 50_000 * d, 0.0),
        ("that uses nanoGPT's padded vocabulary (50,304); GPT-2's has 50,257 tokens", 50_304 * d, 0.0),
        ("that uses the characters' vocabulary (65); GPT-2 small has 50,257 tokens", 65 * d, 0.0),
    ]


def check_tying_savings_prediction(prediction_fn) -> Check:
    """How many parameters weight tying saves in GPT-2 small (V = 50,257, d = 768)."""
    with Check("weight tying prediction") as check:
        predicted = read_prediction(check, prediction_fn, "predicted_tying_savings")
        small = GPTConfig(vocab_size=97, context_length=16, emb_dim=24, n_heads=2, n_layers=2)

        def count(cfg: GPTConfig) -> int:  # unique parameters: a tied matrix counts once
            return sum(p.numel() for p in GPTModel(cfg).parameters())

        measured = count(small.replace(tie_weights=False)) - count(small.replace(tie_weights=True))
        if measured != small.vocab_size * small.emb_dim:
            check.stop("the package's models disagree with V * d; please report this")
        actual, rel_tol, kind, slips = _tying_savings()
        V, d = GPT2_SMALL.vocab_size, GPT2_SMALL.emb_dim
        why = (f"Tying removes the output head's own (V, d) matrix: {V:,} * {d} = {actual:,} "
               f"parameters, about a quarter of the untied model (measured on a small model: exactly "
               f"vocab_size * emb_dim). The head has no bias, so nothing else goes")
        judge_prediction(check, predicted, actual, why, slips, rel_tol, kind)
    return check


# --- chapter 6: the loss before training ------------------------------------------------------------
def _initial_loss(vocab_size: int = 65) -> tuple:
    cfg = GPTConfig(vocab_size=vocab_size, context_length=32, emb_dim=64, n_heads=4, n_layers=2,
                    drop_rate=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPTModel(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(vocab_size, (8, 32), generator=gen)
    y = torch.randint(vocab_size, (8, 32), generator=gen)
    with torch.no_grad():
        actual = calc_loss_batch(model, x, y).item()
    V = vocab_size
    return actual, 0.05, "loss", [
        ("that is log2(vocab_size), in bits; the loss is in nats (natural log)", math.log2(V), 0.05),
        ("that is log10(vocab_size); the loss uses the natural log", math.log10(V), 0.05),
        ("that is 0: an untrained model knows nothing, it cannot be certain", 0.0, 0.05),
        ("that is the probability 1/vocab_size, not its negative log", 1 / V, 0.05),
        (f"that is ln of GPT-2's vocabulary (50,257); this model has {V} characters",
         math.log(50257), 0.05),
        (f"that is the vocabulary size itself: the loss is near its natural log, ln({V})", V, 0.05),
    ]


def check_initial_loss_prediction(prediction_fn, vocab_size: int = 65) -> Check:
    """The loss of a freshly initialised GPTModel: close to ln(vocab_size), within 5%."""
    with Check("initial loss prediction", seed=0) as check:
        predicted = read_prediction(check, prediction_fn, "predicted_initial_loss")
        actual, rel_tol, kind, slips = _initial_loss(vocab_size)
        uniform = math.log(vocab_size)
        why = (f"Small random weights give nearly equal logits, so the model starts close to a "
               f"uniform guess: ln({vocab_size}) ≈ {uniform:.3f} nats (measured {actual:.3f}). A first "
               f"loss far above this means the initialisation is too large")
        judge_prediction(check, predicted, actual, why, slips, rel_tol, kind)
    return check


# --- chapter 7: the size of a KV cache ---------------------------------------------------------------
# GPT-2 medium: its layers (24), heads (16), head size (64), width (1,024) and the token count
# asked about (600) all differ, so every slip below gives its own number.
GPT2_MEDIUM = GPT2_SMALL.replace(emb_dim=1024, n_heads=16, n_layers=24)
KV_TOKENS = 600


def _kv_cache_bytes(tokens: int = KV_TOKENS) -> tuple:
    L, d, H = GPT2_MEDIUM.n_layers, GPT2_MEDIUM.emb_dim, GPT2_MEDIUM.n_heads
    actual = 2 * L * tokens * d * 4
    return actual, 0.0, "bytes", [
        ("that is half: count the values as well as the keys, at 4 bytes a number in float32 "
         "(2 bytes is float16)", actual / 2, 0.0),
        ("that counts numbers, not bytes: a float32 takes 4 bytes", actual / 4, 0.0),
        ("that counts one layer; every layer has its own cache", actual / L, 0.0),
        ("that multiplies by the number of heads; the heads split d", actual * H, 0.0),
        (f"that uses the head size ({d // H}) as the width; each token keeps all d = {d} numbers "
         f"(every head's)", actual / H, 0.0),
        (f"that fills the whole context ({GPT2_MEDIUM.context_length} tokens); the cache grows "
         f"with the {tokens} tokens seen so far", 2 * L * GPT2_MEDIUM.context_length * d * 4, 0.0),
        ("that uses 8 bytes a number (float64); float32 takes 4", actual * 2, 0.0),
        ("that is GPT-2 small's cache (12 layers, d = 768); the question is about GPT-2 medium",
         2 * 12 * tokens * 768 * 4, 0.0),
    ]


def check_kv_cache_bytes_prediction(prediction_fn, tokens: int = KV_TOKENS) -> Check:
    """The bytes GPT-2 medium's KV cache holds after `tokens` tokens of one sequence, in float32."""
    with Check("KV cache size prediction") as check:
        predicted = read_prediction(check, prediction_fn, "predicted_kv_cache_bytes")
        # Measure the rule on a small cache: keys and values of every layer, 4 bytes a number.
        cache, small = KVCache(3), dict(heads=2, head_dim=5, tokens=7)
        for layer in range(3):
            shape = (1, small["heads"], small["tokens"], small["head_dim"])
            cache.append(layer, torch.zeros(shape), torch.zeros(shape))
        measured = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
        if measured != 2 * 3 * small["tokens"] * small["heads"] * small["head_dim"] * 4:
            check.stop("the package's KV cache disagrees with 2 * L * T * d * 4; please report this")
        actual, rel_tol, kind, slips = _kv_cache_bytes(tokens)
        L, d = GPT2_MEDIUM.n_layers, GPT2_MEDIUM.emb_dim
        why = (f"Every layer keeps a key and a value vector of d = {d} numbers per token, 4 bytes "
               f"each in float32: 2 * {L} * {tokens} * {d} * 4 = {actual:,} bytes (about "
               f"{actual / 2**20:.1f} MiB). The heads split d; they do not multiply it")
        judge_prediction(check, predicted, actual, why, slips, rel_tol, kind)
    return check


PROBLEMS: dict[Callable, Callable[[], tuple]] = {
    check_window_count_prediction: _window_count,
    check_uniform_loss_prediction: _uniform_loss,
    check_attention_params_prediction: _attention_params,
    check_block_params_prediction: _block_params,
    check_tying_savings_prediction: _tying_savings,
    check_initial_loss_prediction: _initial_loss,
    check_kv_cache_bytes_prediction: _kv_cache_bytes,
}
