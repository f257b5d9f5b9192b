"""The chapter 9 RoPE checker: the reference passes, a stub fails, and every mistake the checker
claims to diagnose is planted and named."""

import pytest
import torch
from checker_results import NOT_WRITTEN, all_passed, has

from gptcourse.checks.rope import check_rope
from gptcourse.rope import apply_rope, rope_angles


# --- RoPE ----------------------------------------------------------------------------------------
def planted_angles(exponent="2i/d", layout="cat", start=0, swap=False, fixed_base=None):
    """A learner's rope_angles with one mistake switched on by a keyword."""
    def rope_angles_(head_dim, n_positions, base=10_000.0):
        base = fixed_base or base
        pairs = torch.arange(0, head_dim, 2).float()
        freqs = {"2i/d": 1.0 / base ** (pairs / head_dim),
                 "i/d": 1.0 / base ** (torch.arange(head_dim // 2).float() / head_dim),
                 "+": base ** (pairs / head_dim),
                 "per number": 1.0 / base ** (torch.arange(head_dim).float() / head_dim)}[exponent]
        angles = torch.arange(start, start + n_positions).float()[:, None] * freqs[None, :]
        if layout == "cat":
            angles = torch.cat([angles, angles], dim=-1)
        elif layout == "interleave":
            angles = torch.stack([angles, angles], dim=-1).flatten(-2)
        elif layout == "stack":
            angles = torch.stack([angles, angles], dim=-1)
        elif layout == "transposed":
            angles = torch.cat([angles, angles], dim=-1).T
        return (angles.sin(), angles.cos()) if swap else (angles.cos(), angles.sin())
    return rope_angles_


def rotate_pairs(x):
    return torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)


def planted_apply(turn="half", sign=1.0, swap=False, sin_term=True):
    """A learner's apply_rope with one mistake switched on by a keyword."""
    def apply_rope_(x, cos, sin):
        half = x.size(-1) // 2
        if turn == "half":
            rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        elif turn == "wrong half":  # the minus on the first half: a turn the other way
            rotated = torch.cat([x[..., half:], -x[..., :half]], dim=-1)
        elif turn == "no minus":
            rotated = torch.cat([x[..., half:], x[..., :half]], dim=-1)
        elif turn == "pairs":
            rotated = rotate_pairs(x)
        else:
            rotated = x
        c, s = (sin, cos) if swap else (cos, sin)
        return x * c + sign * rotated * s if sin_term else x * c
    return apply_rope_


def test_rope_reference_passes_every_line(capsys):
    assert all_passed(check_rope(rope_angles, apply_rope), capsys)


def test_rope_planted_correct_versions_pass():
    result = check_rope(planted_angles(), planted_apply())
    assert result.passed, result.problems


def test_rope_stubs_fail_and_each_is_named():
    def rope_angles(head_dim, n_positions, base=10_000.0):
        raise NotImplementedError

    def apply_rope(x, cos, sin):
        raise NotImplementedError

    result = check_rope(rope_angles, apply_rope)
    assert not result.passed
    assert [p.split(":")[0].split("(")[0] for p in result.problems] == ["rope_angles", "apply_rope"]
    assert all(NOT_WRITTEN in p for p in result.problems)
    # one written, the other not: the written one is still checked
    from gptcourse.rope import apply_rope as reference_apply
    result = check_rope(rope_angles, reference_apply)
    assert has(result, NOT_WRITTEN) and len(result.problems) == 1
    assert any("turns each pair" in message for ok, message in result.findings if ok)


@pytest.mark.parametrize("angles, words", [
    (planted_angles(exponent="i/d"), "the exponent is i / head_dim: it is 2i / head_dim"),
    (planted_angles(exponent="+"), "the frequencies grow instead of shrinking"),
    (planted_angles(exponent="per number", layout="none"), "one frequency per number"),
    (planted_angles(exponent="per number"), "one frequency per number, then doubled"),
    (planted_angles(layout="none"), "the angles are not repeated for the second half"),
    (planted_angles(layout="stack"), "torch.stack made a new last dimension"),
    (planted_angles(layout="interleave"), "the angles are interleaved"),
    (planted_angles(layout="transposed"), "rows and columns are swapped"),
    (planted_angles(swap=True), "cos and sin are swapped: return angles.cos(), angles.sin()"),
    (planted_angles(start=1), "the positions start at 1"),
    (planted_angles(fixed_base=10_000.0), "ignores its base"),
    (lambda *args: torch.stack(rope_angles(*args)), "should return two tensors, cos and sin"),
])
def test_rope_angle_mistakes_are_named(angles, words):
    result = check_rope(angles, apply_rope)
    assert not result.passed
    assert has(result, words), result.problems


@pytest.mark.parametrize("apply, words", [
    (planted_apply(turn="wrong half"), "the rotation goes the wrong way"),
    (planted_apply(sign=-1.0), "the rotation goes the wrong way"),
    (planted_apply(turn="no minus"), "rotate_half has lost its minus sign"),
    (planted_apply(turn="pairs"), "pairs neighbouring numbers (2i, 2i+1)"),
    (planted_apply(turn="none"), "rotate_half is missing"),
    (planted_apply(swap=True), "cos and sin are swapped: apply_rope is x * cos"),
    (planted_apply(sin_term=False), "the sin term is missing"),
    (lambda x, cos, sin: apply_rope(x, cos, sin)[..., :4], "apply_rope(x, cos, sin) has the wrong shape"),
])
def test_rope_apply_mistakes_are_named(apply, words):
    result = check_rope(rope_angles, apply)
    assert not result.passed
    assert has(result, words), result.problems


def test_rope_cos_that_does_not_broadcast_is_explained():
    def apply_half_cos(x, cos, sin):
        return x * cos[..., : x.size(-1) // 2 + 1] + x

    result = check_rope(rope_angles, apply_half_cos)
    assert has(result, "cos and sin must broadcast against x"), result.problems


def test_rope_properties_fail_where_the_turn_is_not_a_rotation():
    lengths, relative = "changes the vectors' lengths", "changes when both tokens move"
    no_minus = check_rope(rope_angles, planted_apply(turn="no minus"))
    assert has(no_minus, lengths) and has(no_minus, relative), no_minus.problems
    # interleaved angles with rotate-half: each pair's two numbers turn by different angles
    mixed = check_rope(planted_angles(layout="interleave"), apply_rope)
    assert has(mixed, "with your angles, apply_rope changes the vectors' lengths"), mixed.problems
    assert has(mixed, "with your angles, the score q_m . k_n changes"), mixed.problems


def test_rope_interleaved_convention_throughout_keeps_the_properties_but_is_named():
    result = check_rope(planted_angles(layout="interleave"), planted_apply(turn="pairs"))
    assert has(result, "the angles are interleaved") and has(result, "pairs neighbouring numbers")
    passed = [message for ok, message in result.findings if ok]
    assert any("keeps its length" in m for m in passed) and any("depends only on m - n" in m for m in passed)


def test_rope_wrong_way_still_relative_and_positions_from_1_still_relative():
    for angles, apply in [(rope_angles, planted_apply(sign=-1.0)), (planted_angles(start=1), apply_rope)]:
        result = check_rope(angles, apply)
        passed = [message for ok, message in result.findings if ok]
        assert not result.passed and any("depends only on m - n" in m for m in passed)


def test_rope_properties_use_the_reference_angles_when_the_learners_are_unusable():
    result = check_rope(planted_angles(layout="none"), apply_rope)
    assert any("with the reference angles" in message for ok, message in result.findings if ok)


# --- every named mistake is told apart from the others on the checker's inputs -------------------
def test_every_named_rope_mistake_gives_its_own_output():
    from gptcourse.checks import close
    from gptcourse.checks.rope import ANGLE_MISTAKES, _angles, _apply_mistakes

    def distinct(values):
        values = [v() if callable(v) else v for v in values]
        return all(not close(a, b, atol=1e-4) for i, a in enumerate(values) for b in values[i + 1:])

    assert distinct([_angles(8, 5, 10_000.0, **kw) for kw in ANGLE_MISTAKES.values()])
    xr = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(0))
    assert distinct(_apply_mistakes(xr, *rope_angles(8, 5, 10_000.0)).values())
