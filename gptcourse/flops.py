"""Counting a GPT's floating-point operations three ways: thop, a formula, and FlopCounterMode.

A FLOP here is one multiply or one add. A multiply-accumulate (MAC, `a += x * w`) is 2 FLOPs.
Only matrix multiplications are counted: they are nearly all of the work, and elementwise ops
(softmax, GELU, LayerNorm, bias adds, residual adds) are left out by every method below.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .config import GPTConfig
from .model import GPTModel
from .validate import require_instance, require_int_in_range, require_positive_int


def _seq_len(cfg: GPTConfig, seq_len: int | None) -> int:
    require_instance("cfg", cfg, GPTConfig)
    T = cfg.context_length if seq_len is None else seq_len
    return require_int_in_range("seq_len", T, 1, cfg.context_length, "context_length")


# --- (2) the formula ---------------------------------------------------------------------------
def matmul_params(cfg: GPTConfig) -> int:
    """Weights that take part in a matmul for every token: 12·L·d² in the blocks + V·d in the head.

    This is PaLM's N. It leaves out the embedding lookups (no arithmetic), biases and LayerNorm.
    """
    L, d, V = cfg.n_layers, cfg.emb_dim, cfg.vocab_size
    return L * (4 * d * d + 8 * d * d) + V * d  # q, k, v, out (4·d²) and d -> 4d -> d (8·d²)


def flops_per_token_by_component(cfg: GPTConfig, seq_len: int | None = None) -> dict[str, int]:
    """Forward FLOPs per token, by part of the model, for sequences of `seq_len` tokens."""
    T = _seq_len(cfg, seq_len)
    L, d, V = cfg.n_layers, cfg.emb_dim, cfg.vocab_size
    return {
        # A (d_in x d_out) weight costs d_in·d_out MACs = 2·d_in·d_out FLOPs per token.
        "attention projections": L * 2 * 4 * d * d,
        # q·kᵀ against T keys and weights·v over T values: 2·T·d FLOPs each, all heads together.
        # Causal attention needs only half of them, but the convention (and PyTorch) counts all T.
        "attention scores": L * 4 * T * d,
        "feed-forward": L * 2 * 8 * d * d,
        "output head": 2 * V * d,
    }


def forward_flops_per_token(cfg: GPTConfig, seq_len: int | None = None) -> int:
    """Forward FLOPs per token: 2 x matmul_params + 4·L·T·d for attention."""
    return sum(flops_per_token_by_component(cfg, seq_len).values())


def training_flops_per_token(cfg: GPTConfig, seq_len: int | None = None) -> int:
    """Forward + backward FLOPs per token: 3 x forward (the backward pass computes gradients for
    both the inputs and the weights of every matmul: twice the forward work)."""
    return 3 * forward_flops_per_token(cfg, seq_len)


def forward_flops(cfg: GPTConfig, batch_size: int = 1, seq_len: int | None = None) -> int:
    """Forward FLOPs for a (batch_size, seq_len) batch, by formula."""
    B, T = require_positive_int("batch_size", batch_size), _seq_len(cfg, seq_len)
    return B * T * forward_flops_per_token(cfg, seq_len)


def training_flops(cfg: GPTConfig, batch_size: int = 1, seq_len: int | None = None) -> int:
    """Forward + backward FLOPs for a (batch_size, seq_len) batch, by formula."""
    return 3 * forward_flops(cfg, batch_size, seq_len)


# --- (3) PyTorch's FlopCounterMode ---------------------------------------------------------------
def flop_counter_flops(cfg: GPTConfig, batch_size: int = 1, seq_len: int | None = None,
                       training: bool = False, device: str = "meta") -> dict[str, int]:
    """Count FLOPs with torch.utils.flop_counter.FlopCounterMode while the model runs.

    On the "meta" device tensors have shapes but no values, so nothing is computed and even
    GPT-2 XL is counted in seconds. Returns {"total": ..., "aten.mm": ..., ...} (by operator).
    With fast=True on real CPU tensors, no dropout and more than SHORT_CONTEXT_ON_CPU tokens,
    F.scaled_dot_product_attention runs a fused kernel that FlopCounterMode has no formula for
    (torch 2.13), so the attention matmuls go uncounted. Shorter contexts on a CPU run batched
    matmuls, and on "meta" (or with dropout) SDPA falls back to plain matmuls: both are counted.
    """
    T, B = _seq_len(cfg, seq_len), require_positive_int("batch_size", batch_size)
    with torch.device(device):
        model = GPTModel(cfg)
    idx = torch.zeros(B, T, dtype=torch.long, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(idx)  # (B, T, V)
        if training:
            logits.float().mean().backward()
    counts = {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    return {"total": int(counter.get_total_flops()), **counts}


# --- (1) thop ------------------------------------------------------------------------------------
def _import_thop():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # thop imports distutils, which warns on import
            import thop
    except ImportError as exc:
        raise ImportError("thop is not installed: pip install thop (it is in the course's "
                          "dependencies)") from exc
    return thop


def thop_macs(model: nn.Module, idx: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) as thop.profile reports them for model(idx), without its printing.

    thop hooks nn.Module classes it has a rule for: here only nn.Linear (and nn.Dropout: zero).
    """
    thop = _import_thop()
    with contextlib.redirect_stdout(io.StringIO()):
        macs, params = thop.profile(model, inputs=(idx,), verbose=False)
    # thop leaves its counters behind as buffers on modules without a rule; remove them so the
    # model's state_dict is unchanged.
    for module in model.modules():
        for name in ("total_ops", "total_params"):
            module._buffers.pop(name, None)
    return int(macs), int(params)


def linear_layer_macs(model: nn.Module, n_tokens: int) -> int:
    """MACs of every nn.Linear for `n_tokens` tokens: n_tokens · in_features · out_features each."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return n_tokens * sum(m.in_features * m.out_features for m in linears)


def thop_flops(cfg: GPTConfig, batch_size: int = 1, seq_len: int | None = None,
               device: str = "meta") -> dict[str, int]:
    """thop's count for a (batch_size, seq_len) batch: {"macs", "flops" (= 2 x MACs), "params"}.

    thop only reads shapes, so on the meta device it gives the same numbers in a fraction of the time.
    """
    T, B = _seq_len(cfg, seq_len), require_positive_int("batch_size", batch_size)
    with torch.device(device):
        model = GPTModel(cfg)
    macs, params = thop_macs(model, torch.zeros(B, T, dtype=torch.long, device=device))
    return {"macs": macs, "flops": 2 * macs, "params": params}


# --- the three side by side ----------------------------------------------------------------------
@dataclass(frozen=True)
class FlopComparison:
    """Forward FLOPs of one batch counted three ways, plus what separates them."""

    cfg: GPTConfig
    batch_size: int
    seq_len: int
    thop_macs: int
    analytic: int
    flop_counter: int

    @property
    def thop_flops(self) -> int:
        return 2 * self.thop_macs

    @property
    def attention_matmuls(self) -> int:
        """FLOPs of q·kᵀ and weights·v: the matmuls that are functions, not nn.Modules."""
        return self.batch_size * self.seq_len * flops_per_token_by_component(self.cfg, self.seq_len)["attention scores"]

    def rows(self) -> list[tuple[str, int, str]]:
        """(method, FLOPs, why it differs from FlopCounterMode) for each way of counting."""
        thop_gap = self.flop_counter - self.thop_flops
        gap_note = ("misses exactly the attention matmuls q·kᵀ and weights·v" if thop_gap == self.attention_matmuls
                    else f"misses {thop_gap:,} FLOPs")
        analytic_note = ("equal to FlopCounterMode" if self.analytic == self.flop_counter
                         else f"differs from FlopCounterMode by {self.analytic - self.flop_counter:,}")
        return [
            ("thop (MACs)", self.thop_macs, "multiply-accumulates, not FLOPs: one MAC is 2 FLOPs"),
            ("thop x 2", self.thop_flops,
             f"{gap_note} ({thop_gap:,} FLOPs): thop only hooks nn.Linear modules and never sees "
             f"`@` inside forward; embeddings, LayerNorm, GELU and softmax get no rule"),
            ("formula", self.analytic, f"2·N·tokens + 4·L·T·d·tokens; {analytic_note}"),
            ("FlopCounterMode", self.flop_counter,
             "every matmul PyTorch ran (mm, addmm, bmm); elementwise ops are not counted"),
        ]

    def report(self) -> str:
        """The comparison as a small text table."""
        lines = [f"forward FLOPs, batch {self.batch_size} x {self.seq_len} tokens"]
        lines += [f"{name:<16} {value:>20,}  {note}" for name, value, note in self.rows()]
        return "\n".join(lines)


def compare_flop_counts(cfg: GPTConfig, batch_size: int = 1, seq_len: int | None = None) -> FlopComparison:
    """Count the forward FLOPs of one batch with thop, the formula and FlopCounterMode (on meta)."""
    T = _seq_len(cfg, seq_len)
    return FlopComparison(
        cfg=cfg, batch_size=batch_size, seq_len=T,
        thop_macs=thop_flops(cfg, batch_size, T)["macs"],
        analytic=forward_flops(cfg, batch_size, T),
        flop_counter=flop_counter_flops(cfg, batch_size, T)["total"],
    )
