"""Checkers for chapter 9, Llama's parts: RMSNorm, and grouped-query attention's key/value sharing
(check_expand_kv, with a reference expand_kv).

A little over 300 lines for two checkers and the reference expand_kv: a learner's expand_kv is
also run inside the package's GroupedQueryAttention, so the reference and its checker stay here."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..llama import GroupedQueryAttention, LlamaConfig, RMSNorm, causal_mask
from ..rope import apply_rope as reference_apply_rope
from ..rope import rope_angles as reference_rope_angles
from ..validate import require_instance, require_positive_int
from . import Check, close, diagnose, learner_name, shape_of, wrong_shape

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
        name, emb_dim = learner_name(rmsnorm_class, "RMSNorm"), 8
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
    name = learner_name(expand_kv_fn, "expand_kv")
    with Check(name, seed=0, known=EXPAND_ERRORS) as check:
        with torch.no_grad():
            for n_kv, n_heads in EXPAND_CASES:
                _check_expand_case(check, name, expand_kv_fn, n_kv, n_heads)
            _check_expand_in_attention(check, expand_kv_fn, name)
    return check
