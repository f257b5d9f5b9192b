"""Training loops: `train_simple` (chapters 2-4: AdamW on random batches) and `train` (chapter 6:
warm-up + cosine learning rate, gradient clipping, evaluation, and a state to resume from).

Both loops stay in this one module (a little over 300 lines) so that chapter 6's loop reads as
chapter 2's with its additions, beside the settings and the state it saves.

    settings = TrainSettings(max_iters=600)
    state = train(model, train_ids, val_ids, settings)
    plot_losses(state.history)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import distributed
from .config import described, replace_fields
from .data import batch_sampler
from .device import autocast, compile_for_training, explain_compile_errors
from .loss import calc_loss_batch, estimate_loss
from .optim import fused_where_possible, lr_schedule, make_optimizer
from .progress import progress_bar
from .validate import (
    require_flag,
    require_instance,
    require_int,
    require_number,
    require_optional_int,
    require_positive_int,
    require_positive_number,
    require_probability,
)


# --- the simple loop of chapters 2-4 -----------------------------------------------------------
def train_simple(
    model: torch.nn.Module,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    *,
    steps: int,
    block_size: int,
    batch_size: int,
    lr: float = 1e-3,
    eval_interval: int = 100,
    eval_iters: int = 20,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, list]:
    """Train with AdamW on random batches and return the history for plotting.

    history["step"], ["train"], ["val"] hold the estimated losses every `eval_interval` steps
    (and at the end); history["batch_loss"] holds the loss of every training batch.
    """
    require_positive_int("steps", steps)
    require_positive_int("eval_interval", eval_interval)
    require_positive_int("eval_iters", eval_iters)
    require_positive_number("lr", lr)
    # Separate generators keep training batches the same however often we evaluate.
    batch_gen = torch.Generator().manual_seed(seed)
    eval_gen = torch.Generator().manual_seed(seed + 1)
    model.to(device)
    # The loop of chapter 2 with PyTorch's fused AdamW: the same update (up to float rounding) in
    # one pass over all parameters, instead of a dozen small operations per parameter tensor.
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, **fused_where_possible(model))
    history: dict[str, list] = {"step": [], "train": [], "val": [], "batch_loss": []}
    splits = {"train": train_data, "val": val_data}
    draw = batch_sampler(train_data, block_size, batch_size, device=device, generator=batch_gen)
    model.train()
    bar = progress_bar(range(steps), desc="training", disable=not progress, leave=False)
    for step in bar:
        if step % eval_interval == 0:
            _record(history, step, estimate_loss(model, splits, block_size, batch_size, eval_iters,
                                                 eval_gen, device))
        loss = calc_loss_batch(model, *draw())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history["batch_loss"].append(loss.item())
        # refresh=False: let tqdm redraw at its own rate, not on every step (3,000 widget updates
        # flood a notebook's output channel, slow training and time out nbval under load).
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    _record(history, steps, estimate_loss(model, splits, block_size, batch_size, eval_iters,
                                          eval_gen, device))
    model.eval()
    return history


def _record(history: dict[str, list], step: int, losses: dict[str, float]) -> None:
    history["step"].append(step)
    history["train"].append(losses["train"])
    history["val"].append(losses["val"])


# --- the full loop of chapter 6 ------------------------------------------------------------------
HISTORY_KEYS = ("step", "train", "val", "batch_loss", "lr")


@dataclass(frozen=True)
class TrainSettings:
    """How to train (the model's sizes live in GPTConfig). The defaults are the course's CPU recipe,
    found by benchmarks/time_to_quality.py for the "cpu-small" model on Tiny Shakespeare."""

    # described() gives each field its help text: also its line in `gptcourse train --help`.
    max_iters: int = described(800, "optimizer steps in the whole run (the schedule ends here)",
                               flag=True)
    batch_size: int = described(16, "windows of text per step", flag=True)
    block_size: int | None = described(None, "tokens per window (None: the model's context_length)")
    lr: float = described(4e-3, "peak learning rate, reached after the warm-up", flag=True)
    min_lr: float = described(1e-4, "learning rate at the end of the cosine decay", flag=True)
    warmup_iters: int = described(50, "steps of linear learning-rate warm-up", flag=True)
    weight_decay: float = described(0.1, "AdamW weight decay (weight matrices only)", flag=True)
    # 0.8, not the usual 0.9: Adam then averages about 1 / (1 - beta1) = 5 recent gradients, not
    # 10, so a short run reacts sooner.
    beta1: float = described(0.8, "Adam's momentum: how much of the past gradients each step keeps",
                             flag=True)
    beta2: float = described(0.99, "Adam's memory of the squared gradients", flag=True)
    grad_clip: float = described(1.0, "largest allowed gradient norm (0: no clipping)", flag=True)
    eval_interval: int = described(250, "estimate the train/val loss every N steps (and at the end)",
                                   flag=True)
    eval_iters: int = described(10, "batches per split for each loss estimate", flag=True)
    seed: int = described(1337, "random seed for the batch order (gptcourse train seeds the "
                                "initial weights with it too)", flag=True)

    def __post_init__(self) -> None:
        for name in ("max_iters", "batch_size", "eval_interval", "eval_iters"):
            require_positive_int(name, getattr(self, name))
        require_int("warmup_iters", self.warmup_iters, low=0)
        require_int("seed", self.seed, low=0)
        require_optional_int("block_size", self.block_size, low=1, hint=" (None: the model's context_length)")
        require_positive_number("lr", self.lr)
        for name in ("min_lr", "weight_decay", "grad_clip"):
            require_number(name, getattr(self, name), low=0)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not be larger than lr ({self.lr})")
        if self.warmup_iters > self.max_iters:
            raise ValueError(f"warmup_iters ({self.warmup_iters}) must not exceed max_iters "
                             f"({self.max_iters})")
        for name in ("beta1", "beta2"):
            require_probability(name, getattr(self, name))

    def replace(self, **changes) -> TrainSettings:
        """A copy with some fields changed (and checked again)."""
        return replace_fields(self, "training setting(s)", **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def new_history() -> dict[str, list[float]]:
    return {key: [] for key in HISTORY_KEYS}


@dataclass
class TrainState:
    """Everything besides the model's weights that a run needs to go on exactly where it stopped."""

    optimizer: torch.optim.Optimizer
    batch_gen: torch.Generator     # draws the training batches
    eval_gen: torch.Generator      # draws the evaluation batches (separate, so evaluating
                                   # more or less often never changes the training batches)
    step: int = 0                  # optimizer steps done so far
    history: dict[str, list[float]] = field(default_factory=new_history)


def new_state(model: torch.nn.Module, settings: TrainSettings) -> TrainState:
    """A fresh run: AdamW over the model's parameters (put the model on its device first)."""
    optimizer = make_optimizer(model, settings.lr, settings.weight_decay,
                               (settings.beta1, settings.beta2))
    return TrainState(optimizer=optimizer,
                      batch_gen=torch.Generator().manual_seed(settings.seed),
                      eval_gen=torch.Generator().manual_seed(settings.seed + 1))


def train(
    model: torch.nn.Module,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    settings: TrainSettings | None = None,
    *,
    state: TrainState | None = None,
    device: str | torch.device = "cpu",
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    on_step: Callable[[TrainState], None] | None = None,
    progress: bool = True,
    grad_accum: int = 1,
    compile_model: bool = False,
    compile_fallback: bool = False,
) -> TrainState:
    """Train `model` until `settings.max_iters` steps are done; return the state with its history.

    Pass `state` (from a checkpoint) to continue a run. `on_checkpoint(state)` is called every
    `checkpoint_every` steps and at the end; `on_step(state)` after every step. Each step's
    `settings.batch_size` windows are split in `grad_accum` micro-batches (less memory, same step),
    and under torchrun among the processes (see `gptcourse.distributed`): only rank 0 shows
    progress and calls `on_checkpoint`, and the model trained is the same as in one process.
    compile_model=True runs the training steps through torch.compile (see
    `gptcourse.device.compile_for_training`): a slow first step, then faster ones. Where it
    cannot compile, it raises CompileError, or with compile_fallback=True warns and goes on uncompiled.
    """
    settings = settings or TrainSettings()
    require_instance("settings", settings, TrainSettings)
    require_int("checkpoint_every", checkpoint_every, low=0)
    require_flag("compile_model", compile_model)
    require_flag("compile_fallback", compile_fallback)
    micro_batch = micro_batch_size(settings.batch_size, require_positive_int("grad_accum", grad_accum))
    cfg = getattr(model, "cfg", None)
    if settings.block_size is None and cfg is None:
        raise ValueError("settings.block_size is needed for a model without a .cfg "
                         "(TrainSettings(block_size=...))")
    block_size = settings.block_size or cfg.context_length
    if cfg is not None and block_size > cfg.context_length:
        raise ValueError(f"settings.block_size={block_size} is larger than the model's context_length="
                         f"{cfg.context_length}: use block_size <= {cfg.context_length} "
                         f"(None: the model's context_length)")
    device = torch.device(device)
    model.to(device)
    trainer = distributed.wrap(model, device)  # the model itself without torchrun
    if compile_model:
        trainer = compile_for_training(trainer, compile_fallback)  # evaluation: the model as it is
    main_process = distributed.is_main_process()
    state = state or new_state(model, settings)
    splits = {"train": train_data, "val": val_data}
    history = state.history

    def evaluate() -> None:
        with autocast(device):
            losses = estimate_loss(model, splits, block_size, settings.batch_size,
                                   settings.eval_iters, state.eval_gen, device)
        history["step"].append(state.step)
        history["train"].append(losses["train"])
        history["val"].append(losses["val"])

    # The settings were checked when they were made: check the data once, then trust both.
    draw = batch_sampler(train_data, block_size, settings.batch_size, generator=state.batch_gen)
    schedule = lr_schedule(settings.lr, settings.min_lr, settings.warmup_iters, settings.max_iters)
    model.train()
    bar = progress_bar(range(state.step, settings.max_iters), initial=state.step, total=settings.max_iters,
               desc="training", disable=not (progress and main_process))
    for step in bar:
        if step % settings.eval_interval == 0 and (not history["step"] or history["step"][-1] != step):
            evaluate()
        lr = schedule(step)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        # Every process draws the same whole batch and keeps its own share of it, so the batches
        # (and the generator's state in a checkpoint) do not depend on the number of processes.
        x, y = draw()
        share = slice(distributed.rank() * micro_batch * grad_accum,
                      (distributed.rank() + 1) * micro_batch * grad_accum)
        state.optimizer.zero_grad(set_to_none=True)  # forget the previous step's gradients
        with explain_compile_errors():  # a compiled model compiles on its first step
            loss = _accumulate_gradients(trainer, x[share].to(device), y[share].to(device), grad_accum,
                                         device)
        if settings.grad_clip > 0:
            # One unlucky batch must not throw the weights far away: cap the gradient's length.
            # foreach: one pass over all gradients at once, not one small norm per tensor.
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip, foreach=True)
        state.optimizer.step()
        state.step = step + 1
        history["batch_loss"].append(loss.item())  # the whole batch's, over all processes
        history["lr"].append(lr)
        bar.set_postfix(loss=f"{history['batch_loss'][-1]:.3f}", refresh=False)
        if on_step is not None:
            on_step(state)
        if (on_checkpoint is not None and checkpoint_every and state.step % checkpoint_every == 0
                and state.step < settings.max_iters):
            _checkpoint_on_main(on_checkpoint, state)
    bar.close()
    if not history["step"] or history["step"][-1] != state.step:
        evaluate()
    if on_checkpoint is not None:
        _checkpoint_on_main(on_checkpoint, state)
    model.eval()
    return state


def micro_batch_size(batch_size: int, grad_accum: int) -> int:
    """Windows per forward pass: the batch shared among the processes and the accumulation steps."""
    parts = distributed.world_size() * grad_accum
    if batch_size % parts:
        raise ValueError(
            f"batch_size ({batch_size}) must be divisible by processes x grad_accum "
            f"({distributed.world_size()} x {grad_accum} = {parts}): every forward pass takes an "
            f"equal share of the batch. Choose a batch_size that is a multiple of {parts}, or "
            f"fewer processes or accumulation steps")
    return batch_size // parts


def _accumulate_gradients(trainer: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                          grad_accum: int, device: torch.device) -> torch.Tensor:
    """Backward over this process's share in `grad_accum` micro-batches; return the whole batch's loss.

    Each micro-batch's loss is divided by grad_accum, so the summed gradient is the gradient of
    the mean loss over the share; DDP then averages the shares, which gives the whole batch's.
    """
    total = torch.zeros((), device=device)
    for x_micro, y_micro, last in zip(x.chunk(grad_accum), y.chunk(grad_accum),
                                      [False] * (grad_accum - 1) + [True]):
        # DDP's all-reduce is only needed once per step: skip it on all but the last micro-batch.
        skip_sync = not last and hasattr(trainer, "no_sync")
        with trainer.no_sync() if skip_sync else contextlib.nullcontext():
            with autocast(device):
                loss = calc_loss_batch(trainer, x_micro, y_micro) / grad_accum
            loss.backward()
        total += loss.detach()
    return distributed.mean_over_processes(total)


def _checkpoint_on_main(on_checkpoint: Callable[[TrainState], None], state: TrainState) -> None:
    """Rank 0 writes; the other processes wait for it, so none runs ahead of the saved state."""
    if distributed.is_main_process():
        on_checkpoint(state)
    distributed.barrier()
