"""The chapter 5 checkers, tested three ways: the reference passes, a stub fails, and each
mistake a checker claims to diagnose is planted and named."""

import pytest
import torch
from checker_results import assert_diagnosed, problems_of

from gptcourse.checks.model import (
    check_forward_flops,
    check_mfu,
    check_param_count,
    check_tie_weights,
    check_training_flops,
)
from gptcourse.flops import forward_flops_per_token, matmul_params, training_flops_per_token
from gptcourse.model import GPTModel


def stub(*args):
    raise NotImplementedError


# --- check_param_count ---------------------------------------------------------------------------
def make_count(*, pos=True, final_norm=True, block_norms=True, tie_aware=True, biases=True,
               qkv_bias_aware=True, ff_mult=4, one_block=False, out_proj=True, norms_per_block=2,
               norm_size=2):
    """A learner's count_gpt_params with one planted mistake."""

    def count(cfg):
        V, T, d, L = cfg.vocab_size, cfg.context_length, cfg.emb_dim, cfg.n_layers
        total = V * d + (T * d if pos else 0) + (norm_size * d if final_norm else 0)
        norms = norms_per_block * norm_size * d if block_norms else 0
        per_block = 3 * d * d + (d * d if out_proj else 0) + 2 * ff_mult * d * d + norms
        if biases:
            per_block += (d if out_proj else 0) + ff_mult * d + d
            if cfg.qkv_bias and qkv_bias_aware:
                per_block += 3 * d
        total += (1 if one_block else L) * per_block
        if not (cfg.tie_weights and tie_aware):
            total += V * d
        return total

    return count


def test_param_count_reference_passes(capsys):
    result = check_param_count(make_count())
    assert result.passed, problems_of(result)
    assert "124,412,160" in capsys.readouterr().out


def test_param_count_from_a_built_model_passes():
    def by_building(cfg):  # correct, written differently: build the model and count unique tensors
        with torch.device("meta"):
            model = GPTModel(cfg)
        return sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once

    result = check_param_count(by_building)
    assert result.passed, problems_of(result)


def test_param_count_stub_fails():
    assert_diagnosed(check_param_count(stub), "not written yet")


@pytest.mark.parametrize("mistake, fragment", [
    ({"pos": False}, "position embeddings are missing"),
    ({"final_norm": False}, "final LayerNorm is missing"),
    ({"block_norms": False}, "LayerNorms inside the blocks are missing"),
    ({"block_norms": False, "final_norm": False}, "all LayerNorms are missing"),
    ({"tie_aware": False}, "counted although it is tied"),
    ({"qkv_bias_aware": False}, "query/key/value biases are missing"),
    ({"biases": False}, "the biases are missing"),
    ({"ff_mult": 1}, "4 x emb_dim wide"),
    ({"one_block": True}, "only one block is counted"),
    ({"out_proj": False}, "output projection (out_proj"),
    ({"norms_per_block": 1}, "one LayerNorm per block is missing"),
    ({"norm_size": 1}, "counted with a scale only"),
])
def test_param_count_mistakes_are_named(mistake, fragment):
    assert_diagnosed(check_param_count(make_count(**mistake)), fragment)


def test_param_count_always_tied_is_named():
    def always_tied(cfg):
        return make_count()(cfg.replace(tie_weights=True))

    assert_diagnosed(check_param_count(always_tied), "output head is missing")


def test_param_count_dict_access_and_wrong_type():
    assert_diagnosed(check_param_count(lambda cfg: cfg["emb_dim"]), "not a dict")
    assert_diagnosed(check_param_count(lambda cfg: "many"), "return a single number")


# --- check_tie_weights ---------------------------------------------------------------------------
def tie(model):
    model.out_head.weight = model.tok_emb.weight


def test_tie_reference_passes():
    result = check_tie_weights(tie)
    assert result.passed, problems_of(result)


def test_tie_the_other_way_round_passes():
    def tie_reversed(model):
        model.tok_emb.weight = model.out_head.weight  # nanoGPT's direction

    assert check_tie_weights(tie_reversed).passed


def test_tie_stub_fails():
    assert_diagnosed(check_tie_weights(stub), "not written yet")


def test_tie_by_copying_values_is_named():
    import torch

    def copy_values(model):
        with torch.no_grad():
            model.out_head.weight.copy_(model.tok_emb.weight)

    assert_diagnosed(check_tie_weights(copy_values), "the values were copied")


def test_tie_with_a_new_parameter_is_named():
    import torch.nn as nn

    def new_parameter(model):
        model.out_head.weight = nn.Parameter(model.tok_emb.weight)

    assert_diagnosed(check_tie_weights(new_parameter), "two Parameter objects")

    def cloned(model):
        model.out_head.weight = nn.Parameter(model.tok_emb.weight.detach().clone())

    assert_diagnosed(check_tie_weights(cloned), "the values were copied")


def test_tie_transposed_is_named():
    import torch.nn as nn

    def transposed(model):
        model.out_head.weight = nn.Parameter(model.tok_emb.weight.T)

    assert_diagnosed(check_tie_weights(transposed), "do not transpose")


def test_tie_doing_nothing_is_named():
    assert_diagnosed(check_tie_weights(lambda model: None), "is not the embedding's")


# --- check_forward_flops / check_training_flops --------------------------------------------------
def make_forward(*, macs=False, attention=1.0, head=True, use_context=False, all_params=False, ff_mult=4,
                 one_layer=False):
    """A learner's forward_flops_per_token with one planted mistake."""

    def flops(cfg, seq_len):
        L, d, V = 1 if one_layer else cfg.n_layers, cfg.emb_dim, cfg.vocab_size
        T = cfg.context_length if use_context else seq_len
        n = L * (4 * d * d + 2 * ff_mult * d * d) + (V * d if head else 0)
        if all_params:
            from gptcourse.checks.model import _reference_count
            n = _reference_count(cfg)
        total = 2 * n + attention * 4 * L * T * d
        return total / 2 if macs else total

    return flops


def test_forward_reference_passes():
    assert check_forward_flops(make_forward()).passed
    assert check_forward_flops(forward_flops_per_token).passed


def test_forward_stub_fails():
    assert_diagnosed(check_forward_flops(stub), "not written yet")


@pytest.mark.parametrize("mistake, fragment", [
    ({"macs": True}, "multiply-accumulates (MACs)"),
    ({"attention": 0.0}, "attention term is missing"),
    ({"attention": 0.5}, "half of seq_len"),
    ({"use_context": True}, "uses context_length"),
    ({"head": False}, "the output head is missing"),
    ({"all_params": True}, "every parameter was counted"),
    ({"ff_mult": 1}, "d -> 4d -> d"),
    ({"one_layer": True}, "only one layer is counted"),
    ({"attention": 1024}, "the attention term is for the whole sequence"),
])
def test_forward_mistakes_are_named(mistake, fragment):
    assert_diagnosed(check_forward_flops(make_forward(**mistake)), fragment)


def test_forward_training_count_given_is_named():
    assert_diagnosed(check_forward_flops(training_flops_per_token), "this is the training count")


def test_training_reference_passes():
    def training(cfg, seq_len):
        return 6 * matmul_params(cfg) + 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len

    assert check_training_flops(training).passed


def test_training_stub_fails():
    assert_diagnosed(check_training_flops(stub), "not written yet")


@pytest.mark.parametrize("fn, fragment", [
    (forward_flops_per_token, "forward pass only"),
    (lambda cfg, T: 2 * forward_flops_per_token(cfg, T), "not 2"),
    (lambda cfg, T: training_flops_per_token(cfg, T) / 2, "these are MACs"),
    (lambda cfg, T: 6 * matmul_params(cfg), "attention term is missing"),
    (lambda cfg, T: 6 * matmul_params(cfg) + 4 * cfg.n_layers * T * cfg.emb_dim, "3 x 4·L·T·d"),
])
def test_training_mistakes_are_named(fn, fragment):
    assert_diagnosed(check_training_flops(fn), fragment)


# --- check_mfu -----------------------------------------------------------------------------------
def estimate_mfu(tokens_per_s, cfg, seq_len, peak_flops):
    return tokens_per_s * training_flops_per_token(cfg, seq_len) / peak_flops


def test_mfu_reference_passes():
    assert check_mfu(estimate_mfu).passed


def test_mfu_stub_fails():
    assert_diagnosed(check_mfu(stub), "not written yet")


@pytest.mark.parametrize("fn, fragment", [
    (lambda *a: 100 * estimate_mfu(*a), "percentage"),
    (lambda tps, cfg, T, peak: tps * forward_flops_per_token(cfg, T) / peak, "forward only"),
    (lambda *a: estimate_mfu(*a) / 2, "look like MACs"),
    (lambda tps, cfg, T, peak: tps * 6 * matmul_params(cfg) / peak, "attention term 12·L·T·d is missing"),
    (lambda *a: 1 / estimate_mfu(*a), "upside down"),
    (lambda *a: 0.5, "tokens/s x training FLOPs per token / peak"),
])
def test_mfu_mistakes_are_named(fn, fragment):
    assert_diagnosed(check_mfu(fn), fragment)
