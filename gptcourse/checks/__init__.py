"""Friendly checkers for the exercises.

A checker runs the learner's code against the reference on fixed and edge-case inputs and
prints one line per finding: a pass, or a diagnosis that names the likely mistake. Expected
learner mistakes (unfinished code, exceptions, wrong values) never print a traceback.

Writing a checker::

    def check_thing(fn) -> Check:
        with Check("thing", seed=0, known=THING_ERRORS) as check:
            out = check.call("thing(x)", fn, x)          # stops the check if fn raises
            if check.expect(close(out, ref), "thing(x) matches the reference"):
                ...
            else:
                check.fail(diagnose(out, {"...": wrong_version(x)}, default="..."))
        return check
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

PASS_MARK = "✅"
FAIL_MARK = "❌"
NOT_WRITTEN = "not written yet. Replace `raise NotImplementedError` with your code."


# Common torch errors that no check's own table explains: what they usually mean in learner code.
# Tried last; the diagnosis keeps torch's first line, so nothing the learner needs is lost.
TORCH_ERRORS = {
    "cannot be multiplied": "a matrix product got shapes that do not fit: the last dimension of "
        "the left operand must equal the first (or second-to-last) of the right one",
    "must match the size of tensor": "two tensors in one elementwise operation have shapes that "
        "do not broadcast: print the shapes and line up the dimensions (keepdim=True, or a "
        "(B, 1) column)",
    "Sizes of tensors must match except in dimension": "torch.cat got tensors whose other "
        "dimensions differ: check the dimension you join on",
    "view size is not compatible": "the tensor is not contiguous (after transpose or permute): "
        "call .contiguous() before .view, or use .reshape",
    "Dimension out of range": "a dim= argument names a dimension the tensor does not have: "
        "count dimensions from the end (dim=-1)",
    "expected scalar type": "two tensors have different dtypes: convert one (for example "
        ".float() or .long()) before combining them",
}


class StopCheck(Exception):
    """Raised inside a check to end it early (the finding is already recorded)."""


Known = Mapping["str | type[BaseException]", str]


class Check:
    """A list of findings, printed as they are made. Use it as a context manager.

    seed: run the check on a fork of torch's global random generator, seeded with `seed`, so
    that learner code drawing from it neither depends on nor changes the notebook's own seed.
    known: diagnoses for the errors learner code commonly raises in this check (see `call`).
    """

    def __init__(self, title: str, quiet: bool = False, *, seed: int | None = None,
                 known: Known | None = None):
        self.title = title
        self.quiet = quiet
        self.seed = seed
        self.known = dict(known or {})
        self.findings: list[tuple[bool, str]] = []
        self._rng_fork = None

    # --- recording findings -------------------------------------------------------------
    def ok(self, message: str) -> None:
        self._add(True, message)

    def fail(self, message: str) -> None:
        self._add(False, message)

    def expect(self, condition: bool, passed: str, failed: str | None = None) -> bool:
        """Record a pass if `condition` holds, else `failed` (when given). Returns `condition`."""
        if condition:
            self.ok(passed)
        elif failed is not None:
            self.fail(failed)
        return bool(condition)

    def stop(self, message: str) -> None:
        """Record a problem and end the check: what follows would only repeat it."""
        self.fail(message)
        raise StopCheck

    def _add(self, passed: bool, message: str) -> None:
        self.findings.append((passed, message))
        if not self.quiet:
            print(f"{PASS_MARK if passed else FAIL_MARK} {message}")

    # --- running learner code -------------------------------------------------------------
    def call(self, what: str, fn: Callable, *args, known: Known | None = None, **kwargs) -> Any:
        """Call learner code; turn any exception into one finding and stop the check.

        `known` (tried before the check's own table) maps a fragment of an error message, or an
        exception class, to a diagnosis of the likely mistake (for example
        "must match the size" -> "keepdim=True is missing").
        """
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            self.stop(f"{what}: {NOT_WRITTEN}")
        except StopCheck:
            raise
        except Exception as exc:  # a learner's bug, reported in one line
            # This call's own diagnoses first: they are more specific than the check's table.
            for key, diagnosis in [*(known or {}).items(), *self.known.items()]:
                if isinstance(key, type) and isinstance(exc, key) or isinstance(key, str) and key in str(exc):
                    self.stop(f"{what} raised {type(exc).__name__}: {diagnosis}")
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            for key, diagnosis in TORCH_ERRORS.items():
                if key in str(exc):
                    self.stop(f"{what} raised {type(exc).__name__}: {diagnosis} ({first_line})")
            self.stop(f"{what} raised {type(exc).__name__}: {exc}")

    def copy_weights(self, module, reference, hint: str) -> None:
        """Give the learner's module the reference's weights, so outputs can be compared exactly;
        stop with `hint` when the parameter names or shapes differ."""
        try:
            module.load_state_dict(reference.state_dict())
        except Exception:
            self.stop(hint)

    # --- results --------------------------------------------------------------------------
    @property
    def passed(self) -> bool:
        return bool(self.findings) and all(ok for ok, _ in self.findings)

    @property
    def problems(self) -> list[str]:
        return [message for ok, message in self.findings if not ok]

    def __enter__(self) -> Check:
        if self.seed is not None:
            self._rng_fork = torch.random.fork_rng(devices=[])
            self._rng_fork.__enter__()
            torch.manual_seed(self.seed)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._rng_fork is not None:
            self._rng_fork.__exit__(exc_type, exc, tb)  # the global generator is as it was before
            self._rng_fork = None
        return exc_type is StopCheck  # swallow only our own early stop

    def __repr__(self) -> str:
        n_ok = sum(ok for ok, _ in self.findings)
        if self.passed:
            return f"{self.title}: all {n_ok} checks passed."
        return f"{self.title}: {len(self.problems)} problem(s) to fix, {n_ok} check(s) passed."


# --- comparing values ------------------------------------------------------------------------
def close(actual: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """True if two tensors (or lists/numbers) have the same shape and nearly the same values."""
    try:
        a = actual if isinstance(actual, torch.Tensor) else torch.as_tensor(actual)
        b = expected if isinstance(expected, torch.Tensor) else torch.as_tensor(expected)
    except (TypeError, ValueError, RuntimeError):
        try:
            return bool(actual == expected)
        except Exception:  # == gave something with no single truth value
            return False
    if a.shape != b.shape:
        return False
    if not (a.is_floating_point() or b.is_floating_point()):
        return torch.equal(a, b)
    return torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol, equal_nan=True)


def diagnose(actual: Any, mistakes: Mapping[str, Any], default: str, atol: float = 1e-5) -> str:
    """Name the first known mistake whose output equals `actual`, else return `default`.

    `mistakes` maps a diagnosis to what the code would output with that mistake
    (a value, or a zero-argument callable computing it).
    """
    for message, wrong in mistakes.items():
        try:
            wrong_value = wrong() if callable(wrong) else wrong
        except Exception:
            continue
        if close(actual, wrong_value, atol=atol):
            return message
    return default


def shape_of(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__
