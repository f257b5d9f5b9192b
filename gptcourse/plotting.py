"""Plots the course draws again and again: loss curves and heatmaps.

Each helper draws on a matplotlib Axes (a new one if none is given) and returns it;
the notebook cell ends with `plt.show()`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes

_REQUIRED_KEYS = ("step", "train", "val")


def plot_losses(
    history: Mapping[str, Sequence[float]],
    ax: Axes | None = None,
    title: str = "Loss during training",
    hlines: Mapping[str, float] | None = None,
    show_batch_loss: bool = True,
) -> Axes:
    """Plot a training history from `train_simple`: estimated train/val losses against steps.

    Faint: the loss of every batch (if recorded). `hlines` draws labelled reference levels,
    for example {"counting floor": 2.45}.
    """
    if not isinstance(history, Mapping):
        raise TypeError(f"history must be the dict that train_simple returns, got {type(history).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in history]
    if missing:
        raise ValueError(f"history is missing {missing}: pass the dict that train_simple returns "
                         f"(keys 'step', 'train', 'val', optionally 'batch_loss')")
    steps, train, val = (list(history[key]) for key in _REQUIRED_KEYS)
    if not steps:
        raise ValueError("history has no evaluations yet: train for at least one step first")
    if not len(steps) == len(train) == len(val):
        raise ValueError(f"history['step'], ['train'] and ['val'] must have the same length, got "
                         f"{len(steps)}, {len(train)} and {len(val)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    batch_loss = list(history.get("batch_loss", []))
    if show_batch_loss and batch_loss:
        # Batch i is trained on at step i; single batches are noisy, so draw them faintly.
        ax.plot(range(len(batch_loss)), batch_loss, color="0.75", lw=0.8, label="batch loss")
    ax.plot(steps, train, "o-", ms=3, label="train (estimate)")
    ax.plot(steps, val, "o-", ms=3, label="val (estimate)")
    for i, (label, level) in enumerate((hlines or {}).items()):
        ax.axhline(level, ls="--", lw=1, color=f"C{i + 2}", label=f"{label} ({level:.3f})")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def char_label(ch: str) -> str:
    """A visible label for a character: newline as '\\n', space as '␣', others unchanged."""
    return {"\n": "\\n", " ": "␣", "\t": "\\t"}.get(ch, ch)


def plot_heatmap(
    matrix,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    cmap: str = "Blues",
    colorbar: bool = True,
) -> Axes:
    """Draw a 2-D matrix (tensor or nested lists) as coloured cells, with optional tick labels."""
    values = torch.as_tensor(matrix).detach().cpu().double()
    if values.dim() != 2:
        raise ValueError(f"matrix must be 2-D, got shape {tuple(values.shape)}")
    rows, cols = values.shape
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels has {len(row_labels)} labels for {rows} rows")
    if col_labels is not None and len(col_labels) != cols:
        raise ValueError(f"col_labels has {len(col_labels)} labels for {cols} columns")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(values.numpy(), cmap=cmap, aspect="auto")
    if row_labels is not None:
        ax.set_yticks(range(rows), list(row_labels))
    if col_labels is not None:
        ax.set_xticks(range(cols), list(col_labels))
    if colorbar:
        ax.figure.colorbar(image, ax=ax)
    if title:
        ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    return ax
