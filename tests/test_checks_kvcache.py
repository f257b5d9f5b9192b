"""The chapter 7 KV-cache checkers: the reference passes, a stub fails, and every mistake a
checker claims to diagnose is planted and named."""

import math

import torch
from checker_results import has

from gptcourse.checks.kvcache import check_attention_with_cache, check_forward_with_cache
from gptcourse.kvcache import attention_with_cache, block_with_cache, forward_with_cache


def stub(*args):
    raise NotImplementedError


# --- attention with a cache ------------------------------------------------------------------------
def cached_attention(att, x, past_k, past_v, *, cat_dim=2, new_first=False, keep_past=True,
                     mask="offset", scale=True):
    """A learner's attention_with_cache, with one mistake switched on by a keyword."""
    q, k, v = (att.split_heads(w(x)) for w in (att.W_query, att.W_key, att.W_value))
    if past_k is not None and keep_past:
        k = torch.cat([k, past_k] if new_first else [past_k, k], dim=cat_dim)
        v = torch.cat([v, past_v] if new_first else [past_v, v], dim=cat_dim)
    if past_k is not None and not keep_past:  # attends over the past, but returns only the new keys
        out = att.attend(q, torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2))
        return att.out_proj(att.merge_heads(out)), k, v
    Tq, Tk = q.size(2), k.size(2)
    scores = q @ k.transpose(-2, -1) / (math.sqrt(att.head_dim) if scale else 1.0)
    if mask != "none":
        rows = slice(Tk - Tq, Tk) if mask == "offset" else slice(0, Tq)
        scores = scores.masked_fill(~att.mask[rows, :Tk], float("-inf"))
    return att.out_proj(att.merge_heads(torch.softmax(scores, -1) @ v)), k, v


def test_attention_reference_and_plain_version_pass():
    assert check_attention_with_cache(attention_with_cache).passed
    assert check_attention_with_cache(cached_attention).passed


def test_attention_stub_fails():
    result = check_attention_with_cache(stub)
    assert not result.passed and has(result, "not written yet")


def test_stub_messages_name_the_learners_functions():
    def attention_with_cache(att, x, past_k=None, past_v=None):
        raise NotImplementedError

    def forward_with_cache(model, idx_new, cache):
        raise NotImplementedError

    for result, name in [(check_attention_with_cache(attention_with_cache), "attention_with_cache(att"),
                         (check_forward_with_cache(forward_with_cache), "forward_with_cache(model"),
                         (check_attention_with_cache(lambda *a: stub()), "attention_with_cache(att")]:
        assert result.problems[0].startswith(name), result.problems
        assert not has(result, "attention_fn") and not has(result, "forward_fn")


def test_attention_appends_on_the_wrong_dimension():
    for dim in (1, 3, -1, 0):
        result = check_attention_with_cache(lambda *a, dim=dim: cached_attention(*a, cat_dim=dim))
        assert has(result, "torch.cat on the wrong dimension"), dim
        assert has(result, "dim=2"), dim


def test_attention_new_keys_before_the_past():
    result = check_attention_with_cache(lambda *a: cached_attention(*a, new_first=True))
    assert has(result, "the cached keys are no longer first")


def test_attention_forgets_the_past():
    result = check_attention_with_cache(lambda *a: cached_attention(*a, keep_past=False))
    assert has(result, "the returned keys hold only the new tokens")


def test_attention_mask_not_shifted():
    result = check_attention_with_cache(lambda *a: cached_attention(*a, mask="top-left"))
    assert has(result, "the mask is not shifted")


def test_attention_without_mask():
    result = check_attention_with_cache(lambda *a: cached_attention(*a, mask="none"))
    assert has(result, "the new tokens see the future")


def test_attention_without_scaling():
    result = check_attention_with_cache(lambda *a: cached_attention(*a, scale=False))
    assert has(result, "the scores are not scaled")


def test_attention_returns_one_tensor():
    result = check_attention_with_cache(lambda *a: cached_attention(*a)[0])
    assert has(result, "should return a tuple (out, keys, values)")


# --- the cached forward step -------------------------------------------------------------------------
def cached_forward(model, idx_new, cache, *, positions="advance", final_norm=True, use_cache=True):
    """A learner's forward_with_cache, with one mistake switched on by a keyword."""
    if not use_cache:
        return model(idx_new)
    past = cache.length
    start = {"advance": past, "zero": 0, "plus one": past + 1}[positions]
    x = model.tok_emb(idx_new) + model.pos_emb(torch.arange(start, start + idx_new.size(1)))
    for layer, block in enumerate(model.trf_blocks):
        x = block_with_cache(block, x, cache, layer)
    return model.out_head(model.final_norm(x) if final_norm else x)


def test_forward_reference_and_plain_version_pass():
    assert check_forward_with_cache(forward_with_cache).passed
    result = check_forward_with_cache(cached_forward)
    assert result.passed and any("generate_text_simple" in m for ok, m in result.findings if ok)


def test_forward_stub_fails():
    result = check_forward_with_cache(stub)
    assert not result.passed and has(result, "not written yet")


def test_forward_positions_not_advanced():
    result = check_forward_with_cache(lambda *a: cached_forward(*a, positions="zero"))
    assert has(result, "position ids not advanced")


def test_forward_positions_off_by_one():
    result = check_forward_with_cache(lambda *a: cached_forward(*a, positions="plus one"))
    assert has(result, "positions are off by one")


def test_forward_without_final_norm():
    result = check_forward_with_cache(lambda *a: cached_forward(*a, final_norm=False))
    assert has(result, "the final LayerNorm is missing")


def test_forward_ignores_the_cache():
    result = check_forward_with_cache(lambda *a: cached_forward(*a, use_cache=False))
    assert has(result, "the cache holds 0 positions, expected 5")


def test_forward_returns_last_position_only():
    result = check_forward_with_cache(lambda *a: forward_with_cache(*a, last_only=True))
    assert has(result, "dimension 1 has size 1 where 5 are needed")
    assert has(result, "logits of shape (2, 5, 61)")
