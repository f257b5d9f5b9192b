"""The optimizer side of training: AdamW parameter groups and the warm-up + cosine learning rate."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from .validate import require_int, require_number, require_positive_number


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split the parameters in two AdamW groups: weight decay on the weight matrices only.

    Biases, LayerNorm scales/shifts (all 1-D) and embedding tables get no decay: shrinking them
    towards 0 does not make the model simpler, it only pulls the token vectors together.
    A tied output head is the token embedding itself, so it counts once, without decay.
    """
    require_number("weight_decay", weight_decay, low=0)
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # each shared Parameter appears once
        if not p.requires_grad:
            continue
        if p.dim() >= 2 and id(p) not in embeddings:
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1,
                   betas: tuple[float, float] = (0.9, 0.99)) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, weight_decay)`, with PyTorch's fused kernel where it has one.

    The fused kernel updates every parameter in one pass instead of a dozen small operations per
    tensor: the same update up to float rounding (tests/test_training.py), and much faster on a CPU.
    """
    require_positive_number("lr", lr)
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas,
                             **fused_where_possible(model))


# Devices where torch.optim.AdamW(fused=True) runs (PyTorch 2.4 and later).
FUSED_ADAMW_DEVICES = ("cpu", "cuda", "mps")


def fused_where_possible(model: nn.Module) -> dict:
    """AdamW's options for `model`: {"fused": True} where its device has the fused kernel, else {}."""
    first = next(model.parameters(), None)
    if first is None:
        raise ValueError(f"the model ({type(model).__name__}) has no parameters to train")
    return {"fused": True} if first.device.type in FUSED_ADAMW_DEVICES else {}


def lr_at(step: int, max_lr: float, min_lr: float, warmup_iters: int, max_iters: int) -> float:
    """The learning rate for training step `step` (counted from 0).

    Warm-up: rises linearly, max_lr * (step + 1) / warmup_iters, reaching max_lr at the last
    warm-up step (warmup_iters - 1). Then a cosine curve from max_lr at step warmup_iters down to
    min_lr at step max_iters, and min_lr after that.
    """
    require_int("step", step, low=0)
    return lr_schedule(max_lr, min_lr, warmup_iters, max_iters)(step)


def lr_schedule(max_lr: float, min_lr: float, warmup_iters: int,
                max_iters: int) -> Callable[[int], float]:
    """Check the schedule's settings once; return lr(step), lr_at's curve for these settings.

    A training loop calls this once before its first step, so that no step checks them again.
    """
    if not 0 <= min_lr <= max_lr:
        raise ValueError(f"need 0 <= min_lr <= max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if not 0 <= warmup_iters <= max_iters:
        raise ValueError(f"need 0 <= warmup_iters <= max_iters, got warmup_iters={warmup_iters}, "
                         f"max_iters={max_iters}")

    def lr(step: int) -> float:
        if step < warmup_iters:
            # step + 1: the very first step already learns a little (step / warmup_iters would give 0).
            return max_lr * (step + 1) / warmup_iters
        if step >= max_iters:
            return min_lr
        progress = (step - warmup_iters) / (max_iters - warmup_iters)  # 0 -> 1 over the decay
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)

    return lr
