"""Training utilities shared by every chapter: the loss of a batch, loss estimates, a simple loop.

Models may return either logits of shape (B, T, vocab) or a tuple (logits, loss) as the
bigram model does; `calc_loss_batch` accepts both. The full training loop of chapter 6
(AdamW, warm-up + cosine schedule, clipping, checkpoints) is in `gptcourse.trainer`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import create_dataloader, get_batch
from .validate import require_optional_int, require_positive_int, require_positive_number


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
        losses = torch.empty(eval_iters)
        for i in range(eval_iters):
            x, y = get_batch(data, block_size, batch_size, device=device, generator=generator)
            losses[i] = calc_loss_batch(model, x, y).item()
        result[name] = losses.mean().item()
    model.train(was_training)
    return result


def train_simple(
    model: torch.nn.Module,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    *,
    steps: int,
    block_size: int,
    batch_size: int,
    lr: float = 1e-3,
    eval_interval: int = 100,
    eval_iters: int = 20,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, list]:
    """Train with AdamW on random batches and return the history for plotting.

    history["step"], ["train"], ["val"] hold the estimated losses every `eval_interval` steps
    (and at the end); history["batch_loss"] holds the loss of every training batch.
    """
    require_positive_int("steps", steps)
    require_positive_int("eval_interval", eval_interval)
    require_positive_int("eval_iters", eval_iters)
    require_positive_number("lr", lr)
    # Separate generators keep training batches the same however often we evaluate.
    batch_gen = torch.Generator().manual_seed(seed)
    eval_gen = torch.Generator().manual_seed(seed + 1)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    history: dict[str, list] = {"step": [], "train": [], "val": [], "batch_loss": []}
    splits = {"train": train_data, "val": val_data}
    model.train()
    bar = tqdm(range(steps), desc="training", disable=not progress, leave=False)
    for step in bar:
        if step % eval_interval == 0:
            _record(history, step, estimate_loss(model, splits, block_size, batch_size, eval_iters,
                                                 eval_gen, device))
        x, y = get_batch(train_data, block_size, batch_size, device=device, generator=batch_gen)
        loss = calc_loss_batch(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history["batch_loss"].append(loss.item())
        # refresh=False: let tqdm redraw at its own rate, not on every step (3,000 widget updates
        # flood a notebook's output channel, slow training and time out nbval under load).
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    _record(history, steps, estimate_loss(model, splits, block_size, batch_size, eval_iters,
                                          eval_gen, device))
    model.eval()
    return history


def _record(history: dict[str, list], step: int, losses: dict[str, float]) -> None:
    history["step"].append(step)
    history["train"].append(losses["train"])
    history["val"].append(losses["val"])
