"""The training checkers, tested three ways: the reference passes, a stub fails, each mistake is named."""

import math

import pytest
import torch

from gptcourse.checks.training import _step_variant, check_lr_schedule, check_train_step
from gptcourse.loss import calc_loss_batch
from gptcourse.optim import lr_at


# --- train_step ----------------------------------------------------------------------------------
def train_step(model, optimizer, x, y, grad_clip=1.0):
    optimizer.zero_grad()
    loss = calc_loss_batch(model, x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def planted(**changes):
    return lambda model, optimizer, x, y, grad_clip=1.0: _step_variant(model, optimizer, x, y,
                                                                       grad_clip, **changes)


def test_train_step_reference_passes():
    result = check_train_step(train_step)
    assert result.passed, result.problems


def test_train_step_zero_grad_at_the_end_also_passes():
    def tidy_at_the_end(model, optimizer, x, y, grad_clip=1.0):
        loss = calc_loss_batch(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        return loss.item()

    # The weights are right; only the gradients left behind differ, and they do not matter.
    assert check_train_step(tidy_at_the_end).passed


def test_train_step_stub_fails():
    def stub(model, optimizer, x, y, grad_clip=1.0):
        raise NotImplementedError

    result = check_train_step(stub)
    assert any("not written yet" in p for p in result.problems)


def without_zero_grad(model, optimizer, x, y, grad_clip=1.0):
    loss = calc_loss_batch(model, x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def returns_tensor(model, optimizer, x, y, grad_clip=1.0):
    optimizer.zero_grad()
    loss = calc_loss_batch(model, x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss


@pytest.mark.parametrize(
    "mistake, fragment",
    [
        (without_zero_grad, "call optimizer.zero_grad() at the start"),
        (planted(clip="never"), "were not clipped before the update"),
        (planted(clip="after_step"), "clipped after the update"),
        (planted(step=False), "call optimizer.step()"),
        (planted(zero_grad="after_backward"), "zero_grad after backward wipes"),
        (planted(backward=False), "no gradients are left"),
        (returns_tensor, "return loss.item()"),
    ],
)
def test_train_step_mistakes_are_diagnosed(mistake, fragment):
    result = check_train_step(mistake)
    assert not result.passed
    assert any(fragment in p for p in result.problems), result.problems


# --- the learning-rate schedule ------------------------------------------------------------------
def get_lr(step, max_lr, min_lr, warmup_iters, max_iters):
    if step < warmup_iters:
        return max_lr * (step + 1) / warmup_iters
    if step >= max_iters:
        return min_lr
    progress = (step - warmup_iters) / (max_iters - warmup_iters)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def schedule(*, le=False, warmup="ref", floor=True, from_warmup=True, cosine=True, clamp=True,
             over_max=False, zero_then_min=False, pi=math.pi):
    def fn(step, max_lr, min_lr, warmup_iters, max_iters):
        if (step <= warmup_iters) if le else (step < warmup_iters):
            if warmup == "zero":
                return max_lr * step / warmup_iters
            if warmup == "plus_one":
                return max_lr * (step + 1) / (warmup_iters + 1)
            return max_lr * (step + 1) / warmup_iters
        low = min_lr if floor else 0.0
        if clamp and step >= max_iters:
            return min_lr if zero_then_min else low
        progress = (step - warmup_iters) / (max_iters - warmup_iters) if from_warmup else step / max_iters
        if over_max:
            progress = (step - warmup_iters) / max_iters
        shape = 0.5 * (1 + math.cos(pi * progress)) if cosine else 1 - progress
        return low + shape * (max_lr - low)

    return fn


def test_lr_schedule_reference_passes():
    for fn in (get_lr, lr_at, schedule()):
        result = check_lr_schedule(fn)
        assert result.passed, result.problems


def test_lr_schedule_stub_fails():
    def stub(step, max_lr, min_lr, warmup_iters, max_iters):
        raise NotImplementedError

    assert any("not written yet" in p for p in check_lr_schedule(stub).problems)


@pytest.mark.parametrize(
    "mistake, fragment",
    [
        (schedule(le=True), "off by one at the end of warm-up"),
        (schedule(warmup="zero"), "starts at 0"),
        (schedule(warmup="plus_one"), "never quite reaches max_lr"),
        (schedule(floor=False), "ends at 0, not at min_lr"),
        (schedule(from_warmup=False), "count from the end of warm-up"),
        (schedule(cosine=False), "straight line"),
        (schedule(clamp=False), "rises again"),
        (lambda step, max_lr, min_lr, warmup_iters, max_iters: 0.5 * max_lr, "just before max_iters"),
        (schedule(over_max=True), "measured over max_iters"),
        (schedule(floor=False, zero_then_min=True), "goes below min_lr"),
        (lambda step, max_lr, min_lr, warmup_iters, max_iters: torch.ones(2), "should return a number"),
    ],
)
def test_lr_schedule_mistakes_are_diagnosed(mistake, fragment):
    result = check_lr_schedule(mistake)
    assert not result.passed
    assert any(fragment in p for p in result.problems), result.problems


def test_lr_schedule_several_mistakes_at_once_are_all_named():
    problems = check_lr_schedule(schedule(floor=False, from_warmup=False, le=True)).problems
    for fragment in ("ends at 0, not at min_lr", "count from the end of warm-up", "end of warm-up"):
        assert any(fragment in p for p in problems), problems


def test_lr_schedule_fallback_prints_enough_digits_to_differ():
    # pi rounded to 3.141 changes the rate only in the fourth or fifth decimal.
    problems = check_lr_schedule(schedule(pi=3.141)).problems
    assert len(problems) == 1, problems
    got, expected = problems[0].split(" gave ")[1].split(", expected ")
    assert got != expected and float(got) != float(expected), problems


def test_lr_schedule_with_a_different_but_correct_form_passes():
    def written_differently(step, max_lr, min_lr, warmup_iters, max_iters):
        if step < warmup_iters:
            return (step + 1) * max_lr / warmup_iters
        progress = min(1.0, (step - warmup_iters) / (max_iters - warmup_iters))
        return max_lr - (max_lr - min_lr) * (1 - math.cos(math.pi * progress)) / 2

    result = check_lr_schedule(written_differently)
    assert result.passed, result.problems


def loss_after_the_update(model, optimizer, x, y, grad_clip=1.0):
    train_step(model, optimizer, x, y, grad_clip)
    return calc_loss_batch(model, x, y).item()


def test_train_step_loss_after_the_update_is_named():
    result = check_train_step(loss_after_the_update)
    assert any("the loss after the update" in p for p in result.problems), result.problems


def test_train_step_wrong_first_update_does_not_blame_the_loss():
    calls = []

    def first_step_unclipped(model, optimizer, x, y, grad_clip=1.0):
        calls.append(1)
        return train_step(model, optimizer, x, y, 1e9 if len(calls) == 1 else grad_clip)

    result = check_train_step(first_step_unclipped)
    assert not result.passed
    assert not any("returned" in p for p in result.problems), result.problems
