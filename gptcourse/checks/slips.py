"""Judging a "predict, then measure" answer: the right number, or the slip that explains a wrong one.

A slip is (diagnosis, the number it gives, the relative tolerance to match it). Each question in
checks/predictions.py lists its own slips; `unit_slips` adds the slips of unit, scale and sign
that any prediction of a count, a size or a loss can make.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from . import Check, as_number


def read_prediction(check: Check, prediction_fn: Callable, name: str) -> float:
    value = check.call(f"{name}()", prediction_fn)
    number = as_number(value)
    if number is None:
        check.stop(f"{name}() should return your prediction as a number, got {type(value).__name__}")
    return float(number)


# A slip: the diagnosis, the number it gives, and how close a prediction must be to it.
Slip = tuple[str, float, float]
SCALED = 0.01  # a prediction given in thousands or millions is usually rounded: allow 1%


def unit_slips(actual: float, kind: str) -> list[Slip]:
    """Slips of unit or scale any prediction of this kind can make."""
    slips: list[Slip] = []
    if kind in ("count", "bytes") and actual >= 1e4:
        slips.append(("that is the count in thousands: give the plain number (1,000 times more)",
                      actual / 1e3, SCALED))
    if kind == "count" and actual >= 1e6:
        slips.append(("that is the count in millions: give the plain number (1,000,000 times more)",
                      actual / 1e6, SCALED))
    if kind == "bytes":
        slips += [
            ("that is the size in MiB (2**20 bytes): the question asks for bytes", actual / 2**20, SCALED),
            ("that is the size in MB (10**6 bytes): the question asks for bytes", actual / 1e6, SCALED),
            ("that counts bits: a byte is 8 bits, and float32 takes 4 bytes", actual * 8, 0.0),
        ]
    if actual:
        slips.append(("the sign is wrong: this quantity is positive", -actual, 0.0))
    return slips


def judge_prediction(check: Check, predicted: float, actual: float, why: str, slips: list[Slip],
           rel_tol: float = 0.0, kind: str = "count") -> None:
    """A pass with the working, or a fail naming the slip whose number matches the prediction:
    the chapter's own slips first, then slips of sign and unit any prediction can make."""
    if math.isclose(predicted, actual, rel_tol=rel_tol, abs_tol=1e-9):
        check.ok(f"right: measured {format_number(actual)}. {why}")
        return
    head = f"you predicted {format_number(predicted)}, measured {format_number(actual)}"
    for slip, wrong, tol in [*slips, *unit_slips(actual, kind)]:
        if math.isclose(predicted, wrong, rel_tol=max(rel_tol, tol, 1e-9), abs_tol=1e-12):
            check.fail(f"{head}: {slip}. {why}")
            return
    if kind != "loss" and math.isclose(predicted, actual, rel_tol=SCALED):
        check.fail(f"{head}: close, but not exact; work the count out exactly, term by term. {why}")
        return
    ratio = predicted / actual if actual else math.inf
    hint = (f" (your number is {ratio:.3g} times the measured one: look for a factor you left out "
            f"or added)" if actual and ratio > 0 and not 0.8 < ratio < 1.25 else "")
    check.fail(f"{head}{hint}. {why}")


def format_number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.4g}"
