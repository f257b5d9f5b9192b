"""The Llama model against torch's own modules and transformers' LlamaForCausalLM (same weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptcourse.kvcache import KVCache
from gptcourse.llama import LlamaConfig, LlamaModel, RMSNorm, SwiGLU, causal_mask
from gptcourse.smollm2 import to_transformers

# Every size different, so a mix-up of two of them cannot pass by accident.
SMALL = LlamaConfig(vocab_size=97, context_length=32, emb_dim=48, n_heads=6, n_kv_heads=2,
                    n_layers=3, hidden_dim=80, rope_base=500.0)


def small_model(cfg: LlamaConfig = SMALL, seed: int = 0) -> LlamaModel:
    torch.manual_seed(seed)
    model = LlamaModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "final_norm.weight":
                p.uniform_(0.5, 1.5)  # not all ones, so a norm that ignores its weight fails
    return model.eval()


def test_rmsnorm_equals_torchs_rmsnorm():
    x = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(0)) * 3 + 1
    ours = RMSNorm(12, eps=1e-5)
    theirs = torch.nn.RMSNorm(12, eps=1e-5)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        theirs.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), theirs(x))


def test_swiglu_is_silu_gate_times_up():
    ff = SwiGLU(8, 20)
    x = torch.randn(3, 8)
    expected = F.linear(F.silu(F.linear(x, ff.gate.weight)) * F.linear(x, ff.up.weight), ff.down.weight)
    torch.testing.assert_close(ff(x), expected)
    assert all(m.bias is None for m in (ff.gate, ff.up, ff.down))


@pytest.mark.parametrize("n_kv_heads", [1, 2, 6])
def test_logits_equal_transformers(n_kv_heads):
    model = small_model(SMALL.replace(n_kv_heads=n_kv_heads))
    hf = to_transformers(model)
    idx = torch.randint(0, SMALL.vocab_size, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, rtol=0, atol=1e-5)


def test_cache_in_chunks_equals_the_full_pass():
    model = small_model()
    idx = torch.randint(0, SMALL.vocab_size, (2, 17), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache()
        parts = [model(idx[:, a:b], cache=cache) for a, b in ((0, 5), (5, 6), (6, 13), (13, 17))]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-5)
    assert cache.length == 17
    # The cache keeps n_kv_heads heads per layer, not n_heads: 3 times smaller here.
    assert cache.keys[0].shape == (2, SMALL.n_kv_heads, 17, SMALL.head_dim)


def test_last_only_gives_the_last_row():
    model = small_model()
    idx = torch.randint(0, SMALL.vocab_size, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(idx, last_only=True), model(idx)[:, -1:])


def test_a_later_token_does_not_change_earlier_logits():
    model = small_model()
    idx = torch.randint(0, SMALL.vocab_size, (1, 12), generator=torch.Generator().manual_seed(5))
    changed = idx.clone()
    changed[0, 8] = (changed[0, 8] + 1) % SMALL.vocab_size
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_causal_mask_with_cached_positions():
    assert causal_mask(1, 5) is None
    assert causal_mask(2, 3).tolist() == [[True, True, True, True, False],
                                          [True, True, True, True, True]]


def test_weights_are_tied_and_the_rope_tables_are_not_saved():
    model = small_model()
    assert model.out_head.weight is model.tok_emb.weight
    assert not any("rope" in key for key in model.state_dict())


def test_inputs_the_model_cannot_take():
    model = small_model()
    with pytest.raises(ValueError, match="batch dimension"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="context length 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    cache = model.new_cache()
    model(torch.zeros(1, 30, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="30 cached"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="new_cache"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=KVCache(2))


@pytest.mark.parametrize("changes, message", [
    ({"n_heads": 5}, "not divisible by n_heads"),
    ({"n_kv_heads": 4}, "not a multiple of n_kv_heads"),
    ({"emb_dim": 54, "n_heads": 6, "n_kv_heads": 3}, "odd"),
    ({"rope_base": -1.0}, "rope_base"),
    ({"n_layers": 0}, "n_layers"),
])
def test_config_errors_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        SMALL.replace(**changes)
