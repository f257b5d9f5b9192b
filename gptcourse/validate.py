"""One rule for bad arguments: validators that return the value or raise a clear error.

Every public entry point (configs, data functions, `generate`, training settings, the model's
input) checks its arguments with these, so one kind of mistake always reads the same way:

    >>> require_positive_int("batch_size", 0)
    Traceback (most recent call last):
    gptcourse.validate.InputError: batch_size must be a positive int, got 0

A value of the wrong type raises `ArgumentTypeError` (a TypeError); a value of the right type
outside the allowed range raises `InputError` (a ValueError). numpy integers count as ints,
`True` and `False` do not.
(`check_*` names are kept for the learner checkers in `gptcourse.checks`.)
"""

from __future__ import annotations

import math
from numbers import Integral, Real


class InputError(ValueError):
    """A bad argument or input that the user can fix, with a message that says how.

    The package raises it (and ArgumentTypeError) for mistakes in what it was given, so the
    command line can print these as one line and still show a traceback for anything else,
    which would be a bug in the course's own code.
    """


class ArgumentTypeError(TypeError, InputError):
    """An argument of the wrong type. A TypeError, and also a ValueError (an InputError) so that
    callers that catch ValueError for any bad argument catch this one too."""


class CourseWarning(UserWarning):
    """A result that is probably not what was meant (the command line shows it as one line)."""


def _fail(name: str, what: str, value, hint: str = "", wrong_type: bool = False):
    error = ArgumentTypeError if wrong_type else InputError
    raise error(f"{name} must be {what}, got {value!r}{hint}")


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def require_int(name: str, value, low: int | None = None, high: int | None = None,
                high_name: str | None = None, hint: str = "") -> int:
    """An int (numpy ints too, bool not) in low..high (inclusive; None: no bound), as a Python int."""
    if low is not None and high is not None:
        top = f"{high_name}={high}" if high_name else f"{high}"
        what = f"an int from {low} to {top}"
    elif low is not None:
        what = "a positive int" if low == 1 else f"an int >= {low}"
    else:
        what = "an int"
    if not _is_int(value):
        _fail(name, what, value, hint, wrong_type=True)
    if (low is not None and value < low) or (high is not None and value > high):
        _fail(name, what, value, hint)
    return int(value)


def require_positive_int(name: str, value, hint: str = "") -> int:
    """An int >= 1 (a size, a count of steps, a number of layers)."""
    return require_int(name, value, low=1, hint=hint)


def require_int_in_range(name: str, value, low: int, high: int, high_name: str | None = None,
                         hint: str = "") -> int:
    """An int in low..high inclusive; `high_name` says where the upper bound comes from."""
    return require_int(name, value, low=low, high=high, high_name=high_name, hint=hint)


def require_optional_int(name: str, value, low: int, high: int | None = None,
                         high_name: str | None = None, hint: str = "") -> int | None:
    """None, or an int in low..high: for settings where None means "not used" (top_k, eos_id)."""
    if value is None:
        return None
    try:
        return require_int(name, value, low=low, high=high, high_name=high_name, hint=hint)
    except ValueError as exc:
        # Same error type, with the None option named first.
        raise type(exc)(str(exc).replace(f"{name} must be ", f"{name} must be None or ", 1)) from None


def require_number(name: str, value, low: float | None = None, strict: bool = False,
                   hint: str = "") -> float:
    """A finite real number (NaN and infinity refused), >= low (> low if strict), as a float."""
    if low is None:
        what = "a finite number"
    elif low == 0 and strict:
        what = "a positive number"
    else:
        what = f"a number {'>' if strict else '>='} {low:g}"
    if not _is_number(value):
        _fail(name, what, value, hint, wrong_type=True)
    if not math.isfinite(value) or (low is not None and (value <= low if strict else value < low)):
        _fail(name, what, value, hint)
    return float(value)


def require_finite_number(name: str, value, hint: str = "") -> float:
    """Any real number except NaN and infinity."""
    return require_number(name, value, hint=hint)


def require_positive_number(name: str, value, hint: str = "") -> float:
    """A finite number > 0 (a learning rate, an epsilon, a peak speed)."""
    return require_number(name, value, low=0, strict=True, hint=hint)


def require_probability(name: str, value, hint: str = "") -> float:
    """A number in [0, 1): a dropout rate or a fraction that must leave something (1 is refused)."""
    if not _is_number(value):
        _fail(name, "a number in [0, 1)", value, hint, wrong_type=True)
    if not 0.0 <= value < 1.0:
        _fail(name, "a number in [0, 1)", value, hint)
    return float(value)


def require_flag(name: str, value) -> bool:
    """True or False (not 1, 0, "yes" or None, which usually mean a mistaken argument)."""
    if not isinstance(value, bool):
        _fail(name, "True or False", value, wrong_type=True)
    return value


def require_device(name: str, value):
    """A torch.device, or a name such as "cpu", "cuda", "cuda:1" or "mps", as a torch.device."""
    import torch

    try:
        return torch.device(value)
    except (RuntimeError, TypeError):
        raise InputError(f"{name} must be a device such as 'cpu', 'cuda', 'cuda:0' or 'mps', "
                         f"got {value!r}") from None


def require_generator(name: str, value):
    """None or a torch.Generator (to seed one: torch.Generator().manual_seed(42))."""
    import torch

    if value is not None and not isinstance(value, torch.Generator):
        raise ArgumentTypeError(f"{name} must be None or a torch.Generator, got {value!r}; "
                                f"make one with torch.Generator().manual_seed({value!r})"
                                if _is_int(value) else
                                f"{name} must be None or a torch.Generator, got {value!r}")
    return value


def require_instance(name: str, value, cls: type, hint: str = ""):
    """An instance of `cls` (for objects such as a GPTConfig or a TrainSettings)."""
    if not isinstance(value, cls):
        raise ArgumentTypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}{hint}")
    return value
