"""Checkers for chapter 5: parameter counts, weight tying, FLOPs per token and MFU."""

from __future__ import annotations

import functools
import math

import torch

from ..config import GPTConfig, get_config
from ..flops import forward_flops_per_token, matmul_params, training_flops_per_token
from ..model import GPTModel, count_parameters
from . import Check, as_number, number_signature

DICT_CONFIG = ("a GPTConfig is a dataclass, not a dict: read its fields as attributes, "
               "cfg.emb_dim instead of cfg['emb_dim']")
MODEL_ERRORS = {"subscriptable": DICT_CONFIG}  # for Check(known=...)

# Small enough to build in a blink, different enough that each mistake changes the count.
TINY = GPTConfig(vocab_size=97, context_length=16, emb_dim=24, n_heads=4, n_layers=3, drop_rate=0.0)


def _number(check: Check, value, what: str) -> float:
    number = as_number(value)
    if number is None:
        check.stop(f"{what} returned {type(value).__name__}: return a single number")
    return float(number)


def _first_match(value: float, mistakes: dict[str, float], default: str, ref: float | None = None,
                 terms: dict[str, float] | None = None) -> str:
    """The first diagnosis whose wrong value equals `value`; else what the number's signature
    says (a term left out, a unit, a factor), followed by `default`."""
    for message, wrong in mistakes.items():
        if math.isclose(value, wrong, rel_tol=1e-6):
            return message
    found = number_signature(value, ref, terms) if ref is not None else None
    return f"{found}; {default}" if found else default


def _count_terms(cfg: GPTConfig) -> dict[str, float]:
    """Every term of the parameter count, and each per-block term counted for one block only."""
    V, T, d, L = cfg.vocab_size, cfg.context_length, cfg.emb_dim, cfg.n_layers
    per_block = {
        "the query, key and value weights (3 x emb_dim x emb_dim per block)": 3 * d * d,
        "the out_proj weight (emb_dim x emb_dim per block)": d * d,
        "the out_proj bias (emb_dim per block)": d,
        "the first feed-forward weight (emb_dim x 4 emb_dim per block)": 4 * d * d,
        "the first feed-forward bias (4 x emb_dim per block)": 4 * d,
        "the second feed-forward weight (4 emb_dim x emb_dim per block)": 4 * d * d,
        "the second feed-forward bias (emb_dim per block)": d,
        "the feed-forward biases (5 x emb_dim per block)": 5 * d,
        "the LayerNorm shifts (2 x emb_dim per block, plus the final one)": None,
    }
    if cfg.qkv_bias:
        per_block["the query, key and value biases (3 x emb_dim per block)"] = 3 * d
    terms = {"the token embedding (vocab_size x emb_dim)": V * d,
             "the position embedding (context_length x emb_dim)": T * d,
             "the final LayerNorm's shift (emb_dim)": d}
    for name, term in per_block.items():
        if term is None:
            terms[name] = d * (2 * L + 1)
            continue
        terms[name] = L * term
        terms[name.replace(" per block)", ")") + " in every block but one: it repeats n_layers times"] = (L - 1) * term
    if not cfg.tie_weights:
        terms["the output head (vocab_size x emb_dim)"] = V * d
    return terms


# --- parameter count ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _reference_count(cfg: GPTConfig) -> int:
    with torch.device("meta"):  # shapes only: even GPT-2 XL is built instantly
        return count_parameters(GPTModel(cfg), count_tied_once=True)


def _count_mistakes(cfg: GPTConfig, ref: int) -> dict[str, float]:
    V, T, d, L = cfg.vocab_size, cfg.context_length, cfg.emb_dim, cfg.n_layers
    head = V * d
    linear_biases = L * (d + 4 * d + d) + (L * 3 * d if cfg.qkv_bias else 0)
    mistakes = {
        "the position embeddings are missing: add context_length x emb_dim": ref - T * d,
        "the final LayerNorm is missing: it has a scale and a shift, 2 x emb_dim": ref - 2 * d,
        "the LayerNorms inside the blocks are missing: two per block, each 2 x emb_dim": ref - 4 * d * L,
        "all LayerNorms are missing: two per block and a final one, each 2 x emb_dim (scale and shift)":
            ref - 2 * d * (2 * L + 1),
    }
    if cfg.tie_weights:
        mistakes["the output head is counted although it is tied: with tie_weights=True it is "
                 "the token embedding, so count that matrix once"] = ref + head
    else:
        mistakes["the output head is missing: with tie_weights=False it is its own "
                 "vocab_size x emb_dim matrix (and has no bias)"] = ref - head
    mistakes["the output head has no bias: nn.Linear(emb_dim, vocab_size, bias=False)"] = ref + V
    if cfg.qkv_bias:
        mistakes["the query/key/value biases are missing: qkv_bias=True adds 3 x emb_dim per "
                 "block"] = ref - L * 3 * d
    else:
        mistakes["the query/key/value projections have no bias here (qkv_bias=False)"] = ref + L * 3 * d
    mistakes["the biases are missing: out_proj and both feed-forward layers have biases"] = ref - linear_biases
    block = (ref - V * d - T * d - 2 * d - (0 if cfg.tie_weights else head)) // L
    mistakes["only one block is counted: multiply the per-block count by n_layers"] = ref - (L - 1) * block
    mistakes["the output projection (out_proj, emb_dim x emb_dim plus a bias) is missing from "
             "each block"] = ref - L * (d * d + d)
    mistakes["one LayerNorm per block is missing: each block has two (norm1 and norm2)"] = ref - 2 * d * L
    mistakes["each LayerNorm is counted with a scale only: it has a shift too, 2 x emb_dim"] = (
        ref - d * (2 * L + 1))
    mistakes["the feed-forward hidden layer is 4 x emb_dim wide: d -> 4d -> d"] = (
        ref - L * (8 * d * d + 4 * d) + L * (2 * d * d + d))
    return mistakes


def check_param_count(count_fn) -> Check:
    """Check count_gpt_params(cfg) -> number of parameters, each counted once."""
    cases = [
        (get_config("gpt2-small"), "GPT-2 small (tied)"),
        (get_config("gpt2-small", tie_weights=False), "GPT-2 small, tie_weights=False"),
        (TINY.replace(qkv_bias=True), "a tiny config with qkv_bias=True"),
        (get_config("gpt2-xl"), "GPT-2 XL (tied)"),
    ]
    with Check("count_gpt_params", known=MODEL_ERRORS) as check:
        for cfg, label in cases:
            value = _number(check, check.call(f"count_gpt_params({label})", count_fn, cfg),
                            "count_gpt_params")
            ref = _reference_count(cfg)
            if value == ref:
                check.ok(f"{label}: {ref:,} parameters, the same as the model")
                continue
            check.stop(f"{label}: got {value:,.0f}, the model has {ref:,}: "
                       + _first_match(value, _count_mistakes(cfg, ref), default=(
                           "add up tok_emb, pos_emb, per block (q, k, v, out_proj, two "
                           "feed-forward layers, two LayerNorms), the final LayerNorm and the head"),
                           ref=ref, terms=_count_terms(cfg)))
    return check


# --- weight tying --------------------------------------------------------------------------------
def check_tie_weights(tie_fn) -> Check:
    """Check tie_weights(model): the head must become the very same Parameter as the embedding."""
    with Check("tie_weights", known=MODEL_ERRORS) as check:
        torch.manual_seed(0)
        model = GPTModel(TINY.replace(tie_weights=False))
        emb, head = model.tok_emb.weight, model.out_head.weight
        emb_values, head_values = emb.detach().clone(), head.detach().clone()
        n_before = count_parameters(model)
        check.call("tie_weights(model)", tie_fn, model)
        new_emb, new_head = model.tok_emb.weight, model.out_head.weight
        if new_head.shape != new_emb.shape:
            check.stop(f"the head's weight has shape {tuple(new_head.shape)}, the embedding "
                       f"{tuple(new_emb.shape)}: nn.Linear stores (out_features, in_features) = "
                       f"(vocab_size, emb_dim), the embedding's shape already, so do not transpose")
        if new_head is not new_emb:
            if new_head.data_ptr() == new_emb.data_ptr():
                check.stop("the head and the embedding share memory but are two Parameter objects "
                           "(a new nn.Parameter around the embedding): the optimizer sees two "
                           "parameters and updates the matrix twice. Assign the Parameter itself: "
                           "model.out_head.weight = model.tok_emb.weight")
            if torch.equal(new_head.detach(), new_emb.detach()):
                check.stop("the values were copied, but the parameter is not shared: the head and "
                           "the embedding are still two matrices and drift apart once training "
                           "starts. Assign the Parameter: model.out_head.weight = model.tok_emb.weight")
            check.stop("the head's weight is not the embedding's: assign "
                       "model.out_head.weight = model.tok_emb.weight")
        check.ok("the head and the embedding are one Parameter (same object, same storage)")
        if torch.equal(new_emb.detach(), head_values) and not torch.equal(head_values, emb_values):
            check.ok("(you kept the head's matrix; GPT-2 keeps the embedding's, and both start "
                     "from normal(0, 0.02), so either is fine)")
        n_after = count_parameters(model)
        check.expect(n_before - n_after == emb.numel(),
                     f"counted once, the model has {n_after:,} parameters instead of {n_before:,}",
                     f"the model has {n_after:,} parameters, expected {n_before - emb.numel():,}")
        _check_shared_after_step(check, model)
    return check


def _check_shared_after_step(check: Check, model: GPTModel) -> None:
    idx = torch.randint(TINY.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = check.call("a training step", lambda: model(idx).logsumexp(-1).mean())
    loss.backward()
    optimizer.step()
    check.expect(torch.equal(model.out_head.weight, model.tok_emb.weight),
                 "after a training step they are still identical",
                 "after a training step the head and the embedding differ: share the Parameter")


# --- FLOPs per token -----------------------------------------------------------------------------
FLOP_CASES = [(get_config("gpt2-small"), 1024, "GPT-2 small, seq_len=1024"),
              (get_config("gpt2-xl"), 256, "GPT-2 XL, seq_len=256")]


def _block_matmuls(cfg: GPTConfig) -> dict[str, int]:
    """The weights of each matmul in one block (2 FLOPs each per token in the forward pass)."""
    d = cfg.emb_dim
    return {"query, key and value matmuls": 3 * d * d, "out_proj matmul": d * d,
            "first feed-forward matmul": 4 * d * d, "second feed-forward matmul": 4 * d * d}


def _attention(cfg: GPTConfig, T: int) -> int:
    return 4 * cfg.n_layers * T * cfg.emb_dim


def _forward_mistakes(cfg: GPTConfig, T: int, ref: int) -> dict[str, float]:
    d, V, L = cfg.emb_dim, cfg.vocab_size, cfg.n_layers
    all_params = _reference_count(cfg)
    return {
        "these are multiply-accumulates (MACs): each is one multiply and one add, 2 FLOPs": ref / 2,
        "this is the training count (6N + ...): the forward pass alone is 2 FLOPs per weight": 3 * ref,
        "the attention term is missing: q·kᵀ and weights·v add 4·n_layers·seq_len·emb_dim": ref - _attention(cfg, T),
        "the attention term uses half of seq_len (causal): the convention, and FlopCounterMode, "
        "count the full T x T scores": ref - _attention(cfg, T) / 2,
        "the attention term uses context_length: use the seq_len you are given":
            ref - _attention(cfg, T) + _attention(cfg, cfg.context_length),
        "the output head is missing: with tying its weights are the token embedding, but its "
        "matmul still runs, 2·vocab_size·emb_dim FLOPs per token": ref - 2 * V * d,
        "every parameter was counted: embeddings are lookups, not matmuls; count the matmul "
        "weights (12·L·d² + V·d)": 2 * all_params + _attention(cfg, T),
        "the feed-forward is d -> 4d -> d: 16·d² FLOPs per layer": ref - L * 12 * d * d,
        "only one layer is counted: the 24·d² of each block and its attention term repeat n_layers "
        "times": ref - (L - 1) * (24 * d * d + 4 * T * d),
        "the attention term is for the whole sequence (seq_len² ...): per token it is "
        "4·n_layers·seq_len·emb_dim": ref - _attention(cfg, T) + T * _attention(cfg, T),
    }


def check_forward_flops(flops_fn) -> Check:
    """Check forward_flops_per_token(cfg, seq_len) against 2·N + 4·L·T·d."""
    with Check("forward_flops_per_token", known=MODEL_ERRORS) as check:
        for cfg, T, label in FLOP_CASES:
            value = _number(check, check.call(f"forward_flops_per_token({label})", flops_fn, cfg, T),
                            "forward_flops_per_token")
            ref = forward_flops_per_token(cfg, T)
            if value == ref:
                check.ok(f"{label}: {ref:,} FLOPs per token")
                continue
            check.stop(f"{label}: got {value:,.0f}, expected {ref:,}: " + _first_match(
                value, _forward_mistakes(cfg, T, ref),
                default="2 FLOPs per matmul weight (2·N) plus 4·n_layers·seq_len·emb_dim",
                ref=ref, terms={f"the {label} of every block": 2 * cfg.n_layers * n
                                for label, n in _block_matmuls(cfg).items()}))
    return check


def check_training_flops(flops_fn) -> Check:
    """Check training_flops_per_token(cfg, seq_len) against 3 x forward = 6·N + 12·L·T·d."""
    with Check("training_flops_per_token", known=MODEL_ERRORS) as check:
        for cfg, T, label in FLOP_CASES:
            value = _number(check, check.call(f"training_flops_per_token({label})", flops_fn, cfg, T),
                            "training_flops_per_token")
            ref, forward = training_flops_per_token(cfg, T), forward_flops_per_token(cfg, T)
            if value == ref:
                check.ok(f"{label}: {ref:,} FLOPs per token (3 x forward)")
                continue
            mistakes = {
                "this is the forward pass only: training adds the backward pass (about 2 x forward), "
                "so multiply by 3": forward,
                "the backward pass costs 2 x the forward (gradients for inputs and for weights): "
                "3 x forward in total, not 2": 2 * forward,
                "these are MACs: one multiply-add is 2 FLOPs": ref / 2,
                "the attention term is missing: 6·N leaves out 12·n_layers·seq_len·emb_dim":
                    ref - 3 * _attention(cfg, T),
                "the backward pass is missing from the attention term: 3 x 4·L·T·d, not 1 x":
                    ref - 2 * _attention(cfg, T),
            }
            check.stop(f"{label}: got {value:,.0f}, expected {ref:,}: "
                       + _first_match(value, mistakes, default="3 x the forward FLOPs per token",
                                      ref=ref, terms={f"the {label} of every block (x 3 for training)":
                                                      6 * cfg.n_layers * n for label, n in
                                                      _block_matmuls(cfg).items()}))
    return check


# --- MFU -----------------------------------------------------------------------------------------
MFU_CASES = [(150_000.0, get_config("gpt2-small"), 1024, 312e12, "GPT-2 small, 150,000 tokens/s, A100 peak"),
             (1_000.0, GPTConfig(vocab_size=65, context_length=128, emb_dim=192, n_heads=6, n_layers=4),
              128, 6e10, "a 4-layer char model, 1,000 tokens/s, a 60 GFLOP/s CPU")]


def check_mfu(mfu_fn) -> Check:
    """Check estimate_mfu(tokens_per_s, cfg, seq_len, peak_flops) -> a fraction in [0, 1]."""
    with Check("estimate_mfu", known=MODEL_ERRORS) as check:
        for tokens_per_s, cfg, T, peak, label in MFU_CASES:
            value = _number(check, check.call(f"estimate_mfu({label})", mfu_fn, tokens_per_s, cfg, T, peak),
                            "estimate_mfu")
            ref = tokens_per_s * training_flops_per_token(cfg, T) / peak
            if math.isclose(value, ref, rel_tol=1e-6):
                check.ok(f"{label}: MFU {ref:.2%}")
                continue
            no_attention = tokens_per_s * 6 * matmul_params(cfg) / peak
            mistakes = {
                "this is a percentage: return the fraction (0.42, not 42)": 100 * ref,
                "the FLOPs per token are forward only: training is 3 x forward (6·N + 12·L·T·d)": ref / 3,
                "the FLOPs look like MACs: one multiply-add is 2 FLOPs": ref / 2,
                "the attention term 12·L·T·d is missing from the FLOPs per token": no_attention,
                "the ratio is upside down: MFU = achieved FLOP/s / peak FLOP/s": 1 / ref,
            }
            check.stop(f"{label}: got {value:.6g}, expected {ref:.6g}: " + _first_match(
                value, mistakes, default="tokens/s x training FLOPs per token / peak FLOP/s", ref=ref))
    return check
