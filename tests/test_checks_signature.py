"""The checker framework reads a wrong output's signature and names the class of mistake, and
turns every exception from learner code into a diagnosis in the course's words. Each class is
tested with mistakes planted here (none of them is in any checker's own table)."""

import math

import pytest
import torch

from gptcourse.checks import Check, diagnose, explain_error, shape_signature, signature

SIZES = {"head_size": 4, "d_in": 32, "T": 6}


def reference(x):
    return torch.softmax(x, dim=-1) * 3 + 1


X = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(0))
REF = reference(X)


# --- values of the right shape ---------------------------------------------------------------------
@pytest.mark.parametrize("wrong, words", [
    (-REF, "sign is flipped"),
    (REF * 3, "times 3 everywhere"),
    (REF / math.sqrt(32), "sqrt(d_in)"),
    (REF * 4, "head_size = 4"),
    (REF / 3, "times 0.3333"),
    (REF + 0.25, "off by the same +0.25"),
    (torch.cat([REF[:, :1], REF[:, :-1]], dim=1), "shifted one step later along dimension 1"),
    (torch.cat([REF[:, 1:], REF[:, -1:]], dim=1), "shifted one step earlier along dimension 1"),
    (REF.flip(2), "reversed along dimension 2"),
    (REF[:, [1, 0, 2, 3, 4, 5]], "wrong order along dimension 1"),
    (torch.cat([REF[:, :4], REF[:, 4:] * 0.5], dim=1), "first 4 of 6 positions are right"),
    (torch.cat([REF[:, :2] * 0.5, REF[:, 2:]], dim=1), "last 4 of 6 positions are right"),
    (torch.where(REF > 2, float("nan"), REF), "holds NaN"),
])
def test_value_signatures_are_named(wrong, words):
    found = signature(wrong, REF, SIZES)
    assert found is not None and words in found, found


def test_a_square_output_transposed_is_named():
    square = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(1))
    assert "transposed" in signature(square.transpose(-2, -1), square)


def test_an_unrelated_output_has_no_signature():
    other = torch.randn(REF.shape, generator=torch.Generator().manual_seed(2))
    assert signature(other, REF) is None
    assert signature(REF.clone(), REF) is None


# --- shapes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("got, want, words", [
    ((5, 2, 6), (2, 6, 5), "wrong order"),
    ((2, 5, 5), (2, 6, 5), "dimension 1 is one short"),
    ((2, 7, 5), (2, 6, 5), "dimension 1 is one too long"),
    ((2, 5, 32), (2, 5, 4), "32 (d_in)"),
    ((2, 5, 2), (2, 5, 4), "the size of dimension 0"),
    ((12,), (2, 6), "torch.cat joined the pieces"),
    ((2, 3, 4), (2, 12), "torch.stack made a new dimension"),
    ((6,), (2, 6), "one start was used for the whole batch"),
    ((2, 1, 6), (2, 6), "extra dimension of size 1"),
    ((2, 12, 5), (2, 6, 5), "2 times too long"),
    ((3, 4), (2, 6), "the right number of values in the wrong shape"),
    ((2, 1, 61), (2, 5, 61), "only one entry was kept"),
])
def test_shape_signatures_are_named(got, want, words):
    found = shape_signature(got, want, SIZES)
    assert found is not None and words in found, found


def test_diagnose_prefers_a_listed_mistake_then_the_signature_then_the_default():
    listed = {"the listed mistake": REF * 2}
    assert diagnose(REF * 2, listed, default="fix it", expected=REF) == "the listed mistake"
    found = diagnose(-REF, listed, default="fix it", expected=REF)
    assert found.startswith("the sign is flipped") and found.endswith("; fix it")
    other = torch.randn(REF.shape, generator=torch.Generator().manual_seed(3))
    assert diagnose(other, listed, default="fix it", expected=REF) == "fix it"


# --- exceptions ----------------------------------------------------------------------------------
class Thing:
    def method(self, x):
        return x


def raised(fn) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


@pytest.mark.parametrize("fn, words", [
    (lambda: Thing.method(3), "called on the class, not on an object"),
    (lambda: torch.arange(5, 2), "bounds in the wrong order"),
    (lambda: bytes([b"a", b"b"]), "b''.join"),
    (lambda: bytes("ab"), "text.encode('utf-8')"),
    (lambda: torch.ones(3)[5], "reads the argument it was given, not a variable from the notebook"),
    (lambda: torch.nn.Embedding(3, 3)(torch.tensor([5])), "at least the size of an embedding table"),
    (lambda: torch.ones(3).item(), "more than one number"),
    (lambda: range(2.5), "integer division"),
    (lambda: torch.multinomial(torch.tensor([-1.0, 2.0]), 1), "needs probabilities"),
    (lambda: torch.stack([torch.ones(3), torch.ones(2)]), "pieces of different lengths"),
    (lambda: torch.stack([]), "the loop ran zero times"),
    (lambda: torch.nn.functional.cross_entropy(torch.ones(2, 3, 5), torch.zeros(2, 3, dtype=torch.long)),
     "flatten"),
    (lambda: {}["a"], "a dict was asked for a key"),
    (lambda: None + 1, "None"),
    (lambda: (lambda a, b: a)(1), "different number of arguments"),
    (lambda: 1 / 0, "division by zero"),
    (lambda: torch.ones(2, 3).view(3, 3), "print the shapes"),
])
def test_exceptions_end_in_a_course_diagnosis_and_keep_the_first_line(fn, words):
    exc = raised(fn)
    with Check("t", quiet=True) as check:
        check.call("f()", fn)
    (problem,) = check.problems
    assert problem.startswith(f"f() raised {type(exc).__name__}: ")
    assert words in problem, problem
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    assert first in problem  # torch's or Python's own line is kept


def test_an_unknown_exception_still_ends_in_advice():
    class Odd(Exception):
        pass

    assert "run it on its own in a new cell" in explain_error(Odd("strange"))
