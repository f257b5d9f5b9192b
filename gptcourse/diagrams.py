"""Diagrams of the model's data flow, drawn with matplotlib boxes and arrows.

Each function returns a Figure whose labels use the code's names and shapes (`tok_emb`,
`trf_blocks`, `(B, T, C)`), so a notebook cell draws one with `diagram(); plt.show()`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

# One colour per kind of step, the same in every diagram.
DATA, LAYER, OPERATION, NOTE = "#e8f1fb", "#fde9c9", "#e3f4e1", "#f2f2f2"


def _canvas(width: float, height: float, title: str) -> tuple[Figure, plt.Axes]:
    """A blank figure whose data coordinates are inches: width x height."""
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=12, fontweight="bold")
    return fig, ax


def _box(ax: plt.Axes, x: float, y: float, text: str, width: float = 2.6, height: float = 0.5,
         color: str = LAYER, fontsize: float = 9.5) -> tuple[float, float, float, float]:
    """A rounded box centred on (x, y); returns its left, bottom, right, top edges."""
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor="0.3", linewidth=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, family="monospace")
    return x - width / 2, y - height / 2, x + width / 2, y + height / 2


def _arrow(ax: plt.Axes, start: tuple[float, float], end: tuple[float, float], color: str = "0.25",
           style: str = "-|>", connection: str = "arc3") -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=color,
                                 linewidth=1.2, connectionstyle=connection, shrinkA=0, shrinkB=0))


def _note(ax: plt.Axes, x: float, y: float, text: str, ha: str = "left", fontsize: float = 8.5,
          color: str = "0.35") -> None:
    ax.text(x, y, text, ha=ha, va="center", fontsize=fontsize, color=color, style="italic")


def _column(ax: plt.Axes, x: float, top: float, step: float,
            boxes: list[tuple[str, str, str]], width: float = 2.6) -> list[float]:
    """Boxes (text, colour, shape note) from top to bottom joined by arrows; returns their y's."""
    ys = [top - i * step for i in range(len(boxes))]
    for i, ((text, color, shape), y) in enumerate(zip(boxes, ys)):
        _box(ax, x, y, text, width=width, color=color)
        if shape:
            _note(ax, x + width / 2 + 0.15, y, shape)
        if i:
            _arrow(ax, (x, ys[i - 1] - 0.25), (x, y + 0.25))
    return ys


def gpt_architecture() -> Figure:
    """GPTModel from token ids to logits, with GPTModel's attribute names and the shapes."""
    fig, ax = _canvas(8.6, 7.6, "GPTModel: from token ids to next-token logits")
    x = 4.0
    _box(ax, x, 7.0, "idx: token ids", width=3.2, color=DATA)
    _note(ax, x + 1.75, 7.0, "(B, T)")
    _box(ax, 2.8, 6.1, "tok_emb", width=1.9)
    _box(ax, 5.2, 6.1, "pos_emb", width=1.9)
    _note(ax, 1.8, 6.5, "(B, T, C)", ha="right")
    _note(ax, 6.3, 6.5, "(T, C): positions 0..T-1")
    _arrow(ax, (3.5, 6.75), (2.8, 6.35))
    _arrow(ax, (4.5, 6.75), (5.2, 6.35))
    _box(ax, x, 5.2, "+", width=0.5, color=OPERATION, fontsize=12)
    _arrow(ax, (2.8, 5.85), (3.75, 5.3))
    _arrow(ax, (5.2, 5.85), (4.25, 5.3))
    ys = _column(ax, x, 4.4, 0.8, [
        ("drop_emb (Dropout)", LAYER, "(B, T, C)"),
        ("trf_blocks", LAYER, "n_layers x TransformerBlock,\n(B, T, C) in and out"),
        ("final_norm (LayerNorm)", LAYER, "(B, T, C)"),
        ("out_head (Linear C -> V)", LAYER, "V = vocab_size"),
        ("logits", DATA, "(B, T, V): a score per\nnext token, at every position"),
    ], width=3.2)
    _arrow(ax, (x, 4.95), (x, ys[0] + 0.25))
    # Weight tying: out_head uses tok_emb's (V, C) matrix, so both get one red line.
    ax.plot([x - 1.6, 1.5, 1.5, 1.85], [ys[3], ys[3], 6.1, 6.1], color="C3", lw=1.4, ls="--")
    _note(ax, 1.4, (ys[3] + 6.1) / 2, "weight tying:\nout_head.weight\nis tok_emb.weight,\none (V, C) matrix",
          ha="right", color="C3", fontsize=8)
    return fig


def attention_head() -> Figure:
    """One causal attention head: query, key and value, the scaled scores, the mask, the weights."""
    fig, ax = _canvas(9.5, 7.2, "One attention head (Head): who looks at whom")
    _box(ax, 3.0, 6.6, "x", width=1.2, color=DATA)
    _note(ax, 3.75, 6.6, "(B, T, C)")
    for name, xq in (("query", 1.0), ("key", 3.0), ("value", 5.0)):
        _box(ax, xq, 5.7, f"{name} (Linear)", width=1.8)
        _arrow(ax, (3.0, 6.35), (xq, 5.95))
    _note(ax, 5.95, 5.7, "q, k, v: (B, T, hs)")
    ys = _column(ax, 2.0, 4.7, 0.85, [
        ("q @ k.T / sqrt(hs)", OPERATION, "scores (B, T, T)"),
        ("masked_fill(-inf)", OPERATION, ""),
        ("softmax(dim=-1)", OPERATION, "rows sum to 1"),
        ("dropout", LAYER, "training only"),
        ("weights @ v", OPERATION, ""),
    ], width=2.4)
    _note(ax, 2.0, ys[-1] - 0.45, "out: (B, T, hs)", ha="center")
    _arrow(ax, (1.0, 5.45), (1.6, ys[0] + 0.25))
    _arrow(ax, (3.0, 5.45), (2.4, ys[0] + 0.25))
    _arrow(ax, (5.0, 5.45), (3.2, ys[-1]), connection="angle,angleA=-90,angleB=0,rad=0")
    # The causal mask itself: row t (query) may look at columns 0..t (keys).
    size, cell, left, bottom = 6, 0.32, 6.9, 1.0
    for row in range(size):
        for col in range(size):
            allowed = col <= row
            ax.add_patch(Rectangle((left + col * cell, bottom + (size - 1 - row) * cell), cell, cell,
                                   facecolor="#4a90d9" if allowed else "white", edgecolor="0.6"))
            if not allowed:
                ax.text(left + (col + 0.5) * cell, bottom + (size - 0.5 - row) * cell, "-inf",
                        ha="center", va="center", fontsize=5.5, color="0.4")
    ax.text(left + size * cell / 2, bottom + size * cell + 0.25, "key position (looked at)",
            ha="center", fontsize=8.5)
    ax.text(left - 0.2, bottom + size * cell / 2, "query position\n(looking)", ha="right",
            va="center", fontsize=8.5)
    _note(ax, left + size * cell / 2, bottom - 0.3, "blue: allowed (itself and the past)", ha="center")
    ax.text(left + size * cell / 2, bottom + size * cell + 0.65, "the causal mask (T = 6)",
            ha="center", fontsize=9.5, fontweight="bold")
    _arrow(ax, (left - 1.2, bottom + size * cell + 0.65), (3.25, ys[1]), color="0.5")
    return fig


def transformer_block() -> Figure:
    """The pre-LN TransformerBlock: LayerNorm before each sublayer, a shortcut around each."""
    fig, ax = _canvas(7.4, 7.4, "TransformerBlock (pre-LN): two sublayers, two shortcuts")
    x = 3.0
    _box(ax, x, 6.9, "x", width=1.2, color=DATA)
    _note(ax, x + 0.75, 6.9, "(B, T, C)")
    ys = _column(ax, x, 6.0, 0.7, [
        ("norm1 (LayerNorm)", LAYER, ""),
        ("att (MultiHeadAttention)", LAYER, "tokens read each other"),
        ("drop_shortcut", LAYER, ""),
        ("+", OPERATION, ""),
        ("norm2 (LayerNorm)", LAYER, ""),
        ("ff (FeedForward)", LAYER, "each token alone: C -> 4C -> C"),
        ("drop_shortcut", LAYER, ""),
        ("+", OPERATION, "(B, T, C) out"),
    ], width=3.2)
    _arrow(ax, (x, 6.65), (x, ys[0] + 0.25))
    # Shortcuts: the sublayer's input goes round it and is added to its output.
    for start, plus in ((6.45, ys[3]), (ys[3] - 0.3, ys[7])):
        ax.plot([x, x - 2.1, x - 2.1], [start, start, plus], color="C0", lw=1.6)
        _arrow(ax, (x - 2.1, plus), (x - 1.6, plus), color="C0")
    _note(ax, 0.05, (ys[0] + ys[2]) / 2, "shortcut", color="C0")
    _note(ax, 0.05, (ys[4] + ys[6]) / 2, "shortcut", color="C0")
    return fig


def kv_cache() -> Figure:
    """Generation with a KV cache: each step computes one new key and value and reuses the rest."""
    fig, ax = _canvas(9.5, 5.4, "KV cache: keys and values are computed once, then reused")
    cell = 0.45
    steps = [("prompt: 4 tokens at once", 4, 4), ("step 1: one new token", 5, 1),
             ("step 2: one new token", 6, 1)]
    for i, (label, length, new) in enumerate(steps):
        y = 4.2 - i * 1.45
        ax.text(0.1, y + 0.55, label, fontsize=9.5, fontweight="bold")
        for row, name in enumerate(("K", "V")):
            yy = y - row * (cell + 0.05)
            ax.text(0.45, yy + cell / 2, name, ha="center", va="center", fontsize=9, family="monospace")
            for pos in range(length):
                fresh = pos >= length - new
                ax.add_patch(Rectangle((0.8 + pos * cell, yy), cell, cell, edgecolor="0.3",
                                       facecolor="#f5a623" if fresh else "#cfe3f7"))
        right = 0.8 + length * cell
        _arrow(ax, (right + 0.15, y + 0.02), (4.45, y + 0.02))
        query = "q of the 4 prompt positions" if new > 1 else "q of the newest token only"
        _box(ax, 6.5, y + 0.02, f"attend: {query}\nover all {length} cached k, v",
             width=3.9, height=0.72, color=OPERATION, fontsize=8.5)
    ax.add_patch(Rectangle((0.8, 0.2), cell, cell, facecolor="#f5a623", edgecolor="0.3"))
    _note(ax, 1.35, 0.2 + cell / 2, "computed in this step (KVCache.append)")
    ax.add_patch(Rectangle((5.3, 0.2), cell, cell, facecolor="#cfe3f7", edgecolor="0.3"))
    _note(ax, 5.85, 0.2 + cell / 2, "read from the cache: (B, n_heads, T, head_dim)")
    return fig


def training_loop() -> Figure:
    """One optimizer step after another, with a loss estimate every eval_interval steps."""
    fig, ax = _canvas(8.5, 5.6, "The training loop: one step, repeated")
    # The four steps of one iteration, clockwise from the batch.
    boxes = [
        ((2.4, 4.6), "x, y = get_batch(train_ids)", DATA),
        ((6.1, 3.3), "logits = model(x)", LAYER),
        ((2.4, 2.0), "loss = cross_entropy(\n    logits, y)", OPERATION),
        ((2.4, 3.3), "zero_grad(); backward();\n(clip;) optimizer.step()", LAYER),
    ]
    for (x, y), text, color in boxes:
        _box(ax, x, y, text, width=3.2, height=0.72, color=color, fontsize=8.5)
    _note(ax, 6.25, 3.9, "(B, T, V)")
    _note(ax, 2.4, 1.45, "one number, in nats", ha="center")
    _note(ax, 2.4, 5.15, "(B, T) ids and their targets", ha="center")
    _arrow(ax, (4.0, 4.6), (6.1, 3.66), connection="angle,angleA=0,angleB=90,rad=0")
    _arrow(ax, (6.1, 2.94), (4.0, 2.0), connection="angle,angleA=-90,angleB=0,rad=0")
    _arrow(ax, (2.4, 2.36), (2.4, 2.94))
    _arrow(ax, (2.4, 3.66), (2.4, 4.24))
    _note(ax, 0.1, 3.95, "next step")
    _box(ax, 6.3, 0.75, "and every eval_interval steps:\nestimate_loss(model) -> history",
         width=3.9, height=0.72, color=NOTE, fontsize=8.5)
    return fig


ALL_DIAGRAMS = {
    "gpt_architecture": gpt_architecture,
    "attention_head": attention_head,
    "transformer_block": transformer_block,
    "kv_cache": kv_cache,
    "training_loop": training_loop,
}
