"""Data parallelism with `torchrun`: many processes train one model, each on its share of every batch.

    torchrun --standalone --nproc_per_node=2 -m gptcourse train ...

torchrun starts the processes and tells each who it is through environment variables (RANK,
WORLD_SIZE, LOCAL_RANK). `setup` joins them into one process group, `wrap` puts the model in
DistributedDataParallel, which averages the gradients of all processes after each backward pass
(an all-reduce), so every process takes the same optimizer step. Without torchrun every function
here is a no-op: world size 1, rank 0, no process group.
"""

from __future__ import annotations

import math
import os
import re
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .validate import InputError

# How long a process waits for its peers in one collective before the job fails. A peer that
# dies is normally noticed at once (its connections close, and torchrun stops the job); this
# bound is for the rarer hang, such as a machine that drops off the network.
TIMEOUT_ENV = "GPTCOURSE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300

_quiet_stdout = None  # the devnull file that replaced sys.stdout on ranks other than 0


def launched_by_torchrun() -> bool:
    """True when this process was started by torchrun (it sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """True once `setup` has joined this process to a process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's number, 0 to world_size - 1 (0 without torchrun)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together (1 without torchrun)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0: the one process that prints, shows progress and writes files."""
    return rank() == 0


MAX_TIMEOUT_S = 30 * 24 * 3600  # 30 days: more is surely a typo, and overflows some clocks


def timeout() -> timedelta:
    """The bound on waiting for a peer: GPTCOURSE_DIST_TIMEOUT seconds (default 300)."""
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TIMEOUT_S:  # also refuses nan and inf
        raise InputError(f"{TIMEOUT_ENV} must be a number of seconds > 0 (at most "
                         f"{MAX_TIMEOUT_S}, 30 days), got {text!r}: set it to e.g. 300, or unset "
                         f"it for the default {DEFAULT_TIMEOUT_S}")
    return timedelta(seconds=seconds)


def _timeout_text() -> str:
    try:
        return f"{timeout().total_seconds():g} s"
    except InputError:
        return "the time"


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group (if launched by torchrun) and return this process's device.

    The backend follows the device: NCCL for CUDA GPUs (one GPU per process, LOCAL_RANK picks
    it), gloo for the CPU. On ranks other than 0, printing goes nowhere (errors still show).
    """
    global _quiet_stdout
    device = torch.device(device)
    if not launched_by_torchrun() or is_distributed():
        return device
    wait = timeout()  # checked before joining: a bad value is one line on every rank
    if device.type == "mps":
        raise InputError("torchrun with --device mps is not supported (no MPS backend for "
                         "DistributedDataParallel); use --device cpu")
    if device.type == "cuda":
        text = os.environ.get("LOCAL_RANK", "0")
        if not text.isdigit():
            raise InputError(f"LOCAL_RANK must be a process number such as 0, got {text!r}: "
                             f"start the job with torchrun, which sets it")
        local_rank = int(text)
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK {local_rank} has no GPU: this machine has "
                             f"{torch.cuda.device_count()}; start at most that many processes "
                             f"(--nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=wait)
    if rank() != 0:
        _quiet_stdout = open(os.devnull, "w")  # noqa: SIM115 (closed in teardown)
        sys.stdout = _quiet_stdout
    return device


def teardown() -> None:
    """Leave the process group (if any) and give this rank its printing back."""
    global _quiet_stdout
    if is_distributed():
        dist.destroy_process_group()
    if _quiet_stdout is not None:
        sys.stdout = sys.__stdout__
        _quiet_stdout.close()
        _quiet_stdout = None


def barrier() -> None:
    """Wait until every process gets here (returns at once without torchrun)."""
    if is_distributed():
        dist.barrier()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model in DistributedDataParallel when distributed; the model itself otherwise.

    DDP copies rank 0's weights to every process at the start, then averages the gradients.
    """
    if not is_distributed():
        return model
    device = torch.device(device)
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def peer_failure_message(error: BaseException) -> str | None:
    """A one-line explanation if `error` means another process of the job died or hung, else None."""
    text = str(error)
    lost = isinstance(error, dist.DistError) or any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer",
                                  "Broken pipe", "Timed out", "timed out", "Timeout"))
    if not (is_distributed() and isinstance(error, RuntimeError) and lost):
        return None
    # gloo starts with the C++ source line ("[.../pair.cc:553] "); keep the first sentence after it.
    reason = re.sub(r"^\[[^\]]*\]\s*", "", text.strip()).split(". ")[0][:120] or type(error).__name__
    return (f"rank {rank()} lost contact with another process of this job ({reason}): a process "
            f"stopped (torchrun's report names it) or did not answer within "
            f"{_timeout_text()} ({TIMEOUT_ENV}). Continue from the last checkpoint: "
            f"the same command with --resume.")


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The average of a tensor over all processes (the tensor itself without torchrun)."""
    if not is_distributed():
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)  # gloo has no AVG, so sum and divide
    return total / world_size()
