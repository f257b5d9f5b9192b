"""Checker for chapter 10's LoRA parameter count: lora_parameter_count(model, target_names, r), what
LoRA adds to a model, counted before injecting and compared with inject_lora's own count.

A concept of its own beside checks/lora.py (one LoRALinear layer's arithmetic): here the learner
walks a whole model's layer names, picks the targets by whole name parts, and sizes A and B."""

from __future__ import annotations

import copy
import itertools
import math
import numbers

import torch.nn as nn

from ..config import GPTConfig
from ..llama import LlamaConfig, LlamaModel
from ..lora import inject_lora, trainable_parameters
from ..model import GPTModel
from . import Check, as_number, learner_name

WHOLE_PARTS = "compare whole name parts: name == t or name.endswith('.' + t)"


class _Block(nn.Module):
    """Layer names that contain one another: W_query and W_query_extra, proj and out_proj."""

    def __init__(self):
        super().__init__()
        self.W_query, self.W_query_extra = nn.Linear(8, 6, bias=False), nn.Linear(8, 4)
        self.proj, self.out_proj = nn.Linear(8, 5, bias=False), nn.Linear(6, 8)


def _count_cases() -> list[tuple[str, nn.Module, tuple[str, ...], int]]:
    gpt = GPTModel(GPTConfig(vocab_size=40, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0))
    llama = LlamaModel(LlamaConfig(vocab_size=40, context_length=8, emb_dim=16, n_heads=4, n_kv_heads=2,
                                   n_layers=2, hidden_dim=24))
    blocks = nn.Sequential(_Block(), _Block())
    return [("a small GPTModel", gpt, ("W_query", "W_value"), 4),
            ("a small GPTModel", gpt, ("out_proj", "ff.layers.0"), 2),
            ("a small LlamaModel", llama, ("W_key", "W_value", "down"), 3),
            ("layers named W_query, W_query_extra, proj and out_proj", blocks, ("W_query", "proj"), 2)]


def _whole(name: str, targets) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


MATCHES = {  # how a learner may pick the layers: (diagnosis, rule)
    "ref": ("", _whole),
    "all": ("every linear layer is counted: count only those whose name ends with one of target_names",
            lambda name, targets: True),
    "substring": (f"a target matched inside a longer name ('W_query' in 'W_query_extra'): {WHOLE_PARTS}",
                  lambda name, targets: any(t in name for t in targets)),
    "endswith": (f"a target matched the end of a longer name ('proj' in 'out_proj'): {WHOLE_PARTS}",
                 lambda name, targets: any(name.endswith(t) for t in targets)),
    "last part": ("only the last part of each name is compared, so a target with a dot ('ff.layers.0') "
                  f"matches nothing: {WHOLE_PARTS}", lambda name, targets: name.rsplit(".", 1)[-1] in targets),
}
LORA_SIZE = "LoRA adds A (r x in_features) and B (out_features x r): r * (in_features + out_features)"
PER_LAYER = {  # what a learner may count per chosen layer: (diagnosis, count(in, out, has_bias, r))
    "ref": ("", lambda i, o, b, r: r * (i + o)),
    "full": ("that is the size of each whole weight matrix, in * out (what full fine-tuning trains): "
             + LORA_SIZE, lambda i, o, b, r: i * o),
    "r full": ("r * in * out counts r full matrices: " + LORA_SIZE, lambda i, o, b, r: r * i * o),
    "A only": ("only A (r x in_features) is counted: add B, out_features x r", lambda i, o, b, r: r * i),
    "B only": ("only B (out_features x r) is counted: add A, r x in_features", lambda i, o, b, r: r * o),
    "bias": ("a bias is counted: A and B have none, and the base layer's bias stays frozen",
             lambda i, o, b, r: r * (i + o) + o * b),
    "base": ("the base layer's own parameters are counted too: they stay frozen; count only A and B",
             lambda i, o, b, r: r * (i + o) + i * o + o * b),
    "no r": ("r is left out: A has r rows and B r columns, " + LORA_SIZE, lambda i, o, b, r: i + o),
    "r=8": ("r is fixed at 8: use the r given", lambda i, o, b, r: 8 * (i + o)),
}


def _count(model: nn.Module, targets, r: int, match: str = "ref", per_layer: str = "ref") -> int:
    rule, count = MATCHES[match][1], PER_LAYER[per_layer][1]
    return sum(count(m.in_features, m.out_features, m.bias is not None, r) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and rule(name, targets))


def _count_diagnosis(got: list, cases) -> str:
    """The mistake (or pair) that gives the learner's count on every case where it is a number."""
    kinds = itertools.product(MATCHES, PER_LAYER)
    for match, per_layer in sorted(kinds, key=lambda k: (k[0] != "ref") + (k[1] != "ref")):
        if (match, per_layer) != ("ref", "ref") and all(
                g == _count(model, targets, r, match, per_layer) for g, (_, model, targets, r) in zip(got, cases)):
            found = [m for m in (MATCHES[match][0], PER_LAYER[per_layer][0]) if m]
            return found[0] if len(found) == 1 else f"two mistakes: {found[0]}; and {found[1]}"
    if not any(got):
        return ("no layer matched: named_modules() gives the layers' names ('trf_blocks.0.att.W_query'); "
                "named_parameters() gives their weights' ('...W_query.weight')")
    return f"for every nn.Linear whose name ends with a target ({WHOLE_PARTS}), {LORA_SIZE}"


def _fingerprint(model: nn.Module) -> list:
    return [(name, type(m)) for name, m in model.named_modules()] + [
        (name, p.requires_grad, p.shape) for name, p in model.named_parameters()]


def check_lora_parameter_count(lora_parameter_count) -> Check:
    """Check a learner's lora_parameter_count(model, target_names, r) against inject_lora's count."""
    name = learner_name(lora_parameter_count, "lora_parameter_count")
    with Check(name, seed=0) as check:
        cases, got, said_type = _count_cases(), [], False
        for label, model, targets, r in cases:
            what = f"{name}(model, {targets}, r={r}) on {label}"
            before = _fingerprint(model)
            value = check.call(what, lora_parameter_count, model, targets, r)
            if _fingerprint(model) != before:
                check.stop(f"{what} changed the model (injected LoRA, or froze it): count from the "
                           f"sizes of the nn.Linear layers, without changing the model")
            number = as_number(value)
            if number is None or not math.isfinite(number) or number != int(number):
                check.stop(f"{what} should return a whole number, got {value!r:.60}")
            if not isinstance(number, numbers.Integral) and not said_type:
                said_type = True
                check.fail(f"{what} returned a {type(number).__name__}: return an int (a sum of ints)")
            got.append(int(number))
        expected = [trainable_parameters(inject_lora(copy.deepcopy(model), targets, r=r))
                    for _, model, targets, r in cases]
        wrong = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
        for i, (label, _, targets, r) in enumerate(cases):
            if i not in wrong:
                check.ok(f"{label}, targets {targets}, r={r}: {got[i]:,}, the numbers inject_lora adds")
            elif i == wrong[0]:
                more = len(wrong) - 1
                others = f" (wrong on {more} more case{'s' * (more > 1)})" if more else ""
                check.fail(f"{label}, targets {targets}, r={r}: got {got[i]:,}, expected {expected[i]:,}: "
                           f"{_count_diagnosis(got, cases)}{others}")
    return check
