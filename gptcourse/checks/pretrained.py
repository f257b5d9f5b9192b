"""Checker for chapter 7, part 1: mapping one GPT-2 block's weights to our TransformerBlock."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..config import GPTConfig
from ..layers import TransformerBlock
from ..pretrained import expected_gpt2_shapes, gpt2_block_to_ours
from . import Check, close, value_signature, wrong_shape

CFG = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1,
                drop_rate=0.0, qkv_bias=True)
QKV = {"att.W_query": "query", "att.W_key": "key", "att.W_value": "value"}
LN_NAMES = {"norm1.scale": "ln_1.weight", "norm1.shift": "ln_1.bias",
            "norm2.scale": "ln_2.weight", "norm2.shift": "ln_2.bias"}


def sample_gpt2_block(seed: int = 0) -> dict[str, torch.Tensor]:
    """One GPT-2 block's tensors in Hugging Face names and shapes (C=16), every value different."""
    gen = torch.Generator().manual_seed(seed)
    return {name.removeprefix("h.0."): torch.randn(shape, generator=gen)
            for name, shape in expected_gpt2_shapes(CFG).items() if name.startswith("h.0.")}


def _mistakes(name: str, ref: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What tensor `name` would hold with each known mistake, mapped to the diagnosis."""
    wrong = {}
    module, _, kind = name.rpartition(".")
    if kind == "weight" and ref[name].dim() == 2:
        wrong[f"{name} is not transposed: GPT-2's Conv1D stores (in, out), nn.Linear wants "
              f"(out, in). Use .T"] = ref[name].T
    if module in QKV:
        for other, role in QKV.items():
            if other != module:
                diagnosis = (f"q/k/v split in the wrong order: {name} holds the {role} part. "
                             f"c_attn stacks query, key, value in that order")
                wrong[diagnosis] = ref[f"{other}.{kind}"]
                if kind == "weight":
                    wrong[diagnosis + ", and transpose it (.T)"] = ref[f"{other}.{kind}"].T
    if name in LN_NAMES:
        norm, _, part = name.partition(".")
        swapped = f"{norm}.{'shift' if part == 'scale' else 'scale'}"
        other_norm = f"{'norm2' if norm == 'norm1' else 'norm1'}.{part}"
        wrong[f"{name} got {LN_NAMES[swapped]}: LayerNorm's weight is our scale, its bias our shift"] \
            = ref[swapped]
        wrong[f"{name} got {LN_NAMES[other_norm]}: ln_1 is norm1 (before attention), ln_2 is "
              f"norm2 (before the feed-forward)"] = ref[other_norm]
    return wrong


def _diagnose(name: str, value: torch.Tensor, ref: dict[str, torch.Tensor]) -> str:
    for message, wrong in _mistakes(name, ref).items():
        if close(value, wrong, atol=0, rtol=0):
            return message
    if value.shape != ref[name].shape:
        return wrong_shape(name, value, tuple(ref[name].shape))
    found = value_signature(value, ref[name])
    return f"{name} has the right shape but not the right values" + (f": {found}" if found else "")


def check_block_mapping(map_block) -> Check:
    """Check map_block(hf_block) -> {our name: tensor} for one transformer block."""
    with Check("map_block") as check:
        hf = sample_gpt2_block()
        ref = gpt2_block_to_ours(hf)
        out = check.call("map_block(hf_block)", map_block, {n: t.clone() for n, t in hf.items()})
        if not isinstance(out, Mapping):
            check.stop(f"map_block should return a dict of our names to tensors, got {type(out).__name__}")
        missing, extra = sorted(set(ref) - set(out)), sorted(set(out) - set(ref))
        check.expect(not missing, "every tensor of a TransformerBlock is there",
                     f"missing {missing}: a TransformerBlock needs all of {sorted(ref)}")
        if extra:
            check.fail(f"unexpected names {extra}: a TransformerBlock has no such parameters "
                       f"(check the spelling, e.g. att.W_query.weight, ff.layers.0.weight)")
        wrong = []
        for name in (n for n in ref if n in out):
            value = out[name]
            if not isinstance(value, torch.Tensor):
                check.fail(f"{name} is a {type(value).__name__}, not a tensor")
                wrong.append(name)
            elif not close(value, ref[name], atol=0, rtol=0):
                check.fail(_diagnose(name, value, ref))
                wrong.append(name)
        check.expect(not wrong and not missing and not extra,
                     f"all {len(ref)} tensors have the right names, shapes and values")
        if wrong or missing or extra:
            return check
        block = TransformerBlock(CFG).eval()
        reference = TransformerBlock(CFG).eval()
        state = check.call("block.load_state_dict(map_block(...))", block.load_state_dict, dict(out))
        if state is not None:
            reference.load_state_dict(ref)
            x = torch.randn(2, 5, CFG.emb_dim, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                check.expect(close(block(x), reference(x)),
                             "a TransformerBlock loaded with your mapping computes what GPT-2's block does",
                             "the loaded block computes something else than the reference")
    return check
