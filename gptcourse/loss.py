"""The loss of a language model: of one batch, estimated on random batches, or exact on a split.

Models may return either logits of shape (B, T, vocab), as GPTModel does, or a tuple
(logits, loss), as the bigram model of chapter 2 does; `logits_of` takes the logits of both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .data import batch_sampler, create_dataloader
from .validate import require_optional_int, require_positive_int


def logits_of(output) -> torch.Tensor:
    """The logits of a model's output, whether it returned `logits` or `(logits, loss)`."""
    return output[0] if isinstance(output, tuple) else output


def calc_loss_batch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the model's next-token predictions for inputs x and targets y."""
    logits = logits_of(model(x))  # (B, T, V)
    # cross_entropy wants (N, V) scores and (N,) targets, so fold batch and time together.
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


@torch.no_grad()
def calc_loss_loader(model: torch.nn.Module, data_loader: DataLoader, num_batches: int | None = None,
                     device: str | torch.device = "cpu") -> float:
    """Mean loss per token over the first `num_batches` batches of a loader (all of them if None).

    Runs in eval mode (no dropout) and without gradients, then restores the model's mode.
    """
    require_optional_int("num_batches", num_batches, low=1, hint=" (None: all of them)")
    if len(data_loader) == 0:
        raise ValueError("data_loader has no batches: use more data or a smaller batch size")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i, (x, y) in enumerate(data_loader):
        if num_batches is not None and i >= num_batches:
            break
        # Weight each batch by its size, so a smaller last batch counts for what it holds.
        total += calc_loss_batch(model, x.to(device), y.to(device)).item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


def split_loss(model: torch.nn.Module, data: torch.Tensor, block_size: int, batch_size: int = 64,
               device: str | torch.device = "cpu") -> float:
    """The exact loss on a whole split: every non-overlapping window of `block_size` tokens, once."""
    loader = create_dataloader(data, block_size, stride=block_size, batch_size=batch_size,
                               shuffle=False, drop_last=False)
    return calc_loss_loader(model, loader, device=device)


@torch.no_grad()
def estimate_loss(
    model: torch.nn.Module,
    splits: dict[str, torch.Tensor],
    block_size: int,
    batch_size: int,
    eval_iters: int = 20,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Average loss over `eval_iters` random batches of each split, in eval mode, without gradients."""
    require_positive_int("eval_iters", eval_iters)
    was_training = model.training
    model.eval()  # no dropout while measuring
    result = {}
    for name, data in splits.items():
        draw = batch_sampler(data, block_size, batch_size, device=device, generator=generator)
        losses = torch.empty(eval_iters)
        for i in range(eval_iters):
            losses[i] = calc_loss_batch(model, *draw()).item()
        result[name] = losses.mean().item()
    model.train(was_training)
    return result
