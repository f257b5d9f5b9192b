"""The parts of a transformer block: LayerNorm, GELU, the feed-forward network, shortcuts, the block."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .attention import MultiHeadAttention
from .config import GPTConfig
from .validate import require_flag, require_instance, require_positive_int, require_positive_number


class LayerNorm(nn.Module):
    """Normalise each token's vector to mean 0 and variance 1, then scale and shift (both trained).

    fast=True computes the same function with PyTorch's one-kernel F.layer_norm (faster; equal
    to the written-out version up to float rounding, as tests/test_layers.py checks).
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5, fast: bool = False):
        super().__init__()
        self.emb_dim = require_positive_int("emb_dim", emb_dim, hint=" (the size of each token's vector)")
        self.eps = require_positive_number("eps", eps, hint=" (a small number such as 1e-5)")
        self.fast = require_flag("fast", fast)
        self.scale = nn.Parameter(torch.ones(emb_dim))   # trained, starts as "keep the normalised value"
        self.shift = nn.Parameter(torch.zeros(emb_dim))  # trained, starts as "add nothing"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(-1) != self.emb_dim:  # one comparison: cheap enough for every call
            raise ValueError(f"the last dimension of x has size {x.size(-1)}, but this LayerNorm "
                             f"normalises vectors of emb_dim={self.emb_dim}")
        if self.fast:
            return self.fused_forward(x)
        centered = x - x.mean(dim=-1, keepdim=True)        # (..., C): mean 0 per token
        # The biased variance: divide by n, not n - 1, as x.var(unbiased=False) does and as
        # GPT-2 was trained. (Written out, it is also faster than x.var on a CPU.)
        var = centered.pow(2).mean(dim=-1, keepdim=True)   # (..., 1)
        norm_x = centered / torch.sqrt(var + self.eps)     # eps inside the root: never divide by 0
        return self.scale * norm_x + self.shift

    def fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same function as PyTorch's one kernel, F.layer_norm (fast=True runs this)."""
        return F.layer_norm(x, (self.emb_dim,), self.scale, self.shift, self.eps)

    def extra_repr(self) -> str:
        return f"{self.emb_dim}, eps={self.eps}" + (", fast=True" if self.fast else "")


GELU_TANH_CONSTANT = math.sqrt(2.0 / math.pi)
GELU_CUBIC_COEFFICIENT = 0.044715


class _TanhGELUFunction(torch.autograd.Function):
    """GPT-2's tanh GELU for CPUs: the same curve in a few in-place passes, with its own backward.

    0.5 * x * (1 + tanh(u)) equals x * sigmoid(2u), since tanh(u) = 2 * sigmoid(2u) - 1, and
    PyTorch computes sigmoid on a CPU several times faster than tanh. The in-place passes (`mul_`,
    `add_`) write into the tensor just made instead of making a new one for every step.

    When a gradient is needed, the forward pass also computes the derivative, while x is still in
    the cache, and keeps only that one tensor. The backward pass is then a single multiplication.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x_squared = x * x
        s = _sigmoid_of_two_u(x, x_squared)
        if not ctx.needs_input_grad[0]:  # inference: no derivative to keep
            return s.mul_(x)
        out = x * s
        # d/dx [x * s] = s + x * s * (1 - s) * d(2u)/dx, with d(2u)/dx = 2K * (1 + 3c * x^2).
        # Written as v + s * (1 - v) with v = out * d(2u)/dx, all in x_squared's memory.
        v = x_squared.mul_(6 * GELU_TANH_CONSTANT * GELU_CUBIC_COEFFICIENT).add_(2 * GELU_TANH_CONSTANT)
        v.mul_(out)
        derivative = v.addcmul_(s, v, value=-1).add_(s)
        ctx.save_for_backward(derivative)
        return out

    @staticmethod
    @once_differentiable  # the saved derivative is a plain number per element: no second derivative
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (derivative,) = ctx.saved_tensors
        return grad * derivative


def _sigmoid_of_two_u(x: torch.Tensor, x_squared: torch.Tensor) -> torch.Tensor:
    """sigmoid(2u) with 2u = 2K * (x + c * x^3) = 2K * x + 2Kc * x^3, in a new tensor."""
    two_u = (x * (2 * GELU_TANH_CONSTANT)).addcmul_(
        x_squared, x, value=2 * GELU_TANH_CONSTANT * GELU_CUBIC_COEFFICIENT)
    return two_u.sigmoid_()


def gelu_tanh_fused(x: torch.Tensor) -> torch.Tensor:
    """The tanh GELU through the fastest path for x's device (equal up to float rounding).

    On a GPU that is PyTorch's one kernel F.gelu(approximate="tanh"). On a CPU that kernel's tanh
    is slow (on CPUs without AVX2 many times slower), so float tensors use `_TanhGELUFunction`;
    bfloat16 and float16 stay on PyTorch's kernel, which computes inside in float32.
    """
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        if torch.is_grad_enabled() and x.requires_grad:
            return _TanhGELUFunction.apply(x)
        # No gradient to prepare: the forward pass alone, without the custom Function's own
        # cost per call (it is most of the time on one token's vector when decoding).
        return _sigmoid_of_two_u(x, x * x).mul_(x)
    return F.gelu(x, approximate="tanh")


class GELU(nn.Module):
    """GELU with the tanh approximation used by GPT-2: smooth like ReLU, but non-zero below 0.

    fast=True computes the same curve through `gelu_tanh_fused`, the fastest path for the device.
    """

    def __init__(self, fast: bool = False):
        super().__init__()
        self.fast = require_flag("fast", fast)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return gelu_tanh_fused(x)
        # A tanh curve fitted to the exact x * Phi(x) (Phi: the standard normal CDF).
        inner = GELU_TANH_CONSTANT * (x + GELU_CUBIC_COEFFICIENT * x.pow(3))
        return 0.5 * x * (1.0 + torch.tanh(inner))

    def extra_repr(self) -> str:
        return "fast=True" if self.fast else ""


def gelu_exact(x: torch.Tensor) -> torch.Tensor:
    """The exact GELU, x * Phi(x), written with the error function (what nn.GELU() computes)."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


class FeedForward(nn.Module):
    """Expand each token to 4x its size, apply GELU, project back: thinking per token."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        require_instance("cfg", cfg, GPTConfig)  # a GPTConfig has checked every size already
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),  # (..., C) -> (..., 4C): room to compute
            GELU(fast=cfg.fast),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),  # (..., 4C) -> (..., C): back to the stream
        )

    # Names for the parts, as properties: the parameters keep their names ("ff.layers.0.weight")
    # that checkpoints, GPT-2's loader and LoRA's target names use.
    @property
    def expand(self) -> nn.Module:
        """The Linear layer (..., C) -> (..., 4C)."""
        return self.layers[0]

    @property
    def project(self) -> nn.Module:
        """The Linear layer (..., 4C) -> (..., C)."""
        return self.layers[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same function with GELU through `gelu_tanh_fused` (for a FeedForward whose middle
        layer is the course's GELU)."""
        return self.project(gelu_tanh_fused(self.expand(x)))


class ExampleDeepNeuralNetwork(nn.Module):
    """A stack of Linear+GELU layers, with or without shortcuts, to watch gradients vanish."""

    def __init__(self, layer_sizes: Sequence[int], use_shortcut: bool):
        super().__init__()
        sizes = list(layer_sizes)
        if len(sizes) < 2:
            raise ValueError(f"layer_sizes needs at least an input and an output size, got {sizes}")
        sizes = [require_positive_int(f"layer_sizes[{i}]", n) for i, n in enumerate(sizes)]
        self.use_shortcut = require_flag("use_shortcut", use_shortcut)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(n_in, n_out), GELU()) for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            out = layer(x)
            # A shortcut adds the input back, giving gradients a direct path to early layers.
            # It needs equal shapes, so a layer that changes the size goes without one.
            x = x + out if self.use_shortcut and out.shape == x.shape else out
        return x


def layer_gradients(model: ExampleDeepNeuralNetwork, x: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Backpropagate the MSE loss of model(x) against target; return each layer's mean |weight grad|."""
    if not isinstance(model, ExampleDeepNeuralNetwork):
        raise TypeError(f"model must be an ExampleDeepNeuralNetwork, got {type(model).__name__}")
    model.zero_grad(set_to_none=True)
    loss = F.mse_loss(model(x), target)
    loss.backward()
    # layers[i][0] is the Linear of layer i; its weight gradient shows how much that layer learns.
    return [layer[0].weight.grad.abs().mean().item() for layer in model.layers]


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        require_instance("cfg", cfg, GPTConfig)  # a GPTConfig has checked every size already
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim, d_out=cfg.emb_dim, context_length=cfg.context_length,
            dropout=cfg.drop_rate, num_heads=cfg.n_heads, qkv_bias=cfg.qkv_bias, fast=cfg.fast,
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim, fast=cfg.fast)
        self.norm2 = LayerNorm(cfg.emb_dim, fast=cfg.fast)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pre-LN: each branch reads a normalised copy, while the shortcut carries x itself
        # unchanged, so gradients reach early blocks undamaged.
        x = x + self.drop_shortcut(self.att(self.norm1(x)))  # (B, T, C): tokens talk to each other
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))   # (B, T, C): each token thinks alone
        return x
