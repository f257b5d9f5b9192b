"""Tests for gptcourse.validate: one wording and one rule for every bad argument."""

import math

import numpy as np
import pytest

from gptcourse import validate as v
from gptcourse.validate import ArgumentTypeError


def test_positive_int_accepts_python_and_numpy_ints_and_returns_a_python_int():
    assert v.require_positive_int("n", 3) == 3
    value = v.require_positive_int("n", np.int64(4))
    assert value == 4 and type(value) is int


@pytest.mark.parametrize("bad", [2.0, True, False, "8", None, np.float32(2)])
def test_a_wrong_type_is_a_type_error_that_is_also_a_value_error(bad):
    with pytest.raises(ArgumentTypeError, match=r"n must be a positive int, got"):
        v.require_positive_int("n", bad)
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)


@pytest.mark.parametrize("bad", [0, -3, np.int32(0)])
def test_a_value_out_of_range_is_a_plain_value_error(bad):
    with pytest.raises(ValueError, match="n must be a positive int") as info:
        v.require_positive_int("n", bad)
    assert not isinstance(info.value, TypeError)


def test_int_bounds_are_named_in_the_message():
    assert v.require_int("step", 0, low=0) == 0
    with pytest.raises(ValueError, match="step must be an int >= 0, got -1"):
        v.require_int("step", -1, low=0)
    assert v.require_int_in_range("k", 16, 1, 16) == 16
    with pytest.raises(ValueError, match="k must be an int from 1 to context_length=16, got 17"):
        v.require_int_in_range("k", 17, 1, 16, "context_length")
    with pytest.raises(ValueError, match="k must be an int from 1 to 16, got 0 \\(a hint\\)"):
        v.require_int_in_range("k", 0, 1, 16, hint=" (a hint)")


def test_optional_int_allows_none_and_says_so():
    assert v.require_optional_int("top_k", None, 1, 5) is None
    assert v.require_optional_int("top_k", 5, 1, 5) == 5
    with pytest.raises(ValueError, match="top_k must be None or an int from 1 to 5, got 6"):
        v.require_optional_int("top_k", 6, 1, 5)
    with pytest.raises(TypeError, match="top_k must be None or a positive int, got 2.5"):
        v.require_optional_int("top_k", 2.5, 1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_numbers_must_be_finite(bad):
    with pytest.raises(ValueError, match="x must be a finite number"):
        v.require_finite_number("x", bad)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        v.require_positive_number("lr", bad)


def test_numbers_accept_ints_and_numpy_floats_but_not_bools_or_strings():
    assert v.require_finite_number("x", 3) == 3.0
    assert v.require_positive_number("lr", np.float32(0.5)) == 0.5
    for bad in (True, "0.1", None):
        with pytest.raises(TypeError, match="lr must be a positive number"):
            v.require_positive_number("lr", bad)
    with pytest.raises(ValueError, match="lr must be a positive number, got 0"):
        v.require_positive_number("lr", 0)


@pytest.mark.parametrize("good", [0, 0.0, 0.5, 0.999])
def test_probability_is_in_zero_to_one_excluding_one(good):
    assert v.require_probability("p", good) == good


@pytest.mark.parametrize("bad, error", [(1.0, ValueError), (-0.1, ValueError), (math.nan, ValueError),
                                        ("0.1", TypeError), (True, TypeError)])
def test_probability_rejects(bad, error):
    with pytest.raises(error, match=r"p must be a number in \[0, 1\)"):
        v.require_probability("p", bad)


def test_flag_takes_only_true_or_false():
    assert v.require_flag("f", True) is True and v.require_flag("f", False) is False
    for bad in (1, 0, "yes", None):
        with pytest.raises(TypeError, match="f must be True or False"):
            v.require_flag("f", bad)


def test_instance_names_the_class_and_the_hint():
    assert v.require_instance("x", 3, int) == 3
    with pytest.raises(TypeError, match=r"cfg must be a dict, got list \(try dict\(\)\)"):
        v.require_instance("cfg", [], dict, hint=" (try dict())")
