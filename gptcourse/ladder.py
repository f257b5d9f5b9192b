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

from .attention import Head, MultiHeadAttention
from .config import GPTConfig
from .layers import FeedForward, LayerNorm
from .train import train_simple


@dataclass(frozen=True)
class Rung:
    """Which parts the ladder model uses."""

    attention: str = "none"      # "none", "head" (one head) or "multi" (several heads)
    n_heads: int = 4
    feed_forward: bool = False
    n_blocks: int = 1
    shortcuts: bool = False
    layer_norm: bool = False
    use_sdpa: bool = False       # attention through PyTorch's fused kernel: the same maths, faster

    def __post_init__(self) -> None:
        if self.attention not in ("none", "head", "multi"):
            raise ValueError(f"attention must be 'none', 'head' or 'multi', got {self.attention!r}")
        if self.n_blocks < 1 or self.n_heads < 1:
            raise ValueError("n_blocks and n_heads must be >= 1")


class LadderBlock(nn.Module):
    """Attention then feed-forward, each optionally with a shortcut and a LayerNorm before it."""

    def __init__(self, rung: Rung, emb_dim: int, block_size: int):
        super().__init__()
        self.rung = rung
        if rung.attention == "head":
            self.att = Head(emb_dim, emb_dim, block_size)
        elif rung.attention == "multi":
            self.att = MultiHeadAttention(emb_dim, emb_dim, block_size, 0.0, rung.n_heads,
                                          use_sdpa=rung.use_sdpa)
        else:
            self.att = None
        cfg = GPTConfig(vocab_size=1, context_length=block_size, emb_dim=emb_dim, n_heads=1, n_layers=1)
        self.ff = FeedForward(cfg) if rung.feed_forward else None
        make_norm = (lambda: LayerNorm(emb_dim)) if rung.layer_norm else nn.Identity
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
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, emb_dim)
        self.pos_emb = nn.Embedding(block_size, emb_dim)
        self.blocks = nn.Sequential(*[LadderBlock(rung, emb_dim, block_size) for _ in range(rung.n_blocks)])
        self.final_norm = LayerNorm(emb_dim) if rung.layer_norm else nn.Identity()
        self.head = nn.Linear(emb_dim, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        if T > self.block_size:
            raise ValueError(f"input has {T} tokens but block_size is {self.block_size}: crop it")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))  # (B, T, C)
        x = self.final_norm(self.blocks(x))
        return self.head(x)  # (B, T, vocab)


# The rungs in the order the chapters climb them. From the feed-forward rung on, attention runs
# through PyTorch's fused kernel (the same maths as chapter 3's, about a third faster here).
RUNGS: dict[str, Rung] = {
    "bigram + positions": Rung(),
    "one head": Rung(attention="head"),
    "multi-head": Rung(attention="multi"),
    "multi-head + feed-forward": Rung(attention="multi", feed_forward=True, use_sdpa=True),
    "blocks + shortcuts": Rung(attention="multi", feed_forward=True, n_blocks=2, shortcuts=True,
                               use_sdpa=True),
    "blocks + shortcuts + LayerNorm": Rung(attention="multi", feed_forward=True, n_blocks=2,
                                           shortcuts=True, layer_norm=True, use_sdpa=True),
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
    elif not isinstance(rung, Rung):
        raise TypeError(f"rung must be a Rung, got {type(rung).__name__}")
    torch.manual_seed(recipe.init_seed)
    model = LadderModel(vocab_size, recipe.block_size, recipe.emb_dim, rung)
    started = time.perf_counter()
    # Loss estimates only at the start and the end: evaluating costs time and changes nothing.
    history = train_simple(model, train_ids, val_ids, steps=recipe.steps, block_size=recipe.block_size,
                           batch_size=recipe.batch_size, lr=recipe.lr, eval_interval=recipe.steps,
                           eval_iters=recipe.eval_iters, seed=recipe.batch_seed, progress=progress)
    return RungResult(name, model, history, time.perf_counter() - started)
