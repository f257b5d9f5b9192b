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

import math
import re
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

# Errors Python and torch raise from learner code, by a fragment of their text: the usual mistake
# behind each, in the course's words. Tried after the check's own tables and TORCH_ERRORS.
PYTHON_ERRORS: dict[str | re.Pattern, str] = {
    # Class.method() short of an argument: the method was called on the class, not an object.
    re.compile(r"\w\.\w+\(\) missing \d+ required positional argument"): "a method was "
        "called on the class, not on an object, so the first argument took the place of self: "
        "create the object first (thing = Thing(...)) and call thing.method(...)",
    "index out of range in self": "an id is at least the size of an embedding table: the table "
        "was built with a smaller vocab_size than the ids need, or the ids came from a "
        "global variable instead of the argument",
    "required positional argument: 'self'": "a class was used where an instance is needed: "
        "create the object first (Thing(...)), then call its method on the object",
    "upper bound and lower bound inconsistent with step sign": "torch.arange got its bounds in "
        "the wrong order: arange(start, end) counts up from start to end - 1, so start <= end",
    "upper bound and larger bound inconsistent with step sign": "torch.arange got its bounds in "
        "the wrong order: arange(start, end) counts up from start to end - 1, so start <= end",
    "'bytes' object cannot be interpreted as an integer": "bytes(...) was given a list of byte "
        "strings: join byte strings with b''.join(parts); bytes(list) wants small integers",
    "string argument without an encoding": "bytes(...) was given text: turn text into bytes with "
        "text.encode('utf-8'), and bytes back into text with .decode('utf-8')",
    "'float' object cannot be interpreted as an integer": "a size or a range got a float: use "
        "integer division (//) or int(...) for counts and indices",
    "list indices must be integers": "a list was indexed with a float or a tensor: use integer "
        "division (//), int(...) or .item() for the index",
    "cannot be converted to Scalar": ".item() (or float/int) was called on a tensor with more "
        "than one number: reduce it first (.mean() or .sum()) or index one element",
    "Expected target size": "cross_entropy wants logits of shape (N, C) and targets of shape "
        "(N,): flatten with logits.view(B * T, C) and targets.view(B * T)",
    "only one element tensors can be converted": ".item() (or float/int) was called on a tensor "
        "with more than one number: reduce it first (.mean() or .sum()) or index one element",
    "Boolean value of Tensor with more than one value is ambiguous": "an if, and, or not got a "
        "whole tensor: compare one element, or use .all() / .any()",
    "does not require grad and does not have a grad_fn": "backward() was called on a value cut "
        "off from the graph: no .item(), .detach() or torch.no_grad() before loss.backward()",
    "backward through the graph a second time": "backward() ran twice through one graph: compute "
        "the loss afresh (a new forward pass) for every step",
    "leaf Variable that requires grad is being used in an in-place operation": "a parameter was "
        "changed in place while autograd was watching: update weights inside torch.no_grad()",
    "probability tensor contains either": "torch.multinomial needs probabilities: apply softmax "
        "to the logits first (and keep the temperature above 0)",
    "stack expects each tensor to be equal size": "torch.stack got pieces of different lengths: "
        "a slice runs past the end of the data, so the last piece is short; check the slice bounds",
    "stack expects a non-empty TensorList": "nothing to stack: the loop ran zero times; check "
        "its range",
    "Expected input batch_size": "cross_entropy wants logits of shape (N, C) and targets of "
        "shape (N,): flatten with logits.view(B * T, C) and targets.view(B * T)",
    "multi-target not supported": "cross_entropy wants targets of shape (N,): flatten them with "
        "targets.view(-1) (and the logits to (N, C))",
    "Expected floating point type for target": "the targets of cross_entropy must be class ids "
        "(a long tensor of shape (N,)), not probabilities",
    "Expected tensor for argument #1 'indices'": "an embedding was given floats: ids must be "
        "integers (a long tensor)",
    "Error(s) in loading state_dict": "the parameter names or shapes differ from the reference: "
        "keep the names and sizes the exercise gives",
    "too many values to unpack": "a result was unpacked into a different number of names than "
        "it holds: check what the function returns (for example (logits, loss))",
    "not enough values to unpack": "a result was unpacked into a different number of names than "
        "it holds: check what the function returns (for example (logits, loss))",
    "cannot unpack non-iterable": "a single value was unpacked into several names: return a "
        "tuple (for example return logits, loss)",
    "NoneType": "a value is None: a function without a `return` line gives None, and so does "
        "an in-place list method such as .append or .sort",
    "is not callable": "something that is not a function was called: a name now holds a tensor "
        "or a number (a variable named like a function, or a module's output called again)",
    "positional argument": "the function takes a different number of arguments than the "
        "exercise passes: keep the def line the exercise gives (and self first in a method)",
    "has no attribute": "an attribute is read that was never set: check that the names set in "
        "__init__ (self.name = ...) are the ones used later, and that an object, not its class, "
        "is used",
    "unsupported operand type": "an operation got values that do not combine (a list and a "
        "tensor, a number and None): check what each step returns",
    "out of bounds": "an index runs past the end: check loop and slice bounds (the last start "
        "is len - size, not len), and that the code reads the argument it was given, not a "
        "variable from the notebook",
    "out of range": "an index runs past the end: check loop and slice bounds (the last start "
        "is len - size, not len), and that the code reads the argument it was given, not a "
        "variable from the notebook",
}

# When no fragment matches: what the kind of error usually means in learner code.
ERROR_KINDS = {
    RecursionError: "the function calls itself without end: in a subclass call "
        "super().forward(x), not self(x) or self.forward(x)",
    ZeroDivisionError: "a division by zero: a count or a length is 0 here (an empty input, or "
        "a loop that never ran)",
    KeyError: "a dict was asked for a key it does not hold: check which keys you stored, and "
        "that the lookup uses the same kind of key (a tuple, an int, a str)",
    IndexError: "an index runs past the end: check loop and slice bounds, and that the code "
        "reads the argument it was given, not a variable from the notebook",
    NameError: "a name is not defined: run the cells above in order, and check the spelling",
    AttributeError: "an attribute is read that was never set: check the names set in __init__",
    TypeError: "a value of the wrong kind reached an operation (a list for a tensor, a class "
        "for an object, None for a number): check what each step returns",
    ValueError: "a value has the right type but an impossible size or content: print the "
        "shapes and values just before the failing line",
    AssertionError: "an assert in your code failed: the condition it tests is false for "
        "this input",
    RuntimeError: "torch refused an operation: print the shapes and dtypes of its inputs just "
        "before the failing line",
}


def explain_error(exc: BaseException, *tables: Known) -> str:
    """The course's diagnosis of an exception from learner code, keeping its first line."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    for table in tables:  # the most specific tables first; their diagnoses stand alone
        for key, diagnosis in table.items():
            if isinstance(key, type) and isinstance(exc, key) or isinstance(key, str) and key in str(exc):
                return diagnosis
    for table in (TORCH_ERRORS, PYTHON_ERRORS):
        for key, diagnosis in table.items():
            if isinstance(key, re.Pattern) and key.search(str(exc)) or isinstance(key, str) and key in str(exc):
                return f"{diagnosis} ({first_line})" if first_line else diagnosis
    for kind, diagnosis in ERROR_KINDS.items():
        if isinstance(exc, kind):
            return f"{diagnosis} ({first_line})" if first_line else diagnosis
    return (f"your code stopped with an error: run it on its own in a new cell to see the line "
            f"({first_line})" if first_line else "your code stopped with an error: run it on its "
            "own in a new cell to see the line")


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


def shape_of(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


# --- reading a wrong output's signature --------------------------------------------------------
def _ratio_name(r: float, sizes: Mapping[str, int]) -> str | None:
    """Name r as a size, its square root, or their inverses (sizes: name -> value)."""
    for name, n in sizes.items():
        for value, label in [(n, name), (math.sqrt(n), f"sqrt({name})"),
                             (1 / n, f"1 / {name}"), (1 / math.sqrt(n), f"1 / sqrt({name})")]:
            if n > 1 and math.isclose(r, value, rel_tol=1e-3):
                return f"{label} = {value:.4g}"
    return None


def _dim_name(size: int, sizes: Mapping[str, int]) -> str:
    names = [name for name, n in sizes.items() if n == size]
    return f"{size} ({' or '.join(names)})" if names else str(size)


def shape_signature(actual: tuple, expected: tuple, sizes: Mapping[str, int] | None = None) -> str | None:
    """What a wrong shape says about the mistake: transposed, one short, a size from another
    dimension, a dimension joined (cat) or added (stack), a dimension dropped or kept."""
    actual, expected, sizes = tuple(actual), tuple(expected), dict(sizes or {})
    got = f"got {actual}, expected {expected}"
    if actual == expected:
        return None
    if len(actual) == len(expected):
        if sorted(actual) == sorted(expected):
            return (f"the dimensions are in the wrong order ({got}): a transpose or permute "
                    f"is missing or swaps the wrong pair")
        diff = [i for i in range(len(actual)) if actual[i] != expected[i]]
        if len(diff) == 1:
            i = diff[0]
            a, e = actual[i], expected[i]
            if abs(a - e) == 1:
                return (f"dimension {i} is one {'short' if a < e else 'too long'} ({got}): "
                        f"an off-by-one in a range, slice or loop bound along that dimension")
            if a == 1:
                return (f"dimension {i} has size 1 where {e} are needed ({got}): only one entry "
                        f"was kept along it (the last position, [:, -1:], or one start for them all)")
            others = [j for j in range(len(expected)) if j != i and expected[j] == a]
            if others:
                return (f"dimension {i} has size {_dim_name(a, sizes)}, the size of dimension "
                        f"{others[0]} ({got}): a size was taken from the wrong dimension")
            if a in sizes.values():
                return (f"dimension {i} has size {_dim_name(a, sizes)} where {_dim_name(e, sizes)} "
                        f"is needed ({got}): the wrong size was used")
            if a * e and (a % e == 0 or e % a == 0):
                k = a // e if a > e else e // a
                return (f"dimension {i} is {k} times {'too long' if a > e else 'too short'} ({got}): "
                        f"pieces were joined along it (cat) that belong in a dimension of "
                        f"their own, or it was split or chunked along the wrong dimension")
        if math.prod(actual) == math.prod(expected):
            return f"the right number of values in the wrong shape ({got}): check the view or reshape"
        return f"the shape is wrong ({got})"
    if len(actual) == len(expected) + 1:
        for i in range(len(actual)):
            if actual[i] == 1 and actual[:i] + actual[i + 1:] == expected:
                return (f"there is an extra dimension of size 1 ({got}): keepdim=True, an "
                        f"unsqueeze or an index like [:, None] where none was meant")
        for i in range(len(actual) - 1):
            if actual[:i] + (actual[i] * actual[i + 1],) + actual[i + 2:] == expected:
                return (f"there is one dimension too many ({got}): torch.stack made a new "
                        f"dimension where torch.cat (joining along an existing one), or a view, was meant")
        return f"there is one dimension too many ({got})"
    if len(actual) + 1 == len(expected):
        for i in range(len(expected) - 1):
            if expected[:i] + (expected[i] * expected[i + 1],) + expected[i + 2:] == actual:
                return (f"two dimensions are merged into one ({got}): torch.cat joined the "
                        f"pieces along an existing dimension where torch.stack (a new dimension) was "
                        f"meant, or a view flattened too much")
        for i in range(len(expected)):
            if expected[:i] + expected[i + 1:] == actual:
                what = "a size-1 dimension was squeezed away" if expected[i] == 1 else (
                    "a sum, mean or index removed it, or one start was used for the whole batch")
                return f"dimension {i} of size {expected[i]} is missing ({got}): {what}"
        return f"one dimension is missing ({got})"
    if math.prod(actual) == math.prod(expected):
        return f"the right number of values in the wrong shape ({got}): check the view/reshape"
    return None


def value_signature(actual: torch.Tensor, expected: torch.Tensor, sizes: Mapping[str, int] | None = None,
                    atol: float = 1e-5) -> str | None:
    """What a wrong output of the right shape says about the mistake: a sign, a constant factor
    (named when it is a size or its square root), a constant offset, a transpose, a shift by one
    along an axis, the same values in another order, or only some positions right."""
    if not (isinstance(actual, torch.Tensor) and isinstance(expected, torch.Tensor)):
        return None
    if actual.shape != expected.shape or actual.numel() == 0:
        return None
    a, e, sizes = actual.detach().double(), expected.detach().double(), dict(sizes or {})

    def same(x, y):
        return x.shape == y.shape and torch.allclose(x, y, atol=atol, rtol=1e-4, equal_nan=True)

    if same(a, e):
        return None

    if torch.isnan(a).any() and not torch.isnan(e).any():
        return ("the output holds NaN: a 0/0, the log of 0 or of a negative number, or -inf "
                "multiplied by 0 somewhere")
    if torch.isinf(a).any() and not torch.isinf(e).any():
        return "the output holds inf: a division by (nearly) zero or a log of 0"
    if same(a, -e) and e.abs().max() > atol:
        return "the sign is flipped everywhere: a minus sign is missing or extra"
    big = e.abs() > 1e-3
    if big.sum() >= 2:
        ratios = a[big] / e[big]
        r = ratios.median().item()
        if r != 0 and torch.allclose(ratios, torch.full_like(ratios, r), rtol=1e-3) and same(a, e * r):
            if math.isclose(r, 1.0, rel_tol=1e-6):
                pass
            elif (named := _ratio_name(r, sizes)) is not None:
                return (f"the output is the reference times {named}: a scale factor is wrong (a "
                        f"division by the wrong size, or by a size instead of its square root)")
            elif r < 0:
                return f"the output is the reference times {r:.4g}: a sign and a scale are wrong"
            else:
                return (f"the output is the reference times {r:.4g} everywhere: a constant factor "
                        f"is wrong or missing (a coefficient, a 1/2, a square root)")
    offset = (a - e).flatten()
    if offset.numel() >= 2 and offset.abs().max() > atol and torch.allclose(offset, offset[:1].expand_as(offset), atol=atol):
        return (f"every value is off by the same {offset[0].item():+.4g}: a constant term is "
                f"missing or extra (an offset, a +1, a bias)")
    if a.dim() >= 2 and a.shape[-1] == a.shape[-2] and same(a, e.transpose(-2, -1)):
        return "the output is the reference transposed: rows and columns (the last two dimensions) are swapped"
    for dim in range(a.dim()):
        n = a.shape[dim]
        if n < 2:
            continue
        if same(a.narrow(dim, 1, n - 1), e.narrow(dim, 0, n - 1)):
            return (f"the output is shifted one step later along dimension {dim}: an index is one "
                    f"too small (i - 1 for i, or a slice starting one early)")
        if same(a.narrow(dim, 0, n - 1), e.narrow(dim, 1, n - 1)):
            return (f"the output is shifted one step earlier along dimension {dim}: an index is one "
                    f"too large (i + 1 for i, or a slice starting one late)")
        flipped = a.flip(dim)
        if same(flipped, e):
            return f"the output is reversed along dimension {dim}: an order is backwards"
        if n > 2 and same(a.sort(dim=dim).values, e.sort(dim=dim).values):
            return (f"the right values in the wrong order along dimension {dim}: pieces were "
                    f"swapped, or taken in the wrong order")
    close_mask = torch.isclose(a, e, atol=atol, rtol=1e-4)
    for dim in range(a.dim()):
        n = a.shape[dim]
        rows = close_mask.transpose(0, dim).reshape(n, -1).all(dim=1)
        if 0 < rows.sum() < n:
            right = rows.nonzero().flatten().tolist()
            if right == list(range(len(right))):
                return (f"along dimension {dim} the first {len(right)} of {n} positions are right "
                        f"and the rest are wrong: something goes wrong after position {len(right) - 1} "
                        f"(a bound, a mask or a cache that stops too early)")
            if right == list(range(n - len(right), n)) and 2 * len(right) >= n:
                return (f"along dimension {dim} the last {len(right)} of {n} positions are right "
                        f"and the first ones are wrong: the start is off (position 0 is handled "
                        f"differently)")
    return None


def signature(actual: Any, expected: Any, sizes: Mapping[str, int] | None = None,
              atol: float = 1e-5) -> str | None:
    """The class of mistake a wrong output shows, read from its shape and its values."""
    if isinstance(actual, torch.Tensor) and isinstance(expected, torch.Tensor):
        if actual.shape != expected.shape:
            return shape_signature(tuple(actual.shape), tuple(expected.shape), sizes)
        if actual.numel() == 1:
            return number_signature(actual.item(), expected.item(), sizes=sizes)
        return value_signature(actual, expected, sizes, atol)
    if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        return number_signature(actual, expected, sizes=sizes)
    return None


def wrong_shape(what: str, value: Any, expected: tuple, sizes: Mapping[str, int] | None = None,
                hint: str = "") -> str:
    """`what` has the wrong shape: say which, and what the shape says about the cause."""
    got = shape_of(value)
    found = shape_signature(tuple(value.shape), tuple(expected), sizes) if isinstance(
        value, torch.Tensor) else None
    message = found if found else f"got {got}, expected {tuple(expected)}"
    return f"{what} has the wrong shape: {message}{hint}"


def number_signature(value: float, expected: float, terms: Mapping[str, float] | None = None,
                     sizes: Mapping[str, int] | None = None) -> str | None:
    """What a wrong number says about the mistake: one term of a sum left out or counted twice,
    the sign, a unit (thousands, millions, a percentage), a log in another base, a factor that
    equals a size or its square root, or off by one."""
    value, expected = float(value), float(expected)
    if expected == 0 or value == expected:
        return None
    if math.isclose(value, -expected, rel_tol=1e-6):
        return "the sign is flipped: a minus sign is missing or extra"
    diff = value - expected
    for name, term in (terms or {}).items():
        if term and math.isclose(diff, -term, rel_tol=1e-6):
            return f"{name} is left out (the count is short by exactly {_short(term)})"
        if term and math.isclose(diff, term, rel_tol=1e-6):
            return f"{name} is counted twice (the count is over by exactly {_short(term)})"
    ratio = value / expected
    for r, what in [(1e-3, "in thousands"), (1e-6, "in millions"), (1e-9, "in billions"),
                    (100.0, "a percentage, not a fraction"), (0.01, "a fraction divided by 100"),
                    (1 / math.log(2), "a log in base 2 (bits), not the natural log"),
                    (1 / math.log(10), "a log in base 10, not the natural log"),
                    (2.0, "twice the right value: a factor 2 is extra"),
                    (0.5, "half the right value: a factor 2 is missing")]:
        if math.isclose(ratio, r, rel_tol=1e-4):
            return f"the value is {what}"
    named = _ratio_name(ratio, sizes or {})
    if named:
        return f"the value is the right one times {named}: a size multiplies or divides where it should not"
    if expected.is_integer() and value.is_integer() and abs(diff) == 1:
        return f"the count is one {'too many' if diff > 0 else 'short'}: an off-by-one"
    return None


def _short(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:.4g}"
