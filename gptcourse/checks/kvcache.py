"""Checkers for chapter 7, part 2: attention with a KV cache, and the model's cached forward step."""

from __future__ import annotations

import math

import torch

from ..attention import MultiHeadAttention
from ..config import GPTConfig
from ..generate import generate_text_simple
from ..kvcache import KVCache, block_with_cache
from ..model import GPTModel
from . import Check, close, diagnose, learner_name, shape_of, wrong_shape

# Every size differs (batch 2, 3 layers, 4 heads of 6, width 24, context 12, vocabulary 61), so a
# wrong size in an output names itself.
CFG = GPTConfig(vocab_size=61, context_length=12, emb_dim=24, n_heads=4, n_layers=3,
                drop_rate=0.0, qkv_bias=True)
KV_SIZES = {"head_dim": 6, "n_heads": 4, "emb_dim": 24, "n_layers": 3, "vocab_size": 61}
WRONG_DIM = ("torch.cat on the wrong dimension: keys and values are (B, n_heads, T, head_dim) and "
             "the cache grows along time, dim=2 (torch.cat([past_k, k], dim=2))")
CACHE_ERRORS = {"Sizes of tensors must match except in dimension": WRONG_DIM}  # a failing torch.cat


def _span(start: int, stop: int) -> str:
    return f"token {start}" if stop == start + 1 else f"tokens {start}..{stop - 1}"


def _sample_model() -> GPTModel:
    torch.manual_seed(0)
    model = GPTModel(CFG)
    with torch.no_grad():  # random biases and LayerNorms too, so that every part matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.double().eval()


# --- attention with a cache ------------------------------------------------------------------------
def _attention_variant(att: MultiHeadAttention, x, past_k, past_v, *, mask="offset", order="past first",
                       scale=True):
    """Cached attention with one deliberate change, to recognise a learner's mistake."""
    q, k, v = (att.split_heads(w(x)) for w in (att.W_query, att.W_key, att.W_value))
    if past_k is not None:
        k = torch.cat([past_k, k] if order == "past first" else [k, past_k], dim=2)
        v = torch.cat([past_v, v] if order == "past first" else [v, past_v], dim=2)
    Tq, Tk = q.size(2), k.size(2)
    divisor = math.sqrt(att.head_dim) if scale is True else 1.0 if scale is False else scale
    scores = q @ k.transpose(-2, -1) / divisor
    rows = {"offset": slice(Tk - Tq, Tk), "top-left": slice(0, Tq), "none": None}[mask]
    if rows is not None:
        scores = scores.masked_fill(~att.mask[rows, :Tk], float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return att.out_proj(att.merge_heads(out)), k, v


ATTENTION_MISTAKES = {
    "the new tokens see the future: mask the scores so that new token i (at position T_past + i) "
    "sees keys 0 .. T_past + i, e.g. with rows T_past:T_past+T_new of the causal mask":
        dict(mask="none"),
    "the mask is not shifted: with cached keys, new token i sits at position T_past + i, so take "
    "rows T_past:T_past+T_new of the causal mask, not rows 0:T_new": dict(mask="top-left"),
    "the scores are not scaled: divide q @ k^T by sqrt(head_dim)": dict(scale=False),
    # Scaled by another size in play: the width, or the number of heads (and their square roots).
    **{f"the scores are divided by {label}: divide by sqrt(head_dim) = "
       f"{math.sqrt(CFG.head_dim):.3g}, the size of each head's q and k": dict(scale=value)
       for label, value in [(f"sqrt(emb_dim) = {math.sqrt(CFG.emb_dim):.3g}", math.sqrt(CFG.emb_dim)),
                            (f"head_dim = {CFG.head_dim}", float(CFG.head_dim)),
                            (f"sqrt(n_heads) = {math.sqrt(CFG.n_heads):.3g}", math.sqrt(CFG.n_heads))]},
}


def check_attention_with_cache(attention_fn) -> Check:
    """Check attention_fn(att, x, past_k, past_v) -> (out, keys, values) against full attention."""
    name = learner_name(attention_fn, "attention_with_cache")
    with Check(name, known=CACHE_ERRORS) as check:
        model = _sample_model()
        att = model.trf_blocks[0].att
        x = torch.randn(2, 8, CFG.emb_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            full = att(x)  # (B, 8, C): what attention over the whole sequence gives
            past_k = past_v = None
            for start, stop in [(0, 4), (4, 5), (5, 8)]:
                what = f"{name}(att, x[:, {start}:{stop}], past_k, past_v)"
                result = check.call(what, attention_fn, att, x[:, start:stop], past_k, past_v)
                if not (isinstance(result, tuple) and len(result) == 3):
                    check.stop(f"{what} should return a tuple (out, keys, values)")
                out, k, v = result
                _check_keys(check, what, k, v, past_k, stop)
                if close(out, full[:, start:stop]):
                    check.ok(f"{_span(start, stop)} with {start} cached: the output equals full attention")
                else:
                    mistakes = {m: _attention_variant(att, x[:, start:stop], past_k, past_v, **kw)[0]
                                for m, kw in ATTENTION_MISTAKES.items()}
                    check.stop(f"{what}: " + diagnose(out, mistakes, default=(
                        "the output differs from full attention over the same tokens"),
                        expected=full[:, start:stop], sizes=KV_SIZES))
                past_k, past_v = k, v
    return check


def _check_keys(check: Check, what: str, k, v, past_k, total: int) -> None:
    """Keys and values must be the past ones followed by the new ones, along dim 2."""
    want = (2, CFG.n_heads, total, CFG.head_dim)
    for name, t in [("keys", k), ("values", v)]:
        if not isinstance(t, torch.Tensor):
            check.stop(f"{what} returned {name} of type {type(t).__name__}: return a tensor")
        if tuple(t.shape) == want:
            continue
        if past_k is not None and tuple(t.shape) == (2, CFG.n_heads, total - past_k.size(2), CFG.head_dim):
            check.stop(f"the returned {name} hold only the new tokens: append them to the past ones "
                       f"(torch.cat([past, new], dim=2)) so the next step sees everything")
        check.stop(f"the returned {name} have shape {shape_of(t)}, expected {want}: {WRONG_DIM}")
    if past_k is not None and not close(k[:, :, :past_k.size(2)], past_k):
        check.stop("the cached keys are no longer first: append the new ones after the past "
                   "ones, torch.cat([past_k, k], dim=2), so position i stays at index i")


# --- the cached forward step -------------------------------------------------------------------------
def _forward_variant(model: GPTModel, idx_new, cache: KVCache, *, pos_start=None, final_norm=True):
    """A cached forward step with one deliberate change."""
    past = cache.length
    start = past if pos_start is None else pos_start(past)
    pos = torch.arange(start, start + idx_new.size(1))
    x = model.tok_emb(idx_new) + model.pos_emb(pos)
    for layer, block in enumerate(model.trf_blocks):
        x = block_with_cache(block, x, cache, layer)
    return model.out_head(model.final_norm(x) if final_norm else x)


FORWARD_MISTAKES = {
    "position ids not advanced: the new tokens come after the cached ones, so their positions "
    "are cache.length, cache.length + 1, ... (torch.arange(past, past + T_new)), not 0, 1, ...":
        dict(pos_start=lambda past: 0),
    "positions are off by one: the first new token sits at position cache.length "
    "(positions count from 0)": dict(pos_start=lambda past: past + 1),
    "the final LayerNorm is missing: apply model.final_norm before model.out_head":
        dict(final_norm=False),
}
STEPS = [(0, 5), (5, 6), (6, 9), (9, 10)]


def check_forward_with_cache(forward_fn) -> Check:
    """Check forward_fn(model, idx_new, cache) -> logits against the uncached model."""
    name = learner_name(forward_fn, "forward_with_cache")
    with Check(name, known=CACHE_ERRORS) as check:
        model = _sample_model()
        idx = torch.randint(0, CFG.vocab_size, (2, 10), generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            full = model(idx)  # (B, 10, V)
            cache = KVCache(CFG.n_layers)
            for start, stop in STEPS:
                what = f"{name}(model, idx[:, {start}:{stop}], cache)"
                logits = check.call(what, forward_fn, model, idx[:, start:stop], cache)
                want = (2, stop - start, CFG.vocab_size)
                if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
                    check.stop(wrong_shape(what, logits, want, {"vocab_size": CFG.vocab_size},
                                           f" (logits of shape {want} for the new tokens only)"))
                if cache.length != stop:
                    check.stop(f"after {what} the cache holds {cache.length} positions, expected "
                               f"{stop}: run every block with block_with_cache(block, x, cache, layer)")
                if close(logits, full[:, start:stop]):
                    check.ok(f"{_span(start, stop)}: the logits equal the uncached model's")
                    continue
                check.stop(f"{what}: " + diagnose(logits, _forward_mistakes(model, idx, start, stop),
                                                  default="the logits differ from model(idx)",
                                                  expected=full[:, start:stop], sizes=KV_SIZES))
            _check_generation(check, forward_fn, model, name)
    return check


def _forward_mistakes(model: GPTModel, idx, start: int, stop: int) -> dict:
    """Each mistake's logits for the same step, replaying the earlier steps with the same mistake."""
    def replay(kw):
        cache = KVCache(CFG.n_layers)
        for a, b in STEPS:
            out = _forward_variant(model, idx[:, a:b], cache, **kw)
            if b == stop:
                return out
    return {message: (lambda kw=kw: replay(kw)) for message, kw in FORWARD_MISTAKES.items()}


def _check_generation(check: Check, forward_fn, model: GPTModel, name: str) -> None:
    """Greedy generation through forward_fn gives exactly generate_text_simple's tokens."""
    prompt = torch.randint(0, CFG.vocab_size, (1, 3), generator=torch.Generator().manual_seed(3))
    expected = generate_text_simple(model, prompt, 8)
    cache, idx = KVCache(CFG.n_layers), prompt
    what = f"greedy generation with {name}"
    logits = check.call(what, forward_fn, model, prompt, cache)
    for _ in range(8):
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)
        idx = torch.cat([idx, next_id], dim=1)
        logits = check.call(what, forward_fn, model, next_id, cache)
    check.expect(torch.equal(idx, expected), f"greedy generation with {name} gives exactly "
                 "generate_text_simple's tokens", f"greedy generation with {name} differs "
                 "from generate_text_simple")
