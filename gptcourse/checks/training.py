"""Checkers for chapter 6's training exercises: one training step and the warm-up + cosine schedule."""

from __future__ import annotations

import copy
import math
import numbers

import torch

from ..config import GPTConfig
from ..loss import calc_loss_batch
from ..model import GPTModel
from ..optim import lr_at
from . import Check, close

TINY = GPTConfig(vocab_size=8, context_length=4, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.0)
CLIP = 0.05  # small, so clipping always changes these gradients


# --- one training step ---------------------------------------------------------------------------
def _step_variant(model, optimizer, x, y, grad_clip, *, zero_grad="before", backward=True,
                  clip="before_step", step=True) -> float:
    """A training step with one planted change (the defaults are the correct step)."""
    if zero_grad == "before":
        optimizer.zero_grad()
    loss = calc_loss_batch(model, x, y)
    if backward:
        loss.backward()
    if zero_grad == "after_backward":
        optimizer.zero_grad()
    if clip == "before_step":
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if step:
        optimizer.step()
    if clip == "after_step":
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    return loss.item()


STEP_MISTAKES = {
    "the gradients of the previous step were still there: call optimizer.zero_grad() at the start "
    "of each step (backward() adds to .grad, it does not overwrite it)": {"zero_grad": "never"},
    "the gradients were clipped after the update, too late to matter: clip after backward() and "
    "before optimizer.step()": {"clip": "after_step"},
    "the gradients were not clipped before the update: call "
    "torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) after backward() and before "
    "optimizer.step()": {"clip": "never"},
    "the weights did not change: call optimizer.step() after backward() (and clipping)": {"step": False},
    "the weights did not change and no gradients are left: call optimizer.zero_grad() first, then "
    "loss.backward(), then clip, then optimizer.step() (zero_grad after backward wipes the "
    "gradients)": {"zero_grad": "after_backward"},
}


def _run_steps(step_fn, model, batches) -> tuple[list, list[torch.Tensor]]:
    """Two steps with plain SGD (lr 1), so every update is exactly minus the gradient used.

    Returns the losses and the weights and gradients afterwards (a missing gradient counts as 0).
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    losses = [step_fn(model, optimizer, x, y, CLIP) for x, y in batches]
    state = [p.detach().clone() for p in model.parameters()]
    state += [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
              for p in model.parameters()]
    return losses, state


def _all_close(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> bool:
    return len(xs) == len(ys) and all(close(x, y, atol=1e-6) for x, y in zip(xs, ys))


def check_train_step(train_step) -> Check:
    """Check train_step(model, optimizer, x, y, grad_clip) -> loss as a float."""
    with Check("train_step", seed=0) as check:
        start = GPTModel(TINY)
        n = len(list(start.parameters()))
        gen = torch.Generator().manual_seed(1)
        batches = [(torch.randint(8, (2, 4), generator=gen), torch.randint(8, (2, 4), generator=gen))
                   for _ in range(2)]
        _, ref_state = _run_steps(_step_variant, copy.deepcopy(start), batches)

        def learner(model, optimizer, x, y, grad_clip):
            step = len(losses) + 1
            with torch.no_grad():  # the loss this step should return, on the learner's own weights
                expected_losses.append(calc_loss_batch(model, x, y).item())
            losses.append(check.call(f"train_step (step {step})", train_step, model, optimizer, x, y,
                                     grad_clip))
            with torch.no_grad():
                after_losses.append(calc_loss_batch(model, x, y).item())
            return losses[-1]

        losses: list = []
        expected_losses: list[float] = []
        after_losses: list[float] = []
        _, state = _run_steps(learner, copy.deepcopy(start), batches)
        if _all_close(state[:n], ref_state[:n]):
            check.ok("two steps change the weights exactly as zero_grad, backward, clip, step should")
        else:
            for message, changes in STEP_MISTAKES.items():
                variant = lambda *a, changes=changes: _step_variant(*a, **changes)  # noqa: E731
                if _all_close(state, _run_steps(variant, copy.deepcopy(start), batches)[1]):
                    check.fail(message)
                    break
            else:
                unchanged = _all_close(state[:n], [p.detach() for p in start.parameters()])
                check.fail("the weights did not change: a step is zero_grad, backward, clip, step"
                           if unchanged else
                           "the weights changed, but not as expected: zero_grad, loss = "
                           "calc_loss_batch(model, x, y), loss.backward(), clip, optimizer.step()")
        # Compared with the loss of the learner's own weights before each step, so that a wrong
        # first update is not blamed on the returned loss of the second.
        _check_returned_loss(check, losses, expected_losses, after_losses)
    return check


def _check_returned_loss(check: Check, losses: list, expected: list[float], after: list[float]) -> None:
    if any(isinstance(loss, torch.Tensor) for loss in losses):
        check.fail("train_step returned a tensor: return loss.item(), a plain float that holds "
                   "no graph (keeping graphs around for a log wastes memory)")
        return
    if not all(isinstance(loss, numbers.Real) for loss in losses):
        check.fail(f"train_step should return the loss as a float, got {type(losses[0]).__name__}")
        return
    if close(losses, expected):
        check.ok("the returned loss is the batch's loss before the update")
    elif close(losses, after):
        check.fail("train_step returned the loss after the update: return the loss computed on "
                   "(x, y) before optimizer.step()")
    else:
        check.fail(f"train_step returned {[round(v, 4) for v in losses]}, expected "
                   f"{[round(v, 4) for v in expected]}: return the loss computed on (x, y)")


# --- the learning-rate schedule -------------------------------------------------------------------
ARGS = {"max_lr": 1.0, "min_lr": 0.1, "warmup_iters": 10, "max_iters": 110}
STEPS = list(range(0, 131))


def _schedule(warmup="ref", decay="cosine", floor="min", start="warmup", clamp=True):
    """lr_at with one or more planted changes, for the same ARGS."""
    max_lr, min_lr, w, m = ARGS["max_lr"], ARGS["min_lr"], ARGS["warmup_iters"], ARGS["max_iters"]

    def fn(step):
        in_warmup = step <= w if warmup == "le" else step < w
        if in_warmup:
            return {"ref": max_lr * (step + 1) / w, "zero": max_lr * step / w, "le": max_lr * (step + 1) / w,
                    "plus_one": max_lr * (step + 1) / (w + 1)}[warmup]
        if step >= m and clamp:
            return min_lr if floor == "min" else 0.0
        progress = {"warmup": (step - w) / (m - w), "zero": step / m,
                    "over_max": (step - w) / m}[start]
        low = min_lr if floor == "min" else 0.0
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if decay == "cosine" else 1 - progress
        return low + shape * (max_lr - low)

    return [fn(s) for s in STEPS]


# Each planted change, described on its own; a learner's schedule may hold several at once.
SCHEDULE_CHANGES = {
    ("warmup", "le"): "off by one at the end of warm-up: with step <= warmup_iters the last warm-up "
        "step overshoots max_lr. Use step < warmup_iters, so step warmup_iters starts the cosine at max_lr",
    ("warmup", "zero"): "off by one in the warm-up: max_lr * step / warmup_iters starts at 0 (the "
        "first step learns nothing) and peaks one step late. Use (step + 1) / warmup_iters",
    ("warmup", "plus_one"): "off by one in the warm-up: (step + 1) / (warmup_iters + 1) never quite "
        "reaches max_lr. Use (step + 1) / warmup_iters",
    ("floor", "zero"): "the decay ends at 0, not at min_lr: "
        "min_lr + 0.5 * (1 + cos(pi * progress)) * (max_lr - min_lr)",
    ("start", "zero"): "the decay's progress should count from the end of warm-up: "
        "progress = (step - warmup_iters) / (max_iters - warmup_iters)",
    ("start", "over_max"): "the decay's progress is measured over max_iters, so it never reaches 1 "
        "and the rate never gets down to min_lr: divide by the length of the decay, "
        "progress = (step - warmup_iters) / (max_iters - warmup_iters)",
    ("decay", "linear"): "the decay is a straight line: use the cosine 0.5 * (1 + cos(pi * progress))",
    ("clamp", False): "after max_iters the learning rate rises again: return min_lr once step >= max_iters",
}
CORRECT = {"warmup": "ref", "decay": "cosine", "floor": "min", "start": "warmup", "clamp": True}
OPTIONS = {name: [correct, *(v for n, v in SCHEDULE_CHANGES if n == name)] for name, correct in CORRECT.items()}


def _schedule_mistakes():
    """Every combination of planted changes, fewest first: (the messages, the schedule)."""
    combos = [{}]
    for name, values in OPTIONS.items():
        combos = [c | ({name: v} if i else {}) for c in combos for i, v in enumerate(values)]
    for combo in sorted(combos, key=len)[1:]:
        yield [SCHEDULE_CHANGES[item] for item in combo.items()], _schedule(**combo)


def _schedule_property(values: list[float]) -> str | None:
    """A diagnosis from the shape of the schedule, for mistakes no planted change matches."""
    w, m, min_lr = ARGS["warmup_iters"], ARGS["max_iters"], ARGS["min_lr"]
    if min(values) < min_lr - 1e-6:
        return (f"the rate goes below min_lr = {min_lr} (down to {min(values):.4g}): the decay "
                f"should end at min_lr, not 0")
    if abs(values[m - 1] - min_lr) > 0.01 and values[m] <= values[m - 1]:
        return (f"at step {m - 1}, just before max_iters, the rate is {values[m - 1]:.4g}, not close "
                f"to min_lr = {min_lr}: the decay's progress should go from 0 at warmup_iters to 1 "
                f"at max_iters, (step - warmup_iters) / (max_iters - warmup_iters)")
    if abs(values[w] - ARGS["max_lr"]) > 1e-6:
        return (f"at step {w}, the end of warm-up, the rate is {values[w]:.4g}: the cosine should "
                f"start at max_lr = {ARGS['max_lr']}")
    return None


def _differing(value: float, expected: float) -> tuple[str, str]:
    """The two numbers with just enough digits to tell them apart."""
    for digits in range(4, 17):
        a, b = f"{value:.{digits}f}", f"{expected:.{digits}f}"
        if a != b:
            return a, b
    return repr(value), repr(expected)


def check_lr_schedule(get_lr) -> Check:
    """Check get_lr(step, max_lr, min_lr, warmup_iters, max_iters): linear warm-up, then cosine."""
    with Check("learning-rate schedule") as check:
        values = [check.call(f"get_lr({s}, ...)", get_lr, s, **ARGS) for s in STEPS]
        if not all(isinstance(v, numbers.Real) or (isinstance(v, torch.Tensor) and v.numel() == 1)
                   for v in values):
            check.stop(f"get_lr should return a number, got {type(values[0]).__name__}")
        values = [float(v) for v in values]
        reference = [lr_at(s, **ARGS) for s in STEPS]
        if close(values, reference):
            check.ok("warm-up: (step + 1) / warmup_iters of max_lr, reaching max_lr at step 9 of 10")
            check.ok("cosine decay from max_lr at the end of warm-up to min_lr at max_iters, "
                     "then min_lr")
        else:
            for messages, schedule in _schedule_mistakes():
                if close(values, schedule):
                    for message in messages:
                        check.fail(message)
                    break
            else:
                first = next(s for s, v, r in zip(STEPS, values, reference) if not close(v, r))
                got, want = _differing(values[first], reference[first])
                check.fail(_schedule_property(values) or f"get_lr({first}, max_lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110) "
                           f"gave {got}, expected {want}")
        lr = check.call("get_lr(0, 1.0, 0.1, warmup_iters=0, max_iters=10)", get_lr, 0, max_lr=1.0,
                        min_lr=0.1, warmup_iters=0, max_iters=10)
        check.expect(math.isclose(float(lr), 1.0, abs_tol=1e-6),
                     "without warm-up (warmup_iters=0) the schedule starts at max_lr",
                     f"with warmup_iters=0, step 0 should get max_lr = 1.0, got {float(lr):.4f}")
    return check
