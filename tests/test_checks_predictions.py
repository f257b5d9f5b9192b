"""The predict-then-measure checkers, tested three ways: a right prediction passes (written in
more than one way), a stub fails, and each slip a checker claims to recognise is named."""

import math

import pytest
import torch
from checker_results import assert_diagnosed

from gptcourse.checks.predictions import (
    PROBLEMS,
    check_attention_params_prediction,
    check_block_params_prediction,
    check_initial_loss_prediction,
    check_kv_cache_bytes_prediction,
    check_tying_savings_prediction,
    check_uniform_loss_prediction,
    check_window_count_prediction,
    slip_table,
)


def answer(value):
    return lambda: value


def stub():
    raise NotImplementedError


# Independent computations of each right answer, and another correct way of writing it.
RIGHT = [
    (check_window_count_prediction, answer(39), answer(len(range(0, 1000 - 64, 24)))),
    (check_uniform_loss_prediction, answer(math.log(65)), answer(-math.log(1 / 65))),
    (check_attention_params_prediction, answer(16_448), answer(torch.tensor(4 * 64**2 + 64))),
    (check_block_params_prediction, answer(197_888), answer(12 * 128**2 + 10 * 128)),
    (check_tying_savings_prediction, answer(38_597_376), answer(50257 * 768.0)),
    (check_initial_loss_prediction, answer(4.17), answer(math.log(65) * 1.02)),
    (check_kv_cache_bytes_prediction, answer(117_964_800), answer(112.5 * 2**20)),
]


@pytest.mark.parametrize("checker, right, written_differently", RIGHT)
def test_right_predictions_pass(checker, right, written_differently):
    for prediction in (right, written_differently):
        result = checker(prediction)
        assert result.passed, result.problems
        assert "right" in result.findings[0][1]


@pytest.mark.parametrize("checker", [row[0] for row in RIGHT])
def test_stubs_fail(checker):
    assert_diagnosed(checker(stub), "not written yet")


@pytest.mark.parametrize("checker", [row[0] for row in RIGHT])
def test_a_prediction_that_is_not_a_number_is_named(checker):
    assert_diagnosed(checker(answer("about 30")), "should return your prediction as a number")
    assert_diagnosed(checker(answer(None)), "should return your prediction as a number")


@pytest.mark.parametrize("checker, prediction, fragment", [
    (check_window_count_prediction, 41, "that is num_ids // stride"),
    (check_window_count_prediction, 1000 / 24, "that is num_ids / stride"),
    (check_window_count_prediction, 40, "forgets the target"),
    (check_window_count_prediction, 38, "the window at position 0 counts too"),
    (check_window_count_prediction, 15, "do not overlap"),
    (check_window_count_prediction, 27, "measured 39"),
    (check_uniform_loss_prediction, math.log2(65), "in bits"),
    (check_uniform_loss_prediction, math.log10(65), "log10"),
    (check_uniform_loss_prediction, 1 / 65, "not its negative log"),
    (check_uniform_loss_prediction, -math.log(65), "the sign is wrong"),
    (check_uniform_loss_prediction, math.log(50257), "GPT-2's vocabulary"),
    (check_attention_params_prediction, 4 * 16_448, "multiplies by the number of heads"),
    (check_attention_params_prediction, 4 * 64 * 64, "output projection's bias"),
    (check_attention_params_prediction, 3 * 64 * 64, "leaves out the output projection"),
    (check_attention_params_prediction, 3 * 4 * 64 * 64 + 64 * 64 + 64, "its own (64, 64)"),
    (check_attention_params_prediction, 16.45, "in thousands"),
    (check_block_params_prediction, 12 * 128 * 128, "the d² terms alone"),
    (check_block_params_prediction, 12 * 128 * 128 + 6 * 128, "leaves out the two LayerNorms"),
    (check_block_params_prediction, 12 * 128 * 128 + 8 * 128, "each LayerNorm counts one vector"),
    (check_block_params_prediction, 6 * 128 * 128 + 7 * 128, "hidden size of d"),
    (check_block_params_prediction, 197_000, "close, but not exact"),
    (check_block_params_prediction, 100_000, "measured 197,888"),
    (check_tying_savings_prediction, 50257 * 768 + 50257, "the head's bias"),
    (check_tying_savings_prediction, 2 * 50257 * 768, "counts both matrices"),
    (check_tying_savings_prediction, 1024 * 768, "position embedding"),
    (check_tying_savings_prediction, 38.6, "in millions"),
    (check_tying_savings_prediction, 50_000 * 768, "a vocabulary of 50,000"),
    (check_initial_loss_prediction, math.log2(65), "in bits"),
    (check_initial_loss_prediction, 0, "cannot be certain"),
    (check_initial_loss_prediction, 1 / 65, "not its negative log"),
    (check_initial_loss_prediction, 3.5, "ln(65) ≈ 4.174"),
    (check_kv_cache_bytes_prediction, 117_964_800 / 2, "count the values as well"),
    (check_kv_cache_bytes_prediction, 117_964_800 / 4, "counts numbers, not bytes"),
    (check_kv_cache_bytes_prediction, 117_964_800 / 24, "counts one layer"),
    (check_kv_cache_bytes_prediction, 117_964_800 * 16, "the heads split d"),
    (check_kv_cache_bytes_prediction, 2 * 24 * 600 * 64 * 4, "uses the head size (64) as the width"),
    (check_kv_cache_bytes_prediction, 112.5, "in MiB"),
    (check_kv_cache_bytes_prediction, 118, "in MB"),
    (check_kv_cache_bytes_prediction, 2 * 12 * 600 * 768 * 4, "GPT-2 small's cache"),
])
def test_slips_are_named(checker, prediction, fragment):
    assert_diagnosed(checker(answer(prediction)), fragment)


def test_initial_loss_check_leaves_the_global_seed_alone():
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    check_initial_loss_prediction(answer(4.17))
    assert torch.equal(torch.rand(2), expected)


# --- every slip has its own number, and each is named when planted ------------------------------------
@pytest.mark.parametrize("checker", list(PROBLEMS))
def test_every_slip_gives_a_distinct_answer(checker):
    actual, rel_tol, slips = slip_table(checker)
    values = [("the right answer", actual, rel_tol)] + slips
    for i, (name_a, a, tol_a) in enumerate(values):
        for name_b, b, tol_b in values[i + 1:]:
            tol = max(tol_a, tol_b, rel_tol, 1e-9)
            assert not math.isclose(a, b, rel_tol=tol, abs_tol=1e-12), (name_a, name_b, a, b)


@pytest.mark.parametrize("checker, slip, value", [
    (checker, slip, value) for checker in PROBLEMS for slip, value, _ in slip_table(checker)[2]
])
def test_every_slip_is_named_when_planted(checker, slip, value):
    result = checker(answer(value))
    assert not result.passed
    assert slip in result.problems[0], result.problems
