"""LoRA (low-rank adaptation): fine-tune a big frozen model by training two thin matrices per layer.

A linear layer computes W x. LoRA keeps W frozen and learns a change of rank r instead:

    y = W x + (alpha / r) * B (A x)        A: (r, in), B: (out, r), r much smaller than in and out

A starts random and B at zero, so training starts from the model exactly as it was. Only A and
B are trained and saved: the adapter is a few megabytes beside a model of hundreds. `merge()`
folds the change into W (no extra work per token); `unmerge()` takes it out again.
Initialised and scaled as Hugging Face's `peft` does (tests/test_lora.py proves them equal).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from .validate import (
    ArgumentTypeError,
    InputError,
    require_instance,
    require_positive_int,
    require_positive_number,
    require_probability,
)

DEFAULT_TARGETS = ("W_query", "W_value")  # as in the LoRA paper: the query and value projections


class LoRALinear(nn.Module):
    """base(x) + (alpha / r) * B(A(dropout(x))), with `base` frozen and only A and B trained."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = require_instance("base", base, nn.Linear)
        self.r = require_positive_int("r", r)
        self.alpha = require_positive_number("alpha", alpha)
        self.dropout_p = require_probability("dropout", dropout)
        if r > min(base.in_features, base.out_features):
            raise InputError(f"r={r} is larger than the layer ({base.out_features} x "
                             f"{base.in_features}): a low-rank update needs r <= {min(base.in_features, base.out_features)}")
        self.scaling = self.alpha / self.r
        base.requires_grad_(False)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.A = nn.Linear(base.in_features, r, bias=False, **factory)   # weight (r, in)
        self.B = nn.Linear(r, base.out_features, bias=False, **factory)  # weight (out, r)
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))  # peft's (and nn.Linear's) default
        nn.init.zeros_(self.B.weight)  # so B(A(x)) = 0: training starts from the base model
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # While merged, the frozen weight as it was, so that unmerge() restores it bit for bit
        # (subtracting the update again would leave float rounding behind).
        self.register_buffer("unmerged_weight", None, persistent=False)

    @property
    def merged(self) -> bool:
        return self.unmerged_weight is not None

    def delta_weight(self) -> torch.Tensor:
        """The change LoRA makes to the base weight: (alpha / r) * B @ A, shape (out, in)."""
        return self.scaling * (self.B.weight @ self.A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)  # the update is inside base.weight already
        return self.base(x) + self.B(self.A(self.dropout(x))) * self.scaling  # (..., out)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight: one matrix, as fast as the layer without LoRA."""
        if self.merged:
            raise RuntimeError("this LoRALinear is merged already: unmerge() it first")
        self.unmerged_weight = self.base.weight.detach().clone()
        self.base.weight += self.delta_weight().to(self.base.weight.dtype)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the base weight again (exactly: the weight from before merge())."""
        if not self.merged:
            raise RuntimeError("this LoRALinear is not merged: merge() it first")
        self.base.weight.copy_(self.unmerged_weight)
        self.unmerged_weight = None

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, dropout={self.dropout_p:g}"


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """(name, layer) for every LoRALinear in the model."""
    return ((name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear))


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _check_targets(target_names) -> tuple[str, ...]:
    if isinstance(target_names, str):
        target_names = (target_names,)
    if not isinstance(target_names, Sequence) or not target_names \
            or not all(isinstance(t, str) and t for t in target_names):
        raise ArgumentTypeError(f"target_names must be a non-empty list of layer names such as "
                                f"{DEFAULT_TARGETS}, got {target_names!r}")
    return tuple(target_names)


def inject_lora(model: nn.Module, target_names: Sequence[str] = DEFAULT_TARGETS, r: int = 8,
                alpha: float = 16, dropout: float = 0.0) -> nn.Module:
    """Wrap every nn.Linear whose name ends with one of target_names in a LoRALinear; freeze the rest.

    Names match whole parts: "W_query" matches "trf_blocks.3.att.W_query", "ff.layers.0" the
    first feed-forward layer of every GPTModel block. Returns the same model, changed in place.
    """
    require_instance("model", model, nn.Module)
    targets = _check_targets(target_names)
    if any(True for _ in lora_layers(model)):
        raise InputError("the model has LoRA layers already: inject once (load_adapter fills them "
                         "in), or start again from a fresh model")
    chosen = [(name, m) for name, m in model.named_modules() if _matches(name, targets)]
    not_linear = [name for name, m in chosen if not isinstance(m, nn.Linear)]
    if not_linear:
        raise InputError(f"target_names picks {not_linear[0]!r}, a {type(model.get_submodule(not_linear[0])).__name__}: "
                         f"LoRA wraps nn.Linear layers only")
    missing = [t for t in targets if not any(_matches(name, [t]) for name, _ in chosen)]
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if isinstance(m, nn.Linear)})
        raise InputError(f"no nn.Linear layer of the model is named {missing[0]!r}; its linear "
                         f"layers end with: {', '.join(linear)}")
    model.requires_grad_(False)  # everything frozen; only the new A and B will train
    for name, linear in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(linear, r, alpha, dropout))
    return model


def trainable_parameters(model: nn.Module) -> int:
    """How many numbers training will change (parameters with requires_grad, shared ones once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge_lora(model: nn.Module) -> nn.Module:
    """merge() every LoRALinear: for fast generation once training is done."""
    for _, layer in lora_layers(model):
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """unmerge() every LoRALinear, to train again."""
    for _, layer in lora_layers(model):
        layer.unmerge()
    return model
