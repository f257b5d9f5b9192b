"""Checkers for the "predict, then measure" exercises: one per chapter.

The learner writes down a number (a count, a size, a loss) before computing it. The checker
measures the true value on the real objects of the package and says whether the prediction was
right, and why: the working, or the likely slip behind a wrong number.
"""

from __future__ import annotations

import math
import numbers
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

GPT2_SMALL = GPTConfig(vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12,
                       n_layers=12, drop_rate=0.0, qkv_bias=True)


def _predict(check: Check, prediction_fn: Callable, name: str) -> float:
    value = check.call(f"{name}()", prediction_fn)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        check.stop(f"{name}() should return your prediction as a number, got {type(value).__name__}")
    return float(value)


def _judge(check: Check, predicted: float, actual: float, why: str, slips: dict[str, float],
           rel_tol: float = 0.0) -> None:
    """A pass with the working, or a fail naming the slip whose number matches the prediction."""
    if math.isclose(predicted, actual, rel_tol=rel_tol, abs_tol=1e-9):
        check.ok(f"right: measured {_fmt(actual)}. {why}")
        return
    for slip, wrong in slips.items():
        if math.isclose(predicted, wrong, rel_tol=max(rel_tol, 1e-9)):
            check.fail(f"you predicted {_fmt(predicted)}, measured {_fmt(actual)}: {slip}. {why}")
            return
    check.fail(f"you predicted {_fmt(predicted)}, measured {_fmt(actual)}. {why}")


def _fmt(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.4g}"


# --- chapter 1: how many windows? -----------------------------------------------------------------
WINDOWS = {"num_ids": 1_000, "context_length": 64, "stride": 32}


def check_window_count_prediction(prediction_fn) -> Check:
    """How many windows SlidingWindowDataset makes from 1,000 ids (context 64, stride 32)."""
    with Check("window count prediction") as check:
        predicted = _predict(check, prediction_fn, "predicted_window_count")
        n, T, s = WINDOWS.values()
        actual = len(SlidingWindowDataset(torch.arange(n), T, s))
        why = (f"A window starting at i needs ids i .. i + {T} (its last target), so the last start "
               f"is at most {n} - {T} - 1 = {n - T - 1}; the starts 0, {s}, {2 * s}, ... up to it "
               f"number ({n - T - 1}) // {s} + 1 = {actual}")
        _judge(check, predicted, actual, why, {
            "that is num_ids / stride, as if every start had a full window after it": n / s,
            "that is num_ids // stride, as if every start had a full window after it": n // s,
            "that forgets the target: the window needs one id more than context_length":
                (n - T) // s + 1,
            "that counts windows that do not overlap (stride = context_length)": n // T,
        })
    return check


# --- chapter 2: the loss of knowing nothing -------------------------------------------------------
def check_uniform_loss_prediction(prediction_fn, vocab_size: int = 65) -> Check:
    """The cross-entropy of a model that gives every one of `vocab_size` characters the same chance."""
    with Check("uniform loss prediction") as check:
        predicted = _predict(check, prediction_fn, "predicted_uniform_loss")
        logits = torch.zeros(1, vocab_size)  # equal scores: a uniform distribution
        actual = torch.nn.functional.cross_entropy(logits, torch.tensor([0])).item()
        why = (f"Each of the {vocab_size} characters gets probability 1/{vocab_size}, so every "
               f"position costs -ln(1/{vocab_size}) = ln({vocab_size}) ≈ {actual:.4f} nats, "
               f"whatever the text")
        _judge(check, predicted, actual, why, rel_tol=2e-3, slips={
            f"that is log2({vocab_size}), in bits; cross_entropy uses the natural log (nats)":
                math.log2(vocab_size),
            f"that is log10({vocab_size}); cross_entropy uses the natural log": math.log10(vocab_size),
            "that is the probability 1/vocab_size, not its negative log": 1 / vocab_size,
        })
    return check


# --- chapter 3: what do heads cost? ----------------------------------------------------------------
def check_attention_params_prediction(prediction_fn, d: int = 64, num_heads: int = 4) -> Check:
    """The parameter count of MultiHeadAttention(d, d, ..., num_heads, qkv_bias=False)."""
    with Check("attention parameter prediction") as check:
        predicted = _predict(check, prediction_fn, "predicted_attention_params")
        att = MultiHeadAttention(d_in=d, d_out=d, context_length=8, dropout=0.0,
                                 num_heads=num_heads, qkv_bias=False)
        actual = sum(p.numel() for p in att.parameters())
        why = (f"Query, key and value are each one ({d}, {d}) matrix shared by all heads, and the "
               f"output projection is ({d}, {d}) plus a bias of {d}: 4 * {d}² + {d} = {actual}. "
               f"The number of heads only decides how the {d} features are split")
        _judge(check, predicted, actual, why, {
            "that multiplies by the number of heads; the heads split one matrix, they do not add more":
                num_heads * actual,
            "that leaves out the output projection's bias": 4 * d * d,
            "that leaves out the output projection": 3 * d * d,
            f"that gives every head its own ({d}, {d}) q, k and v": 3 * num_heads * d * d + d * d + d,
        })
    return check


# --- chapter 4: what does a block cost? -------------------------------------------------------------
def check_block_params_prediction(prediction_fn, d: int = 128) -> Check:
    """The parameter count of one TransformerBlock with emb_dim d (qkv_bias=False)."""
    with Check("block parameter prediction") as check:
        predicted = _predict(check, prediction_fn, "predicted_block_params")
        cfg = GPTConfig(vocab_size=10, context_length=8, emb_dim=d, n_heads=4, n_layers=1,
                        drop_rate=0.0, qkv_bias=False)
        actual = sum(p.numel() for p in TransformerBlock(cfg).parameters())
        why = (f"Attention: 4 * {d}² + {d} (q, k, v without bias, the output projection with). "
               f"Feed-forward: {d} -> {4 * d} -> {d} with biases, 8 * {d}² + 5 * {d}. Two "
               f"LayerNorms: 4 * {d}. In all 12 * {d}² + 10 * {d} = {actual}: the feed-forward "
               f"network holds two thirds")
        _judge(check, predicted, actual, why, {
            "that leaves out the biases and LayerNorms; the d² terms alone": 12 * d * d,
            "that leaves out the two LayerNorms (a scale and a shift each)": 12 * d * d + 6 * d,
            "that gives the feed-forward layer a hidden size of d, not 4 * d": 6 * d * d + 7 * d,
        })
    return check


# --- chapter 5: what does weight tying save? ---------------------------------------------------------
def check_tying_savings_prediction(prediction_fn) -> Check:
    """How many parameters weight tying saves in GPT-2 small (V = 50,257, d = 768)."""
    with Check("weight tying prediction") as check:
        predicted = _predict(check, prediction_fn, "predicted_tying_savings")
        small = GPTConfig(vocab_size=97, context_length=16, emb_dim=24, n_heads=2, n_layers=2)

        def count(cfg: GPTConfig) -> int:  # unique parameters: a tied matrix counts once
            return sum(p.numel() for p in GPTModel(cfg).parameters())

        measured = count(small.replace(tie_weights=False)) - count(small.replace(tie_weights=True))
        V, d = GPT2_SMALL.vocab_size, GPT2_SMALL.emb_dim
        actual = V * d
        if measured != small.vocab_size * small.emb_dim:
            check.stop("the package's models disagree with V * d; please report this")
        why = (f"Tying removes the output head's own (V, d) matrix: {V:,} * {d} = {actual:,} "
               f"parameters, about a quarter of the untied model (measured on a small model: exactly "
               f"vocab_size * emb_dim). The head has no bias, so nothing else goes")
        _judge(check, predicted, actual, why, {
            "that adds the head's bias, but GPT-2's output head has none": V * d + V,
            "that counts both matrices; tying keeps one of them": 2 * V * d,
            "that is the position embedding (context_length, d), not the head": 1024 * d,
        })
    return check


# --- chapter 6: the loss before training ------------------------------------------------------------
def check_initial_loss_prediction(prediction_fn, vocab_size: int = 65) -> Check:
    """The loss of a freshly initialised GPTModel: close to ln(vocab_size), within 5%."""
    with Check("initial loss prediction", seed=0) as check:
        predicted = _predict(check, prediction_fn, "predicted_initial_loss")
        cfg = GPTConfig(vocab_size=vocab_size, context_length=32, emb_dim=64, n_heads=4, n_layers=2,
                        drop_rate=0.0)
        model = GPTModel(cfg).eval()
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(vocab_size, (8, 32), generator=gen)
        y = torch.randint(vocab_size, (8, 32), generator=gen)
        with torch.no_grad():
            actual = calc_loss_batch(model, x, y).item()
        uniform = math.log(vocab_size)
        why = (f"Small random weights give nearly equal logits, so the model starts close to a "
               f"uniform guess: ln({vocab_size}) ≈ {uniform:.3f} nats (measured {actual:.3f}). A first "
               f"loss far above this means the initialisation is too large")
        _judge(check, predicted, actual, why, rel_tol=0.05, slips={
            "that is log2(vocab_size), in bits; the loss is in nats (natural log)":
                math.log2(vocab_size),
            "that is 0: an untrained model knows nothing, it cannot be certain": 0.0,
            "that is the probability 1/vocab_size, not its negative log": 1 / vocab_size,
        })
    return check


# --- chapter 7: the size of a KV cache ---------------------------------------------------------------
def check_kv_cache_bytes_prediction(prediction_fn, tokens: int = 1024) -> Check:
    """The bytes GPT-2 small's KV cache holds after `tokens` tokens of one sequence, in float32."""
    with Check("KV cache size prediction") as check:
        predicted = _predict(check, prediction_fn, "predicted_kv_cache_bytes")
        L, d = GPT2_SMALL.n_layers, GPT2_SMALL.emb_dim
        actual = 2 * L * tokens * d * 4
        # Measure the rule on a small cache: keys and values of every layer, 4 bytes a number.
        cache, small = KVCache(3), dict(heads=2, head_dim=5, tokens=7)
        for layer in range(3):
            shape = (1, small["heads"], small["tokens"], small["head_dim"])
            cache.append(layer, torch.zeros(shape), torch.zeros(shape))
        measured = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
        if measured != 2 * 3 * small["tokens"] * small["heads"] * small["head_dim"] * 4:
            check.stop("the package's KV cache disagrees with 2 * L * T * d * 4; please report this")
        why = (f"Every layer keeps a key and a value vector of d = {d} numbers per token, 4 bytes "
               f"each in float32: 2 * {L} * {tokens} * {d} * 4 = {actual:,} bytes (about "
               f"{actual / 2**20:.0f} MiB). The heads split d; they do not multiply it")
        _judge(check, predicted, actual, why, {
            "that is half: count the values as well as the keys, at 4 bytes a number in float32":
                actual / 2,
            "that counts numbers, not bytes: a float32 takes 4 bytes": actual / 4,
            "that counts one layer; every layer has its own cache": actual / L,
            "that multiplies by the number of heads; the heads split d": actual * GPT2_SMALL.n_heads,
        })
    return check
