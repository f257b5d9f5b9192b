"""FLOP counts: the formula equals FlopCounterMode exactly, thop counts 2 x the Linear MACs it
sees, and the comparison explains the gaps."""

import pytest
import torch

from gptcourse.attention import SHORT_CONTEXT_ON_CPU
from gptcourse.config import GPTConfig, get_config
from gptcourse.flops import (
    compare_flop_counts,
    flop_counter_flops,
    flops_per_token_by_component,
    forward_flops,
    forward_flops_per_token,
    linear_layer_macs,
    matmul_params,
    thop_flops,
    thop_macs,
    training_flops,
    training_flops_per_token,
)
from gptcourse.model import GPTModel

TINY = GPTConfig(vocab_size=97, context_length=16, emb_dim=24, n_heads=4, n_layers=3, drop_rate=0.0)


def test_gpt2_small_by_hand():
    cfg = get_config("gpt2-small")
    assert matmul_params(cfg) == 12 * 12 * 768**2 + 50257 * 768 == 123_532_032
    parts = flops_per_token_by_component(cfg, 1024)
    assert parts == {"attention projections": 56_623_104, "attention scores": 37_748_736,
                     "feed-forward": 113_246_208, "output head": 77_194_752}
    assert forward_flops_per_token(cfg, 1024) == sum(parts.values()) == 2 * 123_532_032 + 4 * 12 * 1024 * 768
    assert forward_flops(cfg, 2, 1024) == 583_296_614_400


def test_training_is_three_forwards_and_matches_palm():
    cfg = get_config("gpt2-medium")
    T = 512
    assert training_flops_per_token(cfg, T) == 3 * forward_flops_per_token(cfg, T)
    # PaLM's formula (Chowdhery et al. 2022, appendix B): 6·N + 12·L·H·Q·T
    palm = 6 * matmul_params(cfg) + 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * T
    assert training_flops_per_token(cfg, T) == palm
    assert training_flops(cfg, 4, T) == 3 * forward_flops(cfg, 4, T)


@pytest.mark.parametrize("cfg, B, T", [
    (TINY, 2, 16), (TINY, 3, 5), (TINY.replace(qkv_bias=True, tie_weights=False), 1, 7),
    (get_config("gpt2-small"), 2, 1024),
])
def test_formula_equals_flop_counter_exactly(cfg, B, T):
    assert flop_counter_flops(cfg, B, T)["total"] == forward_flops(cfg, B, T)


def test_formula_equals_flop_counter_for_training():
    assert flop_counter_flops(TINY, 2, 16, training=True)["total"] == training_flops(TINY, 2, 16)


def test_flop_counter_on_meta_counts_sdpa_like_the_manual_path():
    sdpa = TINY.replace(fast=True)
    assert flop_counter_flops(sdpa, 2, 16)["total"] == forward_flops(sdpa, 2, 16)


def test_flop_counter_on_cpu_misses_the_fused_sdpa_kernel_beyond_short_contexts():
    # The manual path runs real matmuls (counted). So does the fused path on a CPU up to
    # SHORT_CONTEXT_ON_CPU tokens (batched matmuls). Beyond, it runs torch 2.13's fused CPU attention
    # kernel, which has no FLOP formula: the attention matmuls drop out of the count.
    sdpa = TINY.replace(fast=True)
    short = flop_counter_flops(sdpa, 2, 16, device="cpu")
    assert short["total"] == forward_flops(TINY, 2, 16)
    B, T = 1, SHORT_CONTEXT_ON_CPU + 16
    long_cfg = TINY.replace(context_length=T)
    attention = B * T * flops_per_token_by_component(long_cfg, T)["attention scores"]
    assert flop_counter_flops(long_cfg, B, T, device="cpu")["total"] == forward_flops(long_cfg, B, T)
    fused = flop_counter_flops(long_cfg.replace(fast=True), B, T, device="cpu")
    assert fused["total"] == forward_flops(long_cfg, B, T) - attention
    assert "aten.bmm" not in fused


@pytest.mark.parametrize("cfg, B, T", [(TINY, 2, 16), (get_config("gpt2-small"), 1, 1024)])
def test_thop_counts_the_linear_layers_macs(cfg, B, T):
    with torch.device("meta"):
        model = GPTModel(cfg)
    macs, params = thop_macs(model, torch.zeros(B, T, dtype=torch.long, device="meta"))
    assert macs == linear_layer_macs(model, B * T)
    assert thop_flops(cfg, B, T)["flops"] == 2 * macs
    # thop's params are those of its hooked modules: the Linear layers (tied head included)
    linear_params = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
                        for p in m.parameters())
    assert params == linear_params


def test_thop_gives_the_same_count_on_cpu_and_leaves_no_buffers_behind():
    model = GPTModel(TINY)
    keys = list(model.state_dict())
    macs, _ = thop_macs(model, torch.zeros(2, 16, dtype=torch.long))
    assert macs == thop_flops(TINY, 2, 16)["macs"]
    assert list(model.state_dict()) == keys
    assert model.training  # thop switches to eval while counting and back afterwards


def test_comparison_explains_the_gaps():
    cmp = compare_flop_counts(TINY, 2, 16)
    assert cmp.analytic == cmp.flop_counter
    assert cmp.flop_counter - cmp.thop_flops == cmp.attention_matmuls
    rows = {name: (value, note) for name, value, note in cmp.rows()}
    assert rows["thop x 2"][0] == 2 * rows["thop (MACs)"][0]
    assert "misses exactly the attention matmuls" in rows["thop x 2"][1]
    assert "equal to FlopCounterMode" in rows["formula"][1]
    assert "MACs" in rows["thop (MACs)"][1] or "multiply-accumulates" in rows["thop (MACs)"][1]
    assert "FlopCounterMode" in cmp.report()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"seq_len": 17}, ValueError, r"seq_len must be an int from 1 to context_length=16"),
    ({"seq_len": 0}, ValueError, "seq_len must be an int"),
    ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
])
def test_bad_sizes_get_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        forward_flops(TINY, **kwargs)


def test_config_must_be_a_gptconfig():
    with pytest.raises(TypeError, match="cfg must be a GPTConfig"):
        forward_flops_per_token({"emb_dim": 768})
