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

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .errors import ERROR_KINDS, PYTHON_ERRORS, TORCH_ERRORS, Known, explain_error
from .signature import number_signature, shape_signature, signature, value_signature

__all__ = ["Check", "StopCheck", "close", "diagnose", "shape_of", "wrong_shape", "explain_error",
           "signature", "shape_signature", "value_signature", "number_signature", "ERROR_KINDS",
           "PYTHON_ERRORS", "TORCH_ERRORS", "Known", "PASS_MARK", "FAIL_MARK", "NOT_WRITTEN",
           "learner_name", "as_number", "all_equal"]

PASS_MARK = "✅"
FAIL_MARK = "❌"
NOT_WRITTEN = "not written yet. Replace `raise NotImplementedError` with your code."


class StopCheck(Exception):
    """Raised inside a check to end it early (the finding is already recorded)."""


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
        except Exception as exc:  # a learner's bug, reported in one line, in the course's words
            # This call's own diagnoses first: they are more specific than the check's table.
            self.stop(f"{what} raised {type(exc).__name__}: {explain_error(exc, known or {}, self.known)}")

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


def all_equal(tensors, others) -> bool:
    """True if each tensor equals its partner exactly, in shape and values."""
    return all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(tensors, others))


def diagnose(actual: Any, mistakes: Mapping[str, Any], default: str, atol: float = 1e-5,
             expected: Any = None, sizes: Mapping[str, int] | None = None) -> str:
    """Name the first known mistake whose output equals `actual`; else, when `expected` is given,
    name the class of mistake the output's signature shows (see `signature`), followed by
    `default`; else return `default`.

    `mistakes` maps a diagnosis to what the code would output with that mistake
    (a value, or a zero-argument callable computing it). `sizes` names the sizes in play
    (for example {"head_size": 4, "d_in": 32}) so that a ratio or a shape can be named.
    """
    for message, wrong in mistakes.items():
        try:
            wrong_value = wrong() if callable(wrong) else wrong
        except Exception:
            continue
        if close(actual, wrong_value, atol=atol):
            return message
    if expected is not None:
        found = signature(actual, expected, sizes, atol)
        if found:
            return f"{found}; {default}"
    return default


def learner_name(obj: Any, default: str) -> str:
    """The name the learner gave a function or class; `default` (the exercise's) when it has none
    that is an identifier, as for a lambda."""
    name = getattr(obj, "__name__", "")
    return name if isinstance(name, str) and name.isidentifier() else default


def as_number(value: Any) -> int | float | None:
    """`value` as a Python number when it is one (a one-element tensor counts, a bool does not)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return None if isinstance(value, bool) or not isinstance(value, numbers.Real) else value


def shape_of(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def wrong_shape(what: str, value: Any, expected: tuple, sizes: Mapping[str, int] | None = None,
                hint: str = "") -> str:
    """`what` has the wrong shape: say which, and what the shape says about the cause."""
    got = shape_of(value)
    found = shape_signature(tuple(value.shape), tuple(expected), sizes) if isinstance(
        value, torch.Tensor) else None
    message = found if found else f"got {got}, expected {tuple(expected)}"
    return f"{what} has the wrong shape: {message}{hint}"
