"""The loss ladder: one small character model whose parts are switched on one at a time.

Chapters 3 and 4 train it at a tiny, CPU-fast size and watch the validation loss fall as each
idea is added: position embeddings, one attention head, several heads, a feed-forward layer,
stacked blocks with shortcuts, and LayerNorm. Every rung is trained with the same recipe
(`LADDER_RECIPE`), so the only difference between two rungs is the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from .attention import MultiHeadAttention
from .config import GPTConfig
from .layers import FeedForward, LayerNorm
from .train import train_simple
from .validate import require_flag, require_instance, require_positive_int


@dataclass(frozen=True)
class Rung:
    """Which parts the ladder model uses."""

    attention: str = "none"      # "none", "head" (one head of size C) or "multi" (n_heads heads)
    n_heads: int = 4
    feed_forward: bool = False
    n_blocks: int = 1
    shortcuts: bool = False
    layer_norm: bool = False
    fast: bool = False           # attention, LayerNorm and GELU through fast kernels: the same maths

    def __post_init__(self) -> None:
        if self.attention not in ("none", "head", "multi"):
            raise ValueError(f"attention must be 'none', 'head' or 'multi', got {self.attention!r}")
        require_positive_int("n_heads", self.n_heads)
        require_positive_int("n_blocks", self.n_blocks)
        for name in ("feed_forward", "shortcuts", "layer_norm", "fast"):
            require_flag(name, getattr(self, name))


class LadderBlock(nn.Module):
    """Attention then feed-forward, each optionally with a shortcut and a LayerNorm before it."""

    def __init__(self, rung: Rung, cfg: GPTConfig):
        super().__init__()
        self.rung = rung
        C, T = cfg.emb_dim, cfg.context_length
        # One head and several heads have the same parts (query, key, value and the output
        # projection) and the same number of parameters: only the split into heads differs.
        if rung.attention in ("head", "multi"):
            self.att = MultiHeadAttention(C, C, T, 0.0, cfg.n_heads, fast=cfg.fast)
        else:
            self.att = None
        self.ff = FeedForward(cfg) if rung.feed_forward else None
        make_norm = (lambda: LayerNorm(C, fast=cfg.fast)) if rung.layer_norm else nn.Identity
        self.norm1, self.norm2 = make_norm(), make_norm()

    def _sublayer(self, layer: nn.Module | None, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if layer is None:
            return x
        out = layer(norm(x))
        return x + out if self.rung.shortcuts else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._sublayer(self.att, self.norm1, x)
        return self._sublayer(self.ff, self.norm2, x)


class LadderModel(nn.Module):
    """Token + position embeddings, `n_blocks` ladder blocks, (LayerNorm), a linear head to logits."""

    def __init__(self, vocab_size: int, block_size: int, emb_dim: int, rung: Rung = Rung()):
        super().__init__()
        rung = require_instance("rung", rung, Rung)
        # The ladder's sizes, checked once by GPTConfig; its blocks and layers trust them.
        cfg = GPTConfig(vocab_size=vocab_size, context_length=block_size, emb_dim=emb_dim,
                        n_heads=rung.n_heads if rung.attention == "multi" else 1,
                        n_layers=rung.n_blocks, drop_rate=0.0, fast=rung.fast)
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, emb_dim)
        self.pos_emb = nn.Embedding(block_size, emb_dim)
        self.blocks = nn.Sequential(*[LadderBlock(rung, cfg) for _ in range(rung.n_blocks)])
        self.final_norm = LayerNorm(emb_dim, fast=cfg.fast) if rung.layer_norm else nn.Identity()
        self.head = nn.Linear(emb_dim, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        if T > self.block_size:
            raise ValueError(f"input has {T} tokens but block_size is {self.block_size}: crop it")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))  # (B, T, C)
        x = self.final_norm(self.blocks(x))
        return self.head(x)  # (B, T, vocab)


# The rungs in the order the chapters climb them. From the feed-forward rung on, attention,
# LayerNorm and GELU run through fused kernels: the same maths as chapters 3 and 4 write out
# (tests/test_ladder.py compares them), in fewer passes, so these rungs train faster.
_FAST_KERNELS = {"fast": True}
RUNGS: dict[str, Rung] = {
    "bigram + positions": Rung(),
    "one head": Rung(attention="head"),
    "multi-head": Rung(attention="multi"),
    "multi-head + feed-forward": Rung(attention="multi", feed_forward=True, **_FAST_KERNELS),
    "blocks + shortcuts": Rung(attention="multi", feed_forward=True, n_blocks=2, shortcuts=True,
                               **_FAST_KERNELS),
    "blocks + shortcuts + LayerNorm": Rung(attention="multi", feed_forward=True, n_blocks=2,
                                           shortcuts=True, layer_norm=True, **_FAST_KERNELS),
}


@dataclass(frozen=True)
class LadderRecipe:
    """How every rung is trained: sizes, steps, learning rate and seeds (chapters 3 and 4)."""

    block_size: int = 8       # characters of context
    emb_dim: int = 32         # size of each token's vector
    batch_size: int = 32      # windows per training step
    steps: int = 1500         # AdamW steps
    lr: float = 3e-3          # AdamW learning rate
    eval_iters: int = 50      # batches per split for the loss estimates (at the start and end)
    init_seed: int = 1337     # torch.manual_seed before the model is built: same start weights
    batch_seed: int = 0       # seeds train_simple's batches: every rung sees the same batches


LADDER_RECIPE = LadderRecipe()


@dataclass
class RungResult:
    """A trained rung: the model, its training history, and how long training took."""

    name: str
    model: LadderModel
    history: dict[str, list]
    seconds: float

    @property
    def val_loss(self) -> float:
        """The validation loss estimated at the end of training."""
        return self.history["val"][-1]


def train_rung(name: str, train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int,
               recipe: LadderRecipe = LADDER_RECIPE, progress: bool = True,
               rung: Rung | None = None) -> RungResult:
    """Build the rung `name` of RUNGS (or your own `rung`, named `name`) and train it with `recipe`."""
    if rung is None:
        if name not in RUNGS:
            raise ValueError(f"unknown rung {name!r}; choose one of {list(RUNGS)} "
                             f"or pass your own with rung=Rung(...)")
        rung = RUNGS[name]
    require_instance("rung", rung, Rung)
    torch.manual_seed(recipe.init_seed)
    model = LadderModel(vocab_size, recipe.block_size, recipe.emb_dim, rung)
    started = time.perf_counter()
    # Loss estimates only at the start and the end: evaluating costs time and changes nothing.
    history = train_simple(model, train_ids, val_ids, steps=recipe.steps, block_size=recipe.block_size,
                           batch_size=recipe.batch_size, lr=recipe.lr, eval_interval=recipe.steps,
                           eval_iters=recipe.eval_iters, seed=recipe.batch_seed, progress=progress)
    return RungResult(name, model, history, time.perf_counter() - started)
