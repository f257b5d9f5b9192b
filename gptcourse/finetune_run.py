"""The fine-tuning run behind `gptcourse finetune`: its steps, its saved state, and resuming it.

A run folder holds three files, each written whole or not at all (gptcourse/atomic.py):

- `adapter.pt` (LoRA) or `ckpt.pt` (full fine-tuning): the result, for `gptcourse chat` or `sample`;
- `state.pt`: what resuming needs: the trained weights, AdamW's state, the step, the random
  state and the loss history, read back with torch.load(weights_only=True);
- `losses.json`: the loss history, to plot.

The batch of step k depends only on k and the seed (a fresh shuffle per epoch), so a resumed run
sees exactly the batches an uninterrupted one would, and computes exactly the same losses.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import torch_save_atomically, write_atomically
from .checkpoint import CHECKSUM_KEY, CheckpointError, payload_checksum
from .finetune import collate, masked_loss, response_loss
from .progress import progress_bar
from .run_folder import describe_os_error

STATE_NAME, ADAPTER_NAME, LOSSES_NAME = "state.pt", "adapter.pt", "losses.json"
STATE_FORMAT = "gptcourse-finetune-state"
STATE_VERSION = 1
GRAD_CLIP = 1.0  # largest gradient norm: one odd batch cannot throw the pretrained weights far


class FinetuneStateError(CheckpointError):
    """A state file that cannot be resumed: missing parts, damaged, or from another kind of run."""


@dataclass
class RunState:
    """Where a run stands: steps done and planned, the loss history, and the run's settings."""

    settings: dict
    steps: int
    step: int = 0
    history: dict = field(default_factory=lambda: {"step": [], "train": [], "val_step": [], "val": []})


def fit_to_window(prompt: list[int], response: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Cut a long prompt to its last tokens so that the response (or its start) fits in max_length.

    Generation crops a long prompt the same way (it keeps the last context_length tokens), so
    the model learns from what it will see. At least half the window stays prompt.
    """
    if len(prompt) + len(response) - 1 <= max_length:
        return prompt, response
    keep = max(max_length // 2, max_length + 1 - len(response), 1)
    return prompt[-keep:], response  # collate cuts what is left of the response beyond the window


def batch_for_step(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """The rows of step `step`: epoch e is a shuffle seeded by seed + e, read batch by batch."""
    per_epoch = math.ceil(n / batch_size)
    epoch, i = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    return order[i * batch_size:(i + 1) * batch_size].tolist()


def trainable_state(model: torch.nn.Module, full: bool) -> dict[str, torch.Tensor]:
    """The weights a run changes: every weight (full), or the LoRA A and B matrices."""
    if full:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {k: p.detach().cpu().clone() for k, p in model.named_parameters() if p.requires_grad}


def restore_trainable(model: torch.nn.Module, saved: dict, full: bool, path: Path) -> None:
    """Put a state file's trained weights back, after checking that they fit the model."""
    own = trainable_state(model, full)
    wrong = sorted(set(own) ^ set(saved)) or [k for k in own if saved[k].shape != own[k].shape]
    if wrong:
        raise FinetuneStateError(f"{path} holds weights that do not fit this run's model ({wrong[0]!r}): "
                                 f"the file is from another run; start again with --force")
    if full:
        model.load_state_dict(saved)
        return
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in saved:
                param.copy_(saved[name])


def save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, run: RunState,
               extra: dict | None = None) -> None:
    """Write state.pt atomically, with a sha256 of its contents (a damaged copy is noticed)."""
    payload = {"format": STATE_FORMAT, "version": STATE_VERSION, "settings": run.settings,
               "steps": run.steps, "step": run.step, "history": run.history,
               "trainable": trainable_state(model, run.settings["mode"] == "full"),
               "optimizer": optimizer.state_dict(),
               "rng": {"torch": torch.get_rng_state(),
                       "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
               "extra": dict(extra or {})}
    payload[CHECKSUM_KEY] = payload_checksum(payload)
    try:
        torch_save_atomically(payload, path)
    except (OSError, RuntimeError) as exc:
        reason = describe_os_error(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        kept = f"the last good {path.name} is intact" if path.is_file() else "nothing was saved yet"
        raise FinetuneStateError(f"could not save {path}: {reason}; {kept}") from exc
    history = {"settings": run.settings, **run.history}
    write_atomically(path.with_name(LOSSES_NAME), lambda f: f.write(json.dumps(history, indent=1).encode()))


def read_state(path: Path) -> dict:
    """A state file's contents, read safely and checked against its stored sha256."""
    fix = "delete it to start again (or add --force), or choose another --out"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # cut short, garbage, or pickled objects that weights_only refuses
        raise FinetuneStateError(f"{path} could not be read ({type(exc).__name__}): it is damaged or "
                                 f"not a gptcourse fine-tuning state; {fix}") from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise FinetuneStateError(f"{path} is not a gptcourse fine-tuning state (no '{STATE_FORMAT}' "
                                 f"marker); {fix}")
    if payload.get("version") != STATE_VERSION:
        raise FinetuneStateError(f"{path} has state format version {payload.get('version')!r}; this "
                                 f"gptcourse reads version {STATE_VERSION}; {fix}")
    if payload.get(CHECKSUM_KEY) != payload_checksum(payload):
        raise FinetuneStateError(f"{path} is damaged: its contents do not match the checksum stored "
                                 f"when it was saved; {fix}")
    return payload


def resume_from(payload: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                run: RunState, path: Path) -> None:
    """Restore the weights, AdamW, the step, the history and the random state of a saved run."""
    restore_trainable(model, payload["trainable"], run.settings["mode"] == "full", path)
    try:
        optimizer.load_state_dict(payload["optimizer"])
    except (ValueError, KeyError) as exc:
        raise FinetuneStateError(f"{path} holds an optimizer state that does not fit this model "
                                 f"({exc}); start again with --force") from None
    run.step = int(payload["step"])
    run.history = {k: list(v) for k, v in payload["history"].items()}
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])  # dropout masks continue where they stopped
    if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.AdamW:
    """AdamW on the trainable weights only, without weight decay: a short run from a good start
    has little to regularise, and a frozen weight must not decay either."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)


def run_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, run: RunState,
              train_pairs: Sequence, val_loader, pad_id: int, eval_every: int,
              save: Callable[[RunState], None], progress: bool = True,
              on_step: Callable[[int], None] | None = None) -> float:
    """Train from run.step to run.steps; validate and save at step 0, every eval_every steps and
    at the end. Returns the seconds per training step."""
    s = run.settings
    device = next(model.parameters()).device

    def validate() -> None:
        if run.step not in run.history["val_step"]:
            run.history["val_step"].append(run.step)
            run.history["val"].append(response_loss(model, val_loader))
            save(run)

    validate()
    trainable = [p for p in model.parameters() if p.requires_grad]
    bar = progress_bar(total=run.steps, initial=run.step, desc="fine-tuning", disable=not progress)
    seconds, first = 0.0, run.step  # time in training steps only (not validating or saving)
    model.train()
    try:
        while run.step < run.steps:
            started = time.perf_counter()
            rows = batch_for_step(run.step, len(train_pairs), s["batch_size"], s["seed"])
            inputs, targets = collate([train_pairs[i] for i in rows], pad_id, max_length=s["max_length"])
            loss = masked_loss(model, (inputs.to(device), targets.to(device)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
            optimizer.step()
            run.step += 1
            seconds += time.perf_counter() - started
            run.history["step"].append(run.step)
            run.history["train"].append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if on_step is not None:
                on_step(run.step)
            if run.step == run.steps:
                bar.close()  # done training: the bar stops its clock before the last validation
            if run.step % eval_every == 0 or run.step == run.steps:
                validate()
                model.train()
    finally:
        bar.close()
        model.eval()
    return seconds / max(run.step - first, 1)
