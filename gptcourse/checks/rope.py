"""Checker for chapter 9: rotary position embeddings (RoPE), rope_angles and apply_rope."""

from __future__ import annotations

import torch

from ..rope import apply_rope as reference_apply_rope
from ..rope import rope_angles as reference_rope_angles
from ..rope import rotate_half
from . import Check, StopCheck, close, diagnose, learner_name, wrong_shape


def _attempt(check: Check, what: str, fn, *args, **kwargs) -> tuple[bool, object]:
    """check.call that records a failure without ending the check: (True, result) or (False, None)."""
    try:
        return True, check.call(what, fn, *args, **kwargs)
    except StopCheck:
        return False, None


HEAD_DIM, N_POS = 8, 5
ROPE_ERRORS = {
    "must match the size of tensor": "cos and sin must broadcast against x (..., T, head_dim): they "
        "are (T, head_dim), the angles repeated for both halves (torch.cat([angles, angles], dim=-1)), "
        "and rotate_half keeps x's shape",
}
ROPE_RULE = ("angle = position * base ** (-2i / head_dim) for pair i, positions 0, 1, ...; "
             "torch.cat([angles, angles], dim=-1)")
INTERLEAVED = ("this pairs neighbouring numbers (2i, 2i+1), the interleaved convention. Here, as in "
               "Hugging Face's Llama, number i pairs with number i + head_dim/2 (rotate half)")


def _angles(head_dim: int, n: int, base: float, *, exponent: str = "2i/d", layout: str = "cat",
            start: int = 0, swap: bool = False) -> torch.Tensor:
    """torch.stack([cos, sin]) with one deliberate change, to recognise a learner's mistake."""
    pairs = torch.arange(0, head_dim, 2, dtype=torch.float32)
    e = {"2i/d": pairs / head_dim, "+2i/d": -pairs / head_dim, "i/d": pairs / 2 / head_dim,
         "per number": torch.arange(head_dim, dtype=torch.float32) / head_dim}[exponent]
    angles = torch.outer(torch.arange(start, start + n, dtype=torch.float32), 1.0 / base**e)
    angles = {"cat": lambda a: torch.cat([a, a], dim=-1), "interleave": lambda a: a.repeat_interleave(2, -1),
              "none": lambda a: a}[layout](angles)
    cos, sin = angles.cos(), angles.sin()
    return torch.stack([sin, cos] if swap else [cos, sin])


ANGLE_MISTAKES = {
    "the exponent is i / head_dim: it is 2i / head_dim for pair i (torch.arange(0, head_dim, 2) "
    "/ head_dim), so that the frequencies run from 1 down to nearly 1 / base": dict(exponent="i/d"),
    "the frequencies grow instead of shrinking: theta_i = base ** (-2i / head_dim), that is "
    "1.0 / base ** (torch.arange(0, head_dim, 2) / head_dim)": dict(exponent="+2i/d"),
    "there is one frequency per number (torch.arange(head_dim)): there is one per pair, "
    "torch.arange(0, head_dim, 2) / head_dim, then torch.cat([angles, angles], dim=-1)":
        dict(exponent="per number", layout="none"),
    "the angles are interleaved (each one twice in a row: repeat_interleave, or stack then flatten): "
    f"{INTERLEAVED}, so put the two copies side by side, torch.cat([angles, angles], dim=-1)":
        dict(layout="interleave"),
    "cos and sin are swapped: return angles.cos(), angles.sin(), in that order": dict(swap=True),
    "the positions start at 1: the first token is at position 0 (torch.arange(n_positions)), "
    "where there is no rotation (cos 1, sin 0)": dict(start=1),
}


def _angle_shape_hint(got: tuple, head_dim: int, n: int) -> str | None:
    return {
        (n, head_dim // 2): "the angles are not repeated for the second half: torch.cat([angles, "
                            "angles], dim=-1), so that number i and number i + head_dim/2 share an angle",
        (n, head_dim // 2, 2): "torch.stack made a new last dimension: join the two copies with "
                               "torch.cat([angles, angles], dim=-1)",
        (n, 2 * head_dim): "there is one frequency per number, then doubled: one per pair, "
                           "torch.arange(0, head_dim, 2) / head_dim, then the cat",
        (head_dim, n): "rows and columns are swapped: torch.outer(positions, frequencies), "
                       "positions first",
    }.get(got)


def _check_angles(check: Check, name: str, rope_angles, base: float) -> tuple | None:
    """rope_angles(8, 5, base) against the reference; its (cos, sin) when usable, else None."""
    what = f"{name}({HEAD_DIM}, {N_POS}, {base:g})"
    ok, result = _attempt(check, what, rope_angles, HEAD_DIM, N_POS, base)
    if not ok:
        return None
    if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(t, torch.Tensor) for t in result)):
        check.fail(f"{what} should return two tensors, cos and sin, got {type(result).__name__}")
        return None
    want = (N_POS, HEAD_DIM)
    for part, value in zip(("cos", "sin"), result):
        got = tuple(value.shape)
        if got != want:
            hint = _angle_shape_hint(got, HEAD_DIM, N_POS)
            check.fail(f"{what}: {part} has the wrong shape {got}, expected {want}: {hint}" if hint else
                       wrong_shape(f"{what}'s {part}", value, want, {"head_dim": HEAD_DIM, "n_positions": N_POS}))
            return None
    out, expected = torch.stack(result), torch.stack(reference_rope_angles(HEAD_DIM, N_POS, base))
    if close(out, expected, atol=1e-5):
        return result
    if base != 10_000.0 and close(out, torch.stack(reference_rope_angles(HEAD_DIM, N_POS, 10_000.0))):
        check.fail(f"{what} ignores its base (10000 is written in): use the base argument, "
                   f"SmolLM2's is 100000")
        return result
    mistakes = {m: (lambda kw=kw: _angles(HEAD_DIM, N_POS, base, **kw)) for m, kw in ANGLE_MISTAKES.items()}
    check.fail(f"{what}: " + diagnose(out, mistakes, atol=1e-3, default=f"cos and sin differ from the "
                                      f"reference: {ROPE_RULE}", expected=expected))
    return result


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """The interleaved convention's quarter turn: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    return torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)


def _apply_mistakes(x, cos, sin) -> dict:
    half = x.size(-1) // 2
    swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1)
    formula = "apply_rope is x * cos + rotate_half(x) * sin, with rotate_half(x) = torch.cat([-x2, x1], dim=-1)"
    return {
        "the rotation goes the wrong way: the minus sign belongs on the second half, rotate_half(x) = "
        "torch.cat([-x2, x1], dim=-1) (and the sin term is added)": x * cos - rotate_half(x) * sin,
        "rotate_half has lost its minus sign: it is torch.cat([-x2, x1], dim=-1). Without it the turn "
        "is not a rotation (vectors change length)": x * cos + swapped * sin,
        f"{INTERLEAVED}: rotate_half works on the two halves, torch.cat([-x2, x1], dim=-1)":
            x * cos + _rotate_pairs(x) * sin,
        "rotate_half is missing: " + formula: x * cos + x * sin,
        "cos and sin are swapped: " + formula: x * sin + rotate_half(x) * cos,
        "the sin term is missing: " + formula: x * cos,
    }


def _check_apply(check: Check, name: str, apply_rope) -> bool:
    """apply_rope on (2, 3, 5, 8) queries with the reference angles. True if it ran with the right shape."""
    x = torch.randn(2, 3, N_POS, HEAD_DIM, generator=torch.Generator().manual_seed(12))
    cos, sin = reference_rope_angles(HEAD_DIM, N_POS, 10_000.0)
    what = f"{name}(x, cos, sin)"
    ok, out = _attempt(check, what, apply_rope, x.clone(), cos, sin)
    if not ok:
        return False
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        check.fail(wrong_shape(what, out, tuple(x.shape), {"head_dim": HEAD_DIM, "T": N_POS},
                               " (the output keeps x's shape (B, n_heads, T, head_dim))"))
        return False
    expected = reference_apply_rope(x, cos, sin)
    check.expect(close(out, expected, atol=1e-5),
                 f"{name} turns each pair (x_i, x_(i+d/2)) by its position's angle, as the reference does",
                 f"{what}: " + diagnose(out, _apply_mistakes(x, cos, sin), atol=1e-5, default=(
                     "the output differs from x * cos + rotate_half(x) * sin"), expected=expected))
    return True


def _check_rope_properties(check: Check, rope_angles, apply_rope, angles_ok: bool, name: str) -> None:
    """What makes RoPE useful, with the learner's functions: lengths kept, scores relative."""
    T, base = 12, 10_000.0
    try:
        angles = rope_angles(HEAD_DIM, T, base) if angles_ok else None
    except Exception:  # already reported by the angle checks
        angles = None
    whose = "your"
    if not (isinstance(angles, tuple) and len(angles) == 2 and all(
            isinstance(t, torch.Tensor) and tuple(t.shape) == (T, HEAD_DIM) for t in angles)):
        angles, whose = reference_rope_angles(HEAD_DIM, T, base), "the reference"
    gen = torch.Generator().manual_seed(13)
    q, k = torch.randn(HEAD_DIM, generator=gen), torch.randn(HEAD_DIM, generator=gen)
    # The same query and the same key placed at every position 0..T-1.
    qs = check.call(f"{name} on one query at every position", apply_rope, q.expand(1, 1, T, HEAD_DIM).clone(), *angles)
    ks = check.call(f"{name} on one key at every position", apply_rope, k.expand(1, 1, T, HEAD_DIM).clone(), *angles)
    if not (isinstance(qs, torch.Tensor) and qs.shape == (1, 1, T, HEAD_DIM) and ks.shape == qs.shape):
        return
    check.expect(close(qs.norm(dim=-1), q.norm().expand(1, 1, T), atol=1e-4),
                 f"with {whose} angles, every vector keeps its length (a rotation)",
                 f"with {whose} angles, {name} changes the vectors' lengths: a rotation keeps "
                 f"them. Each pair (x_i, x_(i+d/2)) must turn by one angle, with the cos and sin of "
                 f"that same angle and the minus sign in rotate_half")
    scores = qs[0, 0] @ ks[0, 0].T  # (T, T): query at position m, key at position n
    check.expect(close(scores[1:, 1:], scores[:-1, :-1], atol=1e-4),
                 f"with {whose} angles, the score q_m . k_n depends only on m - n (m, n < {T}): "
                 f"attention sees relative positions",
                 f"with {whose} angles, the score q_m . k_n changes when both tokens move by the same "
                 f"amount, so attention would see absolute positions: both numbers of a pair must "
                 f"turn by the same angle, position * theta_i")


def check_rope(rope_angles, apply_rope) -> Check:
    """Check a learner's rope_angles(head_dim, n_positions, base) and apply_rope(x, cos, sin)."""
    angles_name = learner_name(rope_angles, "rope_angles")
    apply_name = learner_name(apply_rope, "apply_rope")
    with Check("RoPE", seed=0, known=ROPE_ERRORS) as check:
        with torch.no_grad():
            angles = _check_angles(check, angles_name, rope_angles, 10_000.0)
            angles_ok = angles is not None and not check.problems
            if angles_ok:
                check.ok(f"{angles_name} gives the cos and sin of position * base ** (-2i / head_dim), "
                         f"each (n_positions, head_dim) with both halves equal")
                if _check_angles(check, angles_name, rope_angles, 100.0) is not None and check.passed:
                    check.ok(f"{angles_name} uses the base it is given")
            if _check_apply(check, apply_name, apply_rope):
                _check_rope_properties(check, rope_angles, apply_rope, angles is not None, apply_name)
    return check
