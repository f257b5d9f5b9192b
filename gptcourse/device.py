"""Where and how the model runs: pick CUDA, then Apple's MPS, then the CPU; bf16 autocast on CUDA; torch.compile."""

from __future__ import annotations

import contextlib
import warnings

import torch

from .validate import CourseWarning

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


class CompileError(RuntimeError):
    """torch.compile could not build the model's kernels (on a CPU, most often: no C++ compiler)."""

    def __init__(self, message: str, short: str | None = None):
        super().__init__(message)
        self.short = short or message  # what failed, without the advice on what to do


# `gptcourse train` compiles by default when the run has at least this many steps to go. On the
# course's CPU recipe each compiled step saves a few percent, so the first, compiling step takes
# as long as some thousands of steps save (benchmarks/compile_payback.py measures both on your
# machine). On the course's test machine, quiet, the break-even came out between about 3,400 and
# 6,700 steps at 1 and 2 threads (the compile took 16 to 27 s): this leaves a margin for machines
# that compile more slowly or save less per step.
COMPILE_PAYS_BACK_FROM = 10_000


def choose_compile(flag: bool | None, steps_to_go: int) -> tuple[bool, str]:
    """Whether `gptcourse train` compiles, and why in a few words. flag True (--compile) or False
    (--no-compile) decides; None compiles when at least COMPILE_PAYS_BACK_FROM steps are to go."""
    if flag is not None:
        return flag, "--compile" if flag else "--no-compile"
    if steps_to_go >= COMPILE_PAYS_BACK_FROM:
        return True, (f"{steps_to_go} steps to go, at least the {COMPILE_PAYS_BACK_FROM} from which "
                      f"compiling pays back; --no-compile to refuse")
    return False, (f"{steps_to_go} steps to go, fewer than the {COMPILE_PAYS_BACK_FROM} from which "
                   f"compiling pays back; --compile to force")


def compile_for_training(module: torch.nn.Module, fall_back: bool = False) -> torch.nn.Module:
    """`module` through torch.compile, for the training steps only (train(compile_model=True)).

    The first call compiles: it takes tens of seconds, and on a CPU it needs a C++ compiler. Later
    steps run fused kernels and are faster, so compiling pays off on long runs. The parameters
    stay those of `module`: saving and generating use the model as it is, without compiling.
    fall_back=True: where it cannot compile, one CourseWarning, then `module` itself runs.
    """
    try:
        compiled = torch.compile(module)
    except RuntimeError as exc:  # e.g. a Python version that torch.compile does not support yet
        if fall_back:
            warnings.warn(f"torch.compile is not available here ({exc}): training without compiling",
                          CourseWarning, stacklevel=2)
            return module
        raise CompileError(f"torch.compile is not available here ({exc}); train without compiling "
                           f"(drop --compile, or compile_model=False)") from exc
    return _EagerIfCompileFails(compiled, module) if fall_back else compiled


class _EagerIfCompileFails:
    """Calls the compiled module; if it cannot be built here (on its first call), warns once and
    calls the module itself from then on. Other attributes are the module's (e.g. DDP's no_sync)."""

    def __init__(self, compiled: torch.nn.Module, module: torch.nn.Module):
        self.compiled, self.module = compiled, module

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                with explain_compile_errors():
                    return self.compiled(*args, **kwargs)
            except CompileError as exc:
                warnings.warn(f"{exc.short}: training without compiling", CourseWarning, stacklevel=2)
                self.compiled = None
        return self.module(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.module, name)


def _backend_failed(exc: Exception) -> bool:
    """Whether `exc` is torch.compile's backend failing. torch gives that error no public name:
    it lives in the private torch._dynamo, so a torch without it simply has no such failure."""
    try:
        from torch._dynamo.exc import BackendCompilerFailed  # loaded already if anything compiled
    except ImportError:
        return False
    return isinstance(exc, BackendCompilerFailed)


@contextlib.contextmanager
def explain_compile_errors():
    """Turn a failure inside torch.compile (raised on the first compiled call) into a CompileError."""
    try:
        yield
    except Exception as exc:
        if not _backend_failed(exc):
            raise
        inner = getattr(exc, "inner_exception", None) or exc
        detail = (str(inner).strip().splitlines() or [""])[0]
        short = f"torch.compile could not build the model ({type(inner).__name__}: {detail})"
        raise CompileError(
            f"{short}. On a CPU it needs a working C++ compiler (g++ or clang++): install one, or "
            f"train without compiling (drop --compile, or compile_model=False)", short) from exc
