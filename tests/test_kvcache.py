"""The KV cache: cached logits equal the full forward, cached generation equals generate_text_simple
and generate (past the context length too), each new token costs one position, clear errors."""

import pytest
import torch

from gptcourse.config import GPTConfig
from gptcourse.generate import generate, generate_text_simple
from gptcourse.kvcache import (
    KVCache,
    attention_with_cache,
    forward_with_cache,
    generate_cached,
)
from gptcourse.layers import FeedForward, LayerNorm
from gptcourse.model import GPTModel

CFG = GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2,
                drop_rate=0.0, qkv_bias=True)


def make_model(dtype=torch.float64, **changes) -> GPTModel:
    """A small model with every weight random (biases and LayerNorms too), so nothing hides."""
    torch.manual_seed(0)
    model = GPTModel(CFG.replace(**changes))
    with torch.no_grad():  # large position embeddings keep greedy decoding from repeating one id
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (1.0 if name.startswith("pos_emb") else 0.5))
    # float64 by default: cached and uncached sums differ in rounding only, far below any logit gap.
    return model.to(dtype).eval()


# Logits here reach about 10, and float32 keeps about 7 digits: the cached and the full pass add in
# a different order (and on a CPU use different attention kernels), so they differ by a few 1e-6.
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 4e-5), (torch.float64, 1e-12)],
                         ids=["float32", "float64"])
@pytest.mark.parametrize("model_fast", [False, True])
@pytest.mark.parametrize("fast", [False, True])
def test_cached_logits_equal_full_forward(model_fast, fast, dtype, atol):
    model = make_model(dtype, fast=model_fast)
    idx = torch.randint(0, 97, (2, 16))
    cache = KVCache(CFG.n_layers)
    with torch.no_grad():
        full = model(idx)
        parts = [forward_with_cache(model, idx[:, a:b], cache, fast=fast)
                 for a, b in [(0, 5), (5, 6), (6, 13), (13, 16)]]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=atol, rtol=0)
    assert cache.length == 16 and cache.keys[1].shape == (2, 4, 16, 8)
    last = forward_with_cache(model, idx[:, :3], KVCache(CFG.n_layers), last_only=True)
    assert last.shape == (2, 1, 97)


def test_fused_layer_norm_and_feed_forward_equal_the_modules():
    """fast=True computes the same functions as the course's modules (and as torch's own)."""
    torch.manual_seed(0)
    norm, ff = LayerNorm(32), FeedForward(CFG)
    with torch.no_grad():
        norm.scale.normal_(), norm.shift.normal_()
    x = torch.randn(3, 5, 32) * 4 + 2
    with torch.no_grad():
        torch.testing.assert_close(norm.fused_forward(x), norm(x))
        reference = torch.nn.LayerNorm(32)
        reference.weight.copy_(norm.scale), reference.bias.copy_(norm.shift)
        torch.testing.assert_close(norm.fused_forward(x), reference(x))
        torch.testing.assert_close(ff.fused_forward(x), ff(x))
        assert ff.expand is ff.layers[0] and ff.project is ff.layers[2]  # names, same parameters
        assert "layers.0.weight" in ff.state_dict() and "expand.weight" not in ff.state_dict()


@pytest.mark.parametrize("context_size", [None, 5])
def test_fused_greedy_matches_generate_text_simple(context_size):
    """Within and past the context length, in float32 too."""
    for dtype in (torch.float64, torch.float32):
        model = make_model(dtype)
        prompt = torch.randint(0, 97, (2, 3))
        expected = generate_text_simple(model, prompt, 30, context_size=context_size)
        assert torch.equal(generate_cached(model, prompt, 30, context_size=context_size, fast=True), expected)


def test_fused_refuses_other_modules():
    model = make_model()
    model.trf_blocks[1].ff.layers[1] = torch.nn.ReLU()
    with pytest.raises(ValueError, match="block 1 has other modules: use fast=False"):
        generate_cached(model, torch.zeros(1, 2, dtype=torch.long), 3, fast=True)
    model = make_model()
    model.final_norm = torch.nn.LayerNorm(32).double()
    with pytest.raises(ValueError, match="final_norm, but the model has LayerNorm: use fast=False"):
        forward_with_cache(model, torch.zeros(1, 2, dtype=torch.long), KVCache(2), fast=True)
    with pytest.raises(TypeError, match="fast must be True or False"):
        generate_cached(make_model(), torch.zeros(1, 2, dtype=torch.long), 3, fast="yes")


@pytest.mark.parametrize("fast", [False, True])
def test_attention_with_cache_equals_full_attention(fast):
    att = make_model().trf_blocks[0].att
    x = torch.randn(1, 9, 32, dtype=torch.float64)
    out1, k, v = attention_with_cache(att, x[:, :6], fast=fast)
    out2, k, v = attention_with_cache(att, x[:, 6:7], k, v, fast=fast)  # one new query: no mask
    out3, k, v = attention_with_cache(att, x[:, 7:], k, v, fast=fast)   # two: the shifted mask
    out2 = torch.cat([out2, out3], dim=1)
    torch.testing.assert_close(torch.cat([out1, out2], dim=1), att(x))
    assert k.shape == v.shape == (1, 4, 9, 8)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_greedy_matches_generate_text_simple_within_context(dtype):
    model = make_model(dtype)
    prompt = torch.randint(0, 97, (2, 3))
    expected = generate_text_simple(model, prompt, 12)
    assert len(set(expected[0, 3:].tolist())) > 4  # a varied continuation
    assert torch.equal(generate_cached(model, prompt, 12), expected)


@pytest.mark.parametrize("context_size", [None, 5, 1])
def test_greedy_matches_past_the_context_length(context_size):
    """Overflow: the window slides, so the cache is rebuilt; the tokens stay exactly the same."""
    model = make_model()
    prompt = torch.randint(0, 97, (1, 4))
    expected = generate_text_simple(model, prompt, 40, context_size=context_size)
    assert torch.equal(generate_cached(model, prompt, 40, context_size=context_size), expected)


def test_prompt_longer_than_the_context_is_cropped():
    model = make_model()
    prompt = torch.randint(0, 97, (2, 25))
    assert torch.equal(generate_cached(model, prompt, 10), generate_text_simple(model, prompt, 10))


def test_sampling_matches_generate_with_the_same_seed():
    model = make_model()
    prompt = torch.randint(0, 97, (3, 2))
    kwargs = dict(temperature=0.8, top_k=20)
    expected = generate(model, prompt, 30, generator=torch.Generator().manual_seed(1), **kwargs)
    actual = generate_cached(model, prompt, 30, generator=torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(actual, expected)


def count_positions(model: GPTModel) -> list[int]:
    """Record how many positions each forward pass embeds (a proxy for its compute)."""
    sizes: list[int] = []
    model.tok_emb.register_forward_hook(lambda module, args, out: sizes.append(out.size(1)))
    return sizes


def test_each_new_token_costs_one_position():
    model = make_model()
    sizes = count_positions(model)
    generate_cached(model, torch.randint(0, 97, (1, 4)), 10)
    assert sizes == [4] + [1] * 9  # the prompt once, then one position per token
    sizes.clear()
    generate_text_simple(model, torch.randint(0, 97, (1, 4)), 10)
    assert sizes == list(range(4, 14))  # without the cache: the whole sequence, every time


def test_overflow_policy_costs():
    """Exact (default): past the context every token recomputes the full window. A shorter
    refill_length rebuilds less often but lets the model see fewer tokens (a deliberate difference)."""
    model = make_model()
    prompt = torch.randint(0, 97, (1, 4))
    sizes = count_positions(model)
    exact = generate_cached(model, prompt, 20)
    assert sizes == [4] + [1] * 12 + [16] * 7  # cache full at 16 positions: rebuild every step
    sizes.clear()
    fast = generate_cached(model, prompt, 20, refill_length=8)
    assert sizes == [4] + [1] * 12 + [8] + [1] * 6  # rebuild once from the last 8 tokens
    # Identical until the first rebuild; what follows may differ from the uncached crop.
    assert torch.equal(fast[:, :17], exact[:, :17])


def test_zero_new_tokens_and_training_mode_restored():
    model = make_model().train()
    prompt = torch.randint(0, 97, (1, 3))
    assert torch.equal(generate_cached(model, prompt, 0), prompt)
    assert generate_cached(model, prompt, 2).shape == (1, 5)
    assert model.training


def test_kv_cache_bookkeeping():
    cache = KVCache(3)
    assert cache.length == 0 and repr(cache) == "KVCache(n_layers=3, length=0)"
    cache.keys[0] = torch.zeros(1, 2, 7, 4)
    assert cache.length == 7
    cache.reset()
    assert cache.keys == [None] * 3 and cache.values == [None] * 3


def test_reserved_cache_writes_in_place_and_equals_cat():
    """capacity=N: one allocation per layer, new positions written in place, same contents as cat."""
    torch.manual_seed(0)
    grown, reserved = KVCache(2), KVCache(2, capacity=10)
    chunks = [(torch.randn(2, 3, t, 4), torch.randn(2, 3, t, 4)) for t in (4, 1, 3)]
    for k, v in chunks:
        for layer in range(2):
            expected = grown.append(layer, k, v)
            actual = reserved.append(layer, k, v)
            for a, b in zip(actual, expected):
                assert torch.equal(a, b)
        assert reserved.keys[1].data_ptr() == reserved._room[1][0].data_ptr()  # a view, no copy
    assert reserved.length == grown.length == 8
    assert repr(reserved) == "KVCache(n_layers=2, length=8, capacity=10)"
    with pytest.raises(ValueError, match="room for capacity=10 positions and holds 8, so 3 more do not fit"):
        reserved.append(0, torch.randn(2, 3, 3, 4), torch.randn(2, 3, 3, 4))
    room = reserved._room[0][0]
    reserved.reset()
    reserved.append(0, torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4))
    assert reserved._room[0][0] is room and reserved.length == 2  # the memory is reused
    reserved.reset()
    reserved.append(0, torch.randn(1, 3, 2, 4), torch.randn(1, 3, 2, 4))  # another batch size: new room
    assert reserved._room[0][0].shape == (1, 3, 10, 4)


def test_reserved_cache_gives_the_same_logits():
    model = make_model(torch.float32)
    idx = torch.randint(0, 97, (2, 16))
    caches = KVCache(CFG.n_layers), KVCache(CFG.n_layers, capacity=16)
    with torch.no_grad():
        for a, b in [(0, 5), (5, 6), (6, 16)]:
            grown, reserved = (forward_with_cache(model, idx[:, a:b], cache) for cache in caches)
            assert torch.equal(grown, reserved)


# --- errors --------------------------------------------------------------------------------------
def test_cache_errors():
    model = make_model()
    with pytest.raises(ValueError, match="n_layers must be a positive int"):
        KVCache(0)
    for capacity in (0, 2.5, True):
        with pytest.raises(ValueError, match="capacity must be None or a positive int"):
            KVCache(2, capacity=capacity)
    with pytest.raises(ValueError, match=r"cache has 3 layers but the model has 2.*KVCache\(model.cfg.n_layers\)"):
        forward_with_cache(model, torch.zeros(1, 2, dtype=torch.long), KVCache(3))
    cache = KVCache(2)
    forward_with_cache(model, torch.zeros(2, 10, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="batch of 2 sequences but idx_new has 1"):
        forward_with_cache(model, torch.zeros(1, 1, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="holds 10 positions, so 7 more would pass the context length 16"):
        forward_with_cache(model, torch.zeros(2, 7, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="add a batch dimension"):
        forward_with_cache(model, torch.zeros(3, dtype=torch.long), cache)


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=-1), "max_new_tokens must be an int >= 0"),
    (dict(context_size=17), "context_size must be an int from 1 to context_length=16"),
    (dict(context_size=0), "context_size must be an int from 1"),
    (dict(refill_length=0), "refill_length must be an int from 1 to context_size=16"),
    (dict(context_size=8, refill_length=9), "refill_length must be an int from 1 to context_size=8"),
    (dict(top_k=0), "top_k must be None or an int from 1 to vocab_size=97"),
    (dict(top_k=98), "top_k must be None or an int from 1 to vocab_size=97"),
])
def test_generate_cached_argument_errors(kwargs, message):
    args = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_cached(make_model(), torch.zeros(1, 2, dtype=torch.long), **args)


def test_generate_cached_input_errors():
    model = make_model()
    with pytest.raises(ValueError, match="add a batch dimension"):
        generate_cached(model, torch.zeros(4, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="at least one token"):
        generate_cached(model, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(TypeError, match="model must be a GPTModel"):
        generate_cached(torch.nn.Linear(2, 2), torch.zeros(1, 2, dtype=torch.long), 3)
