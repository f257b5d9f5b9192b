"""Where the model runs: pick CUDA, then Apple's MPS, then the CPU, and use bf16 autocast on CUDA."""

from __future__ import annotations

import contextlib

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """The device to train on: "auto" takes CUDA if present, else MPS, else the CPU.

    Any other name ("cpu", "cuda", "cuda:1", "mps") is checked to exist, with a clear error if not.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {name!r}")
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is not a device name; use one of {DEVICE_CHOICES}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but this PyTorch sees no CUDA GPU; "
                         "use --device auto (or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} does not exist: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s), numbered from 0")
    if device.type == "mps" and not _mps_available():
        raise ValueError("device 'mps' was asked for, but MPS (Apple GPU) is not available here; "
                         "use --device auto (or cpu)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r} is not supported; use one of {DEVICE_CHOICES}")
    return device


def autocast(device: str | torch.device) -> contextlib.AbstractContextManager:
    """bf16 mixed precision on CUDA (matrix products in bf16, weights stay fp32); elsewhere nothing.

    On CPU and MPS bf16 is often slower or less well supported, so we keep full fp32 there.
    """
    if torch.device(device).type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
