"""Checkers for chapter 9: RMSNorm, RoPE, grouped-query attention's key/value sharing, the chat template."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..chat import DEFAULT_SYSTEM, IM_END, IM_START
from ..chat import render_chat as reference_render_chat
from ..llama import GroupedQueryAttention, LlamaConfig, RMSNorm, causal_mask
from ..rope import apply_rope as reference_apply_rope
from ..rope import rope_angles as reference_rope_angles
from ..rope import rotate_half
from ..validate import require_instance, require_positive_int
from . import Check, StopCheck, close, diagnose, shape_of, wrong_shape


def _learner_name(obj, default: str) -> str:
    """The name the learner gave the function or class (a lambda has none: use the exercise's)."""
    name = getattr(obj, "__name__", "")
    return name if name.isidentifier() else default


def _attempt(check: Check, what: str, fn, *args, **kwargs) -> tuple[bool, object]:
    """check.call that records a failure without ending the check: (True, result) or (False, None)."""
    try:
        return True, check.call(what, fn, *args, **kwargs)
    except StopCheck:
        return False, None


# --- RMSNorm -------------------------------------------------------------------------------------
RMS_ERRORS = {
    "must match the size of tensor": "the shapes do not broadcast: did you forget keepdim=True in "
        "mean? Without it the (B, T) mean square cannot line up with the (B, T, C) input",
    "Dimension out of range": "use dim=-1 (the last dimension), so that inputs of any shape work",
    "unexpected keyword argument 'eps'": "keep the signature RMSNorm(emb_dim, eps=1e-5): the "
        "model passes its own eps",
}
RMS_FORMULA = "x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight"


def _rms_input() -> torch.Tensor:
    """(2, 3, 8) rows with different means and sizes; one row tiny (eps matters), one all zeros."""
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(9))
    sizes = torch.tensor([[1.0, 3.0, 1e-3], [0.5, 2.0, 0.0]]).unsqueeze(-1)
    means = torch.tensor([[0.3, 4.0, 0.0], [-1.0, 2.0, 0.0]]).unsqueeze(-1)
    return x * sizes + means


def _rms(x: torch.Tensor, eps: float = 1e-5, dim=-1) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=dim, keepdim=True) + eps)


def _rmsnorm_mistakes(x: torch.Tensor, eps: float = 1e-5) -> dict:
    n = x.size(-1)
    ms, mean = x.pow(2).mean(-1, keepdim=True), x.mean(-1, keepdim=True)
    var, var1 = x.var(-1, keepdim=True, unbiased=False), x.var(-1, keepdim=True, unbiased=True)
    sq_sum = x.pow(2).sum(-1, keepdim=True)
    centred = ("this is LayerNorm: it subtracts the mean. RMSNorm does not centre; it divides x "
               "itself by its root mean square: ")
    not_squared = "x is not squared: the root mean square is the root of x.pow(2).mean(-1), "
    return {
        "there is no eps: a row of zeros gives 0 / 0 = NaN. Add eps inside the root: "
        "torch.rsqrt(mean_square + self.eps)": lambda: _rms(x, eps=0.0),
        centred + RMS_FORMULA: (x - mean) * torch.rsqrt(var + eps),
        centred + RMS_FORMULA + " (and the variance here is unbiased, too)":
            (x - mean) * torch.rsqrt(var1 + eps),
        "the mean is subtracted from x (LayerNorm's centring): RMSNorm scales x itself, " + RMS_FORMULA:
            (x - mean) * torch.rsqrt(ms + eps),
        "x.var() subtracts the mean (LayerNorm's centring): RMSNorm uses the mean of the squares "
        "itself, x.pow(2).mean(dim=-1, keepdim=True)": x * torch.rsqrt(var + eps),
        "x.var() subtracts the mean (LayerNorm's centring) and is unbiased: RMSNorm uses the mean "
        "of the squares itself, x.pow(2).mean(dim=-1, keepdim=True)": x * torch.rsqrt(var1 + eps),
        "eps is added outside the square root: add it to the mean square, "
        "torch.rsqrt(mean_square + eps), which also protects rows of tiny values":
            x / (ms.sqrt() + eps),
        not_squared + "not of mean |x|": x * torch.rsqrt(x.abs().mean(-1, keepdim=True) + eps),
        not_squared + "not of mean x (which can be negative: NaN)": x * torch.rsqrt(mean + eps),
        not_squared + "not mean |x| itself": x / (x.abs().mean(-1, keepdim=True) + eps),
        "there is no square root: divide by sqrt(mean_square + eps) (torch.rsqrt), not by the "
        "mean square itself": x / (ms + eps),
        "the weight is added, not multiplied: " + RMS_FORMULA: _rms(x, eps) + 1.0,
        "x is multiplied by the root mean square instead of divided: torch.rsqrt is 1 / sqrt, "
        "torch.sqrt is the root itself": x * torch.sqrt(ms + eps),
        "the squares are summed, not averaged: use x.pow(2).mean(dim=-1, keepdim=True), the "
        "mean over the emb_dim numbers": x * torch.rsqrt(sq_sum + eps),
        "the sum of squares is divided by n - 1 (the unbiased convention): RMSNorm takes the plain "
        "mean, x.pow(2).mean(dim=-1, keepdim=True)": x * torch.rsqrt(sq_sum / (n - 1) + eps),
        "the mean square is taken over the wrong dimension (the tokens, dim=-2): normalise each "
        "token's vector, over the last dimension (dim=-1)": _rms(x, eps, dim=-2),
        "the mean square is taken over the batch dimension (dim=0): normalise over the last "
        "dimension (dim=-1), each token on its own": _rms(x, eps, dim=0),
        "the mean square is taken over the whole tensor: pass dim=-1 (and keepdim=True), so that "
        "each token's vector is normalised on its own": _rms(x, eps, dim=(0, 1, 2)),
        **{f"eps is {other:g}, not the eps given to __init__ (1e-5 by default): store it as "
           f"self.eps and use it": (lambda other=other: _rms(x, other)) for other in (1e-6, 1e-8, 1e-3)},
        "eps is torch.finfo(float32).eps (what nn.RMSNorm and F.rms_norm use when eps is None): "
        "pass eps=self.eps": lambda: _rms(x, torch.finfo(torch.float32).eps),
    }


def _rms_parameters(check: Check, norm, emb_dim: int) -> bool:
    """`weight` must be a Parameter of ones, shape (emb_dim,), and the only parameter. True if usable."""
    params = dict(norm.named_parameters())
    weight = getattr(norm, "weight", None)
    usable = False
    renamed = [name for name, p in params.items() if tuple(p.shape) == (emb_dim,)] if weight is None else []
    if renamed:
        check.fail(f"the scale is called `{renamed[0]}`: name it `weight`, the name SmolLM2's "
                   f"weights are loaded into (as in Hugging Face's LlamaRMSNorm)")
    elif weight is None:
        check.fail("no `weight`: RMSNorm has a trainable scale, "
                   "self.weight = nn.Parameter(torch.ones(emb_dim))")
    elif not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (emb_dim,):
        check.fail(f"`weight` should be a tensor of shape ({emb_dim},), one value per feature; "
                   f"got {shape_of(weight)}")
    elif not isinstance(weight, nn.Parameter):
        check.fail("`weight` is a plain tensor: wrap it in nn.Parameter so that it is trained "
                   "and loaded with the model's weights")
        usable = True
    elif not torch.all(weight == 1):
        check.fail("`weight` should start as ones, so that a new RMSNorm only normalises")
        usable = True
    else:
        check.ok(f"`weight` is a trainable Parameter of shape ({emb_dim},) that starts as ones")
        usable = True
    extra = [name for name in params if name != "weight" and name not in renamed[:1]]
    if extra:
        check.fail(f"RMSNorm has no shift or bias: remove {', '.join(f'`{n}`' for n in extra)}. Its "
                   f"only parameter is `weight` (SmolLM2 stores one vector per norm)")
    return usable


def check_rmsnorm(rmsnorm_class) -> Check:
    """Check a learner's RMSNorm(emb_dim, eps=1e-5) class against the reference and common mistakes."""
    with Check("RMSNorm", seed=0, known=RMS_ERRORS) as check:
        name, emb_dim = _learner_name(rmsnorm_class, "RMSNorm"), 8
        norm = check.call(f"{name}({emb_dim})", rmsnorm_class, emb_dim)
        if not isinstance(norm, nn.Module):
            check.stop(f"{name}({emb_dim}) is a {type(norm).__name__}: make it a module, "
                       f"class {name}(nn.Module), with super().__init__() first in __init__")
        usable = _rms_parameters(check, norm, emb_dim)
        x, ref = _rms_input(), RMSNorm(emb_dim)
        with torch.no_grad():
            if usable:  # already reported if it does not start as ones; the normalising is checked apart
                norm.weight.fill_(1.0)
            out = check.call(f"{name}({emb_dim})(x)", norm, x.clone())
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                check.stop(wrong_shape(f"{name}({emb_dim})(x)", out, tuple(x.shape), {"emb_dim": emb_dim},
                                       f" (the output keeps the input's shape {tuple(x.shape)})"))
            expected = ref(x)
            if close(out, expected, atol=1e-4):
                check.ok("each token's vector is divided by its root mean square (no centring, eps "
                         "inside the root; a row of zeros stays zeros)")
            else:
                default = ("the output holds NaN: a row of zeros must give zeros; add eps inside the "
                           "root" if torch.isnan(out).any() else "the output differs from the "
                           "reference: " + RMS_FORMULA)
                check.stop(diagnose(out, _rmsnorm_mistakes(x), atol=1e-4, default=default,
                                    expected=expected, sizes={"emb_dim": emb_dim}))
            if usable:
                _check_rms_weight(check, norm, ref, x, name)
            _check_rms_other_size(check, rmsnorm_class, name)
    return check


def _check_rms_weight(check: Check, norm, ref: RMSNorm, x: torch.Tensor, name: str) -> None:
    """With a trained (random) weight the output must be normalised * weight."""
    emb_dim = x.size(-1)
    w = torch.randn(emb_dim, generator=torch.Generator().manual_seed(10))
    norm.weight.copy_(w)
    ref.weight.copy_(w)
    out = check.call(f"{name}({emb_dim})(x) with a trained weight", norm, x.clone())
    if close(out, ref(x), atol=1e-4):
        check.ok("with a trained weight the output is normalised x times weight, as in SmolLM2")
        return
    check.fail(diagnose(out, {
        "the weight is never used in forward: multiply by it, " + RMS_FORMULA: _rms(x),
        "the weight is added, not multiplied: " + RMS_FORMULA: _rms(x) + w,
        "the weight is applied before normalising: normalise x first, then multiply by "
        "self.weight": _rms(x * w),
    }, atol=1e-4, default="with a trained weight the output differs: " + RMS_FORMULA,
        expected=ref(x), sizes={"emb_dim": emb_dim}))


def _check_rms_other_size(check: Check, rmsnorm_class, name: str) -> None:
    """RMSNorm(16, eps=1e-3) on a 2-D input: sizes and eps come from the arguments."""
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(11))
    x[0] *= 1e-2  # a row of small numbers, where eps matters
    other = check.call(f"{name}(16, eps=1e-3)", rmsnorm_class, 16, eps=1e-3)
    weight = getattr(other, "weight", None)
    if isinstance(weight, torch.Tensor) and tuple(weight.shape) == (16,):
        weight.fill_(1.0)  # its start was checked above
    out = check.call(f"{name}(16, eps=1e-3)(x) on a (5, 16) input", other, x.clone())
    check.expect(close(out, RMSNorm(16, eps=1e-3)(x), atol=1e-4),
                 "works for any emb_dim, any number of leading dimensions and the eps it is given",
                 "eps given to __init__ is not used: store it (self.eps = eps) and add self.eps"
                 if close(out, _rms(x), atol=1e-4) else
                 f"{name}(16, eps=1e-3) on a (5, 16) input gives wrong values: avoid fixed sizes, "
                 f"use emb_dim, dim=-1 and self.eps")


# --- RoPE ----------------------------------------------------------------------------------------
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
    angles_name = _learner_name(rope_angles, "rope_angles")
    apply_name = _learner_name(apply_rope, "apply_rope")
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


# --- grouped-query attention: sharing key/value heads -----------------------------------------------
def expand_kv(kv: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, n_kv_heads, T, head_dim) -> (B, n_heads, T, head_dim): query head h reads kv head h // group."""
    require_instance("kv", kv, torch.Tensor)
    n_heads = require_positive_int("n_heads", n_heads)
    if kv.dim() != 4:
        raise ValueError(f"kv must be (B, n_kv_heads, T, head_dim), got shape {tuple(kv.shape)}")
    if n_heads % kv.size(1):
        raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={kv.size(1)}: each "
                         f"key/value head serves the same number of query heads")
    return kv.repeat_interleave(n_heads // kv.size(1), dim=1)  # each kv head once per query head of its group


EXPAND_RULE = ("query head h reads key/value head h // group, with group = n_heads // n_kv_heads: "
               "torch.repeat_interleave(kv, group, dim=1)")
EXPAND_ERRORS = {
    "is out of bounds for dimension": "a query head asked for a key/value head that does not exist: "
        "head h reads kv head h // group, where group = n_heads // n_kv_heads (not h // n_kv_heads)",
    "received an invalid combination of arguments": "the number of repeats must be an int: use "
        "integer division, group = n_heads // n_kv_heads",
}
B, T_KV, HD_KV = 2, 5, 8
EXPAND_CASES = [(3, 12), (3, 9), (1, 4), (4, 4)]  # (n_kv_heads, n_heads): first all sizes differ


def _expand_shape_hint(got: tuple, n_kv: int, n_heads: int) -> str | None:
    group = n_heads // n_kv
    if got == (B, n_kv, T_KV, HD_KV):
        return (f"the keys come back unexpanded, with {n_kv} heads: repeat each one for the "
                f"{group} query heads of its group")
    if got == (B, 0, T_KV, HD_KV):
        return ("the group size is 0: it is n_heads // n_kv_heads (the division is upside down)")
    if got == (B, n_kv * n_kv, T_KV, HD_KV):
        return (f"each head is repeated n_kv_heads = {n_kv} times: repeat it group = "
                f"n_heads // n_kv_heads = {group} times")
    if got == (B, n_kv * n_heads, T_KV, HD_KV):
        return (f"each head is repeated n_heads = {n_heads} times: repeat it group = "
                f"n_heads // n_kv_heads = {group} times")
    if got == (B, n_kv, group, T_KV, HD_KV):
        return ("the group is still a dimension of its own: reshape to (B, n_heads, T, head_dim), "
                "which puts each kv head's copies next to each other")
    if got == (B, group, n_kv, T_KV, HD_KV):
        return ("the group is still a dimension of its own, and before the kv heads: expand "
                "kv[:, :, None] (group after n_kv_heads), then reshape to (B, n_heads, T, head_dim)")
    base = [B, n_kv, T_KV, HD_KV]
    for dim in (0, 2, 3):
        grown = list(base)
        grown[dim] *= group
        if got == tuple(grown):
            return (f"the repeat runs along dimension {dim}: keys are (B, n_kv_heads, T, head_dim), "
                    f"so the heads are dimension 1 (dim=1)")
    return None


def _heads_read(out: torch.Tensor, kv: torch.Tensor) -> list[int] | None:
    """For each output head, the input head it is a copy of; None if some head copies none."""
    read = []
    for h in range(out.size(1)):
        match = [j for j in range(kv.size(1)) if close(out[:, h], kv[:, j])]
        if not match:
            return None
        read.append(match[0])
    return read


def _check_expand_case(check: Check, name: str, expand_fn, n_kv: int, n_heads: int) -> None:
    gen = torch.Generator().manual_seed(14 + n_kv * n_heads)
    kv = torch.randn(B, n_kv, T_KV, HD_KV, generator=gen)
    what = f"{name}(kv of shape {tuple(kv.shape)}, n_heads={n_heads})"
    out = check.call(what, expand_fn, kv.clone(), n_heads)
    want = (B, n_heads, T_KV, HD_KV)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        hint = _expand_shape_hint(tuple(out.shape), n_kv, n_heads) if isinstance(out, torch.Tensor) else None
        check.stop(f"{what} has shape {shape_of(out)}, expected {want}: {hint}" if hint else
                   wrong_shape(what, out, want, {"n_heads": n_heads, "n_kv_heads": n_kv}))
    expected = expand_kv(kv, n_heads)
    if close(out, expected):
        check.ok(f"{n_heads} query heads sharing {n_kv} key/value head{'s' * (n_kv > 1)}: "
                 f"head h reads kv head h // {n_heads // n_kv}")
        return
    read, right = _heads_read(out, kv), [h // (n_heads // n_kv) for h in range(n_heads)]
    if read == [h % n_kv for h in range(n_heads)]:
        check.stop(f"{what}: the heads are tiled (.repeat, or expand then reshape in the wrong order): "
                   f"query head h reads kv head h % n_kv_heads, {read}. Each kv head serves "
                   f"neighbouring query heads, {right}: torch.repeat_interleave(kv, group, dim=1)")
    if read is not None:
        check.stop(f"{what}: query heads read kv heads {read}, expected {right}: {EXPAND_RULE}")
    check.stop(f"{what}: the output's heads are not whole copies of key/value heads (a reshape "
               f"after repeating along another dimension mixes positions): {EXPAND_RULE}")


def _check_expand_in_attention(check: Check, expand_fn, name: str) -> None:
    """Grouped-query attention with the learner's expand_kv equals the reference module."""
    cfg = LlamaConfig(vocab_size=11, context_length=8, emb_dim=24, n_heads=6, n_kv_heads=2,
                      n_layers=1, hidden_dim=16)
    torch.manual_seed(15)
    att = GroupedQueryAttention(cfg).eval()
    x = torch.randn(B, T_KV, cfg.emb_dim, generator=torch.Generator().manual_seed(16))
    cos, sin = reference_rope_angles(cfg.head_dim, T_KV, cfg.rope_base)
    q = att.W_query(x).view(B, T_KV, cfg.n_heads, cfg.head_dim).transpose(1, 2)
    k = att.W_key(x).view(B, T_KV, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
    v = att.W_value(x).view(B, T_KV, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
    q, k = reference_apply_rope(q, cos, sin), reference_apply_rope(k, cos, sin)
    k = check.call(f"{name}(k, {cfg.n_heads})", expand_fn, k, cfg.n_heads)
    v = check.call(f"{name}(v, {cfg.n_heads})", expand_fn, v, cfg.n_heads)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T_KV, 0))
    out = att.out_proj(out.transpose(1, 2).reshape(B, T_KV, cfg.emb_dim))
    check.expect(close(out, att(x, cos, sin), atol=1e-5),
                 f"grouped-query attention with your {name} equals GroupedQueryAttention's output: "
                 f"the KV cache stores {cfg.n_kv_heads} heads instead of {cfg.n_heads}",
                 f"grouped-query attention with your {name} differs from GroupedQueryAttention: "
                 f"{EXPAND_RULE}")


def check_expand_kv(expand_kv_fn) -> Check:
    """Check a learner's expand_kv(kv, n_heads): (B, n_kv_heads, T, hd) -> (B, n_heads, T, hd)."""
    name = _learner_name(expand_kv_fn, "expand_kv")
    with Check(name, seed=0, known=EXPAND_ERRORS) as check:
        with torch.no_grad():
            for n_kv, n_heads in EXPAND_CASES:
                _check_expand_case(check, name, expand_kv_fn, n_kv, n_heads)
            _check_expand_in_attention(check, expand_kv_fn, name)
    return check


# --- the chat template -----------------------------------------------------------------------------
SYSTEM = {"role": "system", "content": DEFAULT_SYSTEM}
ONE_QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]
CONVERSATION = [
    {"role": "system", "content": "You are a pirate."},
    {"role": "user", "content": "Where is the treasure? "},
    {"role": "assistant", "content": "Arr!\nFollow the map."},
    {"role": "user", "content": "Which map?"},
]
CHAT_ERRORS = {
    "unexpected keyword argument 'add_generation_prompt'": "keep the signature "
        "render_chat(messages, add_generation_prompt=True)",
}
MESSAGE = "each message is '<|im_start|>{role}\\n{content}<|im_end|>\\n'"


def _render(messages, gen: bool = True, *, system: str = "default", end_nl: str = "\n",
            role_nl: str = "\n", role=str, prompt: str = "asked", prompt_nl: str = "\n",
            prompt_role=None, strip: bool = False, order=None) -> str:
    """render_chat with one deliberate change, to recognise a learner's mistake."""
    given = bool(messages) and messages[0]["role"] == "system"
    msgs = [SYSTEM, *messages] if system == "always" or system == "default" and not given else list(messages)
    if order is not None:
        msgs = order(msgs)
    text = "".join(f"{IM_START}{role(m['role'])}{role_nl}{m['content'].strip() if strip else m['content']}"
                   f"{IM_END}{end_nl}" for m in msgs)
    if prompt == "always" or prompt == "asked" and gen:
        text += f"{IM_START}{(prompt_role or role)('assistant')}{prompt_nl}"
    return text


# Each mistake, and the ways of writing it (the generation prompt may be written apart).
TEMPLATE_MISTAKES = {
    "there is no default system message: when messages[0] is not a system message, SmolLM2's "
    "template puts {'role': 'system', 'content': DEFAULT_SYSTEM} first": [dict(system="never")],
    "a default system message is added although the conversation starts with its own: add it only "
    "when messages[0]['role'] != 'system'": [dict(system="always")],
    "the newline after <|im_end|> is missing: " + MESSAGE: [dict(end_nl="")],
    "the newline between the role and the content is missing: " + MESSAGE:
        [dict(role_nl=""), dict(role_nl="", prompt_nl="")],
    "the role is capitalised: SmolLM2's roles are lower case ('user', not 'User')":
        [dict(role=str.capitalize), dict(role=str.capitalize, prompt_role=str)],
    "the generation prompt is missing: with add_generation_prompt=True the text ends with "
    "'<|im_start|>assistant\\n', where the model writes its reply": [dict(prompt="never")],
    "the generation prompt is added although add_generation_prompt=False: add "
    "'<|im_start|>assistant\\n' only when it is True": [dict(prompt="always")],
    "the generation prompt lacks its newline: it is '<|im_start|>assistant\\n' (the reply starts on "
    "the next line)": [dict(prompt_nl="")],
    "the contents are stripped: keep each message's text exactly as it is": [dict(strip=True)],
    "the messages are in reverse order: render them as they come in the list":
        [dict(order=lambda msgs: msgs[::-1])],
}


def _first_difference(got: str, want: str, width: int = 14) -> str:
    """Where two strings first differ, shown short: 'at character i: got '...', expected '...''."""
    i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    start = max(0, i - width)
    return f"at character {i}: got {got[start:i + width]!r}, expected {want[start:i + width]!r}"


def _template_diagnosis(got: str, want: str, messages, gen: bool) -> str:
    """The named mistake behind a wrong rendering, else what the markers or the order show."""
    for mistake, ways in TEMPLATE_MISTAKES.items():
        if any(got == _render(messages, gen, **kw) for kw in ways):
            return mistake
    for marker in (IM_START, IM_END):
        if got.count(marker) != want.count(marker):
            how = "is missing or misspelled" if got.count(marker) < want.count(marker) else "comes too often"
            return (f"the marker {marker} {how}: write the special markers exactly, '<|im_start|>' "
                    f"and '<|im_end|>' (a bar on each side), once per message")
    if sorted(got.split(IM_START)) == sorted(want.split(IM_START)):
        return "the messages are in the wrong order: render them as they come in the list"
    if got.lower() == want.lower():
        return "the letter case differs: roles and markers are lower case, as the template writes them"
    if got.startswith(f"{IM_START}system\n") and not want.startswith(got.split(IM_END)[0]) \
            and (not messages or messages[0]["role"] != "system"):
        return "the default system message is not SmolLM2's: use DEFAULT_SYSTEM from gptcourse.chat"
    return f"the text differs from SmolLM2's template ({MESSAGE})"


def check_chat_template(render_chat) -> Check:
    """Check a learner's render_chat(messages, add_generation_prompt=True) -> str."""
    name = _learner_name(render_chat, "render_chat")
    cases = [("one user message, no system message", ONE_QUESTION, None),
             ("a conversation with its own system message", CONVERSATION, True),
             ("the conversation with add_generation_prompt=False", CONVERSATION, False)]
    with Check("chat template", seed=0, known=CHAT_ERRORS) as check:
        named: set[str] = set()  # a mistake is explained once; later cases only show where
        for label, messages, gen in cases:
            given = copy.deepcopy(messages)
            args = {} if gen is None else {"add_generation_prompt": gen}
            shown = f"{name}(messages{', add_generation_prompt=' + str(gen) if args else ''})"
            got = check.call(shown, render_chat, given, **args)
            if given != messages:
                check.fail(f"{shown} changed the list it was given (insert or append on messages): "
                           f"build a new list, for example [system, *messages]")
            if not isinstance(got, str):
                check.stop(f"{shown} should return one string, the whole text; got {type(got).__name__}")
            want = reference_render_chat(messages, gen is not False)
            if got == want:
                check.ok(f"{label}: the text equals SmolLM2's template")
                continue
            diagnosis = _template_diagnosis(got, want, messages, gen is not False)
            if gen is None and got == _render(messages, prompt="never") and check.call(
                    shown, render_chat, copy.deepcopy(messages), add_generation_prompt=True) == want:
                diagnosis = ("add_generation_prompt should default to True: "
                             f"def {name}(messages, add_generation_prompt=True)")
            said = diagnosis in named
            named.add(diagnosis)
            check.fail(f"{label}: {'the same mistake' if said else diagnosis} ({_first_difference(got, want)})")
    return check
