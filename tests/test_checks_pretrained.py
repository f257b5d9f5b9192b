"""The chapter 7 weight-mapping checker: the reference passes, a stub fails, and every mistake it
claims to diagnose is planted and named."""

import torch
from checker_results import has

from gptcourse.checks.pretrained import check_block_mapping
from gptcourse.pretrained import gpt2_block_to_ours


def test_reference_passes():
    assert check_block_mapping(gpt2_block_to_ours).passed


def test_stub_fails():
    def stub(hf):
        raise NotImplementedError

    result = check_block_mapping(stub)
    assert not result.passed and has(result, "not written yet")


def test_conv1d_not_transposed():
    def no_transpose(hf):
        out = gpt2_block_to_ours(hf)
        q, k, v = hf["attn.c_attn.weight"].chunk(3, dim=1)  # split right, but left as (in, out)
        out.update({"att.W_query.weight": q, "att.W_key.weight": k, "att.W_value.weight": v})
        return out

    result = check_block_mapping(no_transpose)
    assert has(result, "att.W_key.weight is not transposed: GPT-2's Conv1D stores (in, out)")


def test_non_square_conv1d_not_transposed():
    def no_transpose(hf):
        return {**gpt2_block_to_ours(hf), "ff.layers.0.weight": hf["mlp.c_fc.weight"]}

    result = check_block_mapping(no_transpose)
    assert result.problems == ["ff.layers.0.weight is not transposed: GPT-2's Conv1D stores (in, out), "
                               "nn.Linear wants (out, in). Use .T"]


def test_qkv_in_the_wrong_order():
    def kqv(hf):
        out = gpt2_block_to_ours(hf)
        k_w, q_w, v_w = hf["attn.c_attn.weight"].T.chunk(3, dim=0)  # key taken first
        k_b, q_b, v_b = hf["attn.c_attn.bias"].chunk(3)
        out.update({"att.W_query.weight": q_w, "att.W_key.weight": k_w, "att.W_value.weight": v_w,
                    "att.W_query.bias": q_b, "att.W_key.bias": k_b, "att.W_value.bias": v_b})
        return out

    result = check_block_mapping(kqv)
    assert has(result, "q/k/v split in the wrong order: att.W_query.weight holds the key part")
    assert has(result, "att.W_key.bias holds the query part")


def test_qkv_wrong_order_and_not_transposed():
    def both(hf):
        v, k, q = hf["attn.c_attn.weight"].chunk(3, dim=1)
        return {**gpt2_block_to_ours(hf), "att.W_query.weight": q, "att.W_value.weight": v}

    result = check_block_mapping(both)
    assert has(result, "att.W_query.weight holds the value part. c_attn stacks query, key, value "
                       "in that order, and transpose it (.T)")


def test_layernorm_scale_and_shift_swapped():
    def swapped(hf):
        return {**gpt2_block_to_ours(hf), "norm2.scale": hf["ln_2.bias"], "norm2.shift": hf["ln_2.weight"]}

    result = check_block_mapping(swapped)
    assert has(result, "norm2.scale got ln_2.bias: LayerNorm's weight is our scale")


def test_layernorms_swapped():
    def swapped(hf):
        return {**gpt2_block_to_ours(hf), "norm1.scale": hf["ln_2.weight"]}

    assert has(check_block_mapping(swapped), "norm1.scale got ln_2.weight: ln_1 is norm1")


def test_missing_and_misspelt_names():
    def misspelt(hf):
        out = gpt2_block_to_ours(hf)
        out["att.W_q.weight"] = out.pop("att.W_query.weight")
        return out

    result = check_block_mapping(misspelt)
    assert has(result, "missing ['att.W_query.weight']")
    assert has(result, "unexpected names ['att.W_q.weight']")


def test_wrong_shape_and_wrong_values():
    def bad(hf):
        out = gpt2_block_to_ours(hf)
        out["att.out_proj.bias"] = torch.zeros(3)
        out["ff.layers.2.bias"] = out["ff.layers.2.bias"] + 1
        out["norm1.shift"] = [0.0] * 16
        return out

    result = check_block_mapping(bad)
    assert has(result, "att.out_proj.bias has the wrong shape: the shape is wrong (got (3,), expected (16,))")
    assert has(result, "ff.layers.2.bias has the right shape but not the right values: every value is off by the same +1")
    assert has(result, "norm1.shift is a list, not a tensor")


def test_not_a_dict():
    result = check_block_mapping(lambda hf: list(gpt2_block_to_ours(hf).values()))
    assert has(result, "should return a dict of our names to tensors, got list")
