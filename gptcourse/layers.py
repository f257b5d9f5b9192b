"""The parts of a transformer block: LayerNorm, GELU, the feed-forward network, shortcuts, the block."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .attention import MultiHeadAttention
from .config import GPTConfig


class LayerNorm(nn.Module):
    """Normalise each token's vector to mean 0 and variance 1, then scale and shift (both trained)."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        if not isinstance(emb_dim, int) or emb_dim < 1:
            raise ValueError(f"emb_dim must be a positive int, got {emb_dim!r}")
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        # Biased variance (divide by n, not n - 1): that is how GPT-2 was trained.
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        norm_x = (x - mean) / torch.sqrt(var + self.eps)  # eps inside the root avoids dividing by 0
        return self.scale * norm_x + self.shift


GELU_TANH_CONSTANT = math.sqrt(2.0 / math.pi)


class GELU(nn.Module):
    """GELU with the tanh approximation used by GPT-2: smooth like ReLU, but non-zero below 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(GELU_TANH_CONSTANT * (x + 0.044715 * x.pow(3))))


class FeedForward(nn.Module):
    """Expand each token to 4x its size, apply GELU, project back: thinking per token."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ExampleDeepNeuralNetwork(nn.Module):
    """A stack of Linear+GELU layers, with or without shortcuts, to watch gradients vanish."""

    def __init__(self, layer_sizes: list[int], use_shortcut: bool):
        super().__init__()
        if len(layer_sizes) < 2:
            raise ValueError(f"layer_sizes needs at least an input and an output size, got {layer_sizes}")
        self.use_shortcut = use_shortcut
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(n_in, n_out), GELU())
            for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            out = layer(x)
            # A shortcut adds the input back, giving gradients a direct path to early layers.
            x = x + out if self.use_shortcut and out.shape == x.shape else out
        return x


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim, d_out=cfg.emb_dim, context_length=cfg.context_length,
            dropout=cfg.drop_rate, num_heads=cfg.n_heads, qkv_bias=cfg.qkv_bias, use_sdpa=cfg.use_sdpa,
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x)))  # (B, T, C): tokens talk to each other
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))   # (B, T, C): each token thinks alone
        return x
