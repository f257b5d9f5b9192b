"""Model FLOPs utilisation (MFU): the share of the hardware's peak that training really uses.

    MFU = (training tokens per second x training FLOPs per token) / peak FLOP/s

The FLOPs per token come from the formula in `gptcourse.flops` (6·N + 12·L·T·d), not from what
the hardware executed, so recomputation or wasted work never makes MFU look better.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import MultiHeadAttention
from .optim import make_optimizer
from .validate import require_int, require_positive_int, require_positive_number

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# Dense (no sparsity) peaks from the vendors' data sheets, in TFLOP/s: half precision on tensor
# cores (bf16, or fp16 where the chip has no bf16), and plain fp32. PyTorch runs fp32 matmuls
# without TF32 by default; after torch.set_float32_matmul_precision("high") pass peak_tflops.
# Checked in order: the first pattern found in the device name wins.
GPU_PEAK_TFLOPS: list[tuple[str, str, float, float]] = [
    # (pattern, name, bf16, fp32)
    (r"H100.*PCIe", "H100 PCIe", 756.0, 51.2),
    (r"H100|H200", "H100/H200 SXM", 989.4, 66.9),
    (r"A100", "A100", 312.0, 19.5),
    (r"A10G", "A10G", 125.0, 31.2),
    (r"\bL4\b", "L4", 121.0, 30.3),
    (r"RTX 4090", "RTX 4090", 165.2, 82.6),
    (r"\bT4\b", "T4 (fp16; no bf16 tensor cores)", 65.0, 8.1),
]


@dataclass(frozen=True)
class Peak:
    """A peak FLOP/s and where the number came from."""

    flops: float
    source: str


def _dtype_name(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return dtype


def gpu_peak(device_name: str, dtype: str = "bf16") -> Peak:
    """The data-sheet peak of a GPU, found by its name (torch.cuda.get_device_name())."""
    _dtype_name(dtype)
    for pattern, name, bf16, fp32 in GPU_PEAK_TFLOPS:
        if re.search(pattern, device_name):
            tflops = bf16 if dtype == "bf16" else fp32
            return Peak(tflops * 1e12, f"{name} {dtype} data-sheet peak")
    known = ", ".join(name for _, name, _, _ in GPU_PEAK_TFLOPS)
    raise ValueError(f"no peak known for GPU {device_name!r} (known: {known}); pass peak_tflops= "
                     f"from its data sheet (dense {dtype})")


def measure_matmul_flops(device: str | torch.device = "cpu", dtype: str = "fp32", n: int = 1024,
                         repeats: int = 10) -> float:
    """The best FLOP/s of an (n x n) @ (n x n) matmul on this device: a practical peak."""
    device, torch_dtype = torch.device(device), DTYPES[_dtype_name(dtype)]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, torch_dtype)
    b = torch.randn(n, n, generator=gen).to(device, torch_dtype)
    best = float("inf")
    for i in range(repeats + 2):  # the first two are warm-up
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best  # n² outputs, each n multiply-adds


def peak_flops(device: str | torch.device = "cpu", dtype: str = "fp32",
               peak_tflops: float | None = None) -> Peak:
    """The peak to divide by: peak_tflops if given, the data sheet for a known GPU, else measured."""
    device = torch.device(device)
    if peak_tflops is not None:
        peak_tflops = require_positive_number("peak_tflops", peak_tflops)
        return Peak(peak_tflops * 1e12, "given peak_tflops")
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device), dtype)
    # No data sheet for "this CPU": measure what a large matmul reaches, so CPU MFU is honest.
    return Peak(measure_matmul_flops(device, dtype), f"measured {dtype} matmul on {device.type}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def attention_path(model: nn.Module) -> str:
    """Which attention the model runs: "scaled_dot_product_attention" (the fused path; on a CPU
    up to SHORT_CONTEXT_ON_CPU tokens that is batched matmuls) or "manual"."""
    paths = {m.fast for m in model.modules() if isinstance(m, MultiHeadAttention)}
    if not paths:
        return "none"
    return "scaled_dot_product_attention" if paths == {True} else "manual" if paths == {False} else "mixed"


@dataclass(frozen=True)
class Throughput:
    """Tokens per second of timed training steps (warm-up steps excluded)."""

    tokens_per_s: float
    step_times: list[float]
    tokens_per_step: int


def measure_training_throughput(model: nn.Module, batch_size: int, seq_len: int, steps: int = 10,
                                warmup: int = 3, dtype: str = "fp32", lr: float = 3e-4,
                                seed: int = 0) -> Throughput:
    """Run warm-up and timed training steps (the course's AdamW, gptcourse.optim) on random token
    batches; return tokens per second.

    The model is trained in place (its weights change). bf16 uses autocast (fp32 weights,
    bf16 matmuls), the usual mixed-precision set-up.
    """
    require_positive_int("steps", steps)
    require_int("warmup", warmup, low=0)
    device = next(model.parameters()).device
    vocab_size = model.cfg.vocab_size
    gen = torch.Generator().manual_seed(seed)
    # Make all batches first: only the model's work is timed.
    xs = torch.randint(vocab_size, (warmup + steps, batch_size, seq_len + 1), generator=gen).to(device)
    optimizer = make_optimizer(model, lr)  # the course's: fused AdamW where PyTorch has it
    autocast = torch.autocast(device.type, dtype=DTYPES[_dtype_name(dtype)], enabled=dtype != "fp32")
    model.train()
    times = []
    for i in range(warmup + steps):
        x, y = xs[i, :, :-1], xs[i, :, 1:]  # (B, T) inputs, (B, T) next-token targets
        _sync(device)
        start = time.perf_counter()
        with autocast:
            logits = model(x)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    tokens = batch_size * seq_len
    return Throughput(tokens * steps / sum(times), times, tokens)


def mfu(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s (tokens/s x FLOPs per token) / peak FLOP/s."""
    if peak <= 0:
        raise ValueError(f"peak must be > 0 FLOP/s, got {peak}")
    return tokens_per_s * flops_per_token / peak
