"""Checkers for chapter 4's layers: LayerNorm, GELU and the feed-forward network, each against its
formula; checks/blocks.py joins them into a block. All of them share LAYER_ERRORS (a missing
keepdim, a fixed dim), so the three stay together here: a little over 300 lines."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import GPTConfig
from ..layers import FeedForward, LayerNorm, gelu_exact
from . import Check, close, diagnose, learner_name, shape_of, wrong_shape

KEEPDIM = ("the shapes do not broadcast: did you forget keepdim=True in mean/var? "
           "Without it the (B, T) statistics cannot line up with the (B, T, C) input")
# What learner layers commonly raise, and the likely mistake behind it (for Check(known=...)).
LAYER_ERRORS = {
    "must match the size of tensor": KEEPDIM,
    "Dimension out of range": "use dim=-1 (the last dimension) rather than a fixed number, "
                              "so that inputs of any shape work",
}


# --- LayerNorm ---------------------------------------------------------------------------------
def _layernorm_input() -> torch.Tensor:
    """(2, 3, 8) rows with different means and spreads; one row nearly constant, one constant."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, generator=gen)
    spreads = torch.tensor([[1.0, 3.0, 0.5], [2.0, 1e-3, 0.0]]).unsqueeze(-1)  # (2, 3, 1)
    means = torch.tensor([[0.0, 5.0, -2.0], [1.0, 4.0, 7.0]]).unsqueeze(-1)
    return x * spreads + means


def _norm(x, dim=-1, unbiased=False, eps=1e-5, eps_inside=True, center=True, sqrt=True):
    """Normalise x with one deliberate change, to recognise a learner's mistake."""
    mean = x.mean(dim=dim, keepdim=True)
    var = x.var(dim=dim, keepdim=True, unbiased=unbiased)
    top = x - mean if center else x
    if not sqrt:
        return top / (var + eps)
    return top / (torch.sqrt(var + eps) if eps_inside else torch.sqrt(var) + eps)


def _std_as_var(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    std = x.var(dim=-1, keepdim=True, unbiased=False).sqrt()
    return (x - x.mean(dim=-1, keepdim=True)) / torch.sqrt(std + eps)


def _layernorm_mistakes(x: torch.Tensor) -> dict:
    all_dims = tuple(range(x.dim()))
    return {
        "the variance looks unbiased (divided by n - 1): GPT-2 uses the biased one, "
        "var(..., unbiased=False), dividing by n": _norm(x, unbiased=True),
        "eps is added outside the square root: use torch.sqrt(var + eps), which also "
        "protects rows whose variance is tiny": _norm(x, eps_inside=False),
        "there is no eps: a row with (nearly) equal values divides by ~0. "
        "Use torch.sqrt(var + eps)": lambda: _norm(x, eps=0.0),
        "the statistics are taken over the wrong dimension: normalise each token's vector, "
        "over the last dimension (dim=-1)": _norm(x, dim=-2),
        "the statistics are taken over the batch dimension (dim=0): normalise over the "
        "last dimension (dim=-1), each token on its own": _norm(x, dim=0),
        "the statistics are taken over the whole tensor: pass dim=-1 (and keepdim=True) "
        "so that each token's vector is normalised on its own": _norm(x, dim=all_dims),
        "this uses x.std(), which is unbiased (divides by n - 1), with eps outside the square root: "
        "use torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + eps)":
            _norm(x, unbiased=True, eps_inside=False),
        **{f"eps is {eps:g}, not the eps given to __init__ (1e-5 by default): store it as self.eps "
           f"and use torch.sqrt(var + self.eps)": (lambda eps=eps: _norm(x, eps=eps))
           for eps in (1e-6, 1e-8, 1e-12, 1e-3)},
        "the mean is not subtracted: compute (x - mean) / sqrt(var + eps)": _norm(x, center=False),
        "it divides by the variance, not by its square root (the standard deviation)":
            _norm(x, sqrt=False),
        "the standard deviation is used as the variance (a square root too many): divide by "
        "torch.sqrt(var + eps), where var is the variance itself": lambda: _std_as_var(x),
        # scale starts at ones and shift at zeros, so shift * norm + scale is all ones.
        "scale and shift are swapped: return self.scale * norm_x + self.shift": torch.ones_like(x),
    }


def _parameter_findings(check: Check, ln, emb_dim: int) -> bool:
    """Check `scale` (ones) and `shift` (zeros) are trainable Parameters. True if both usable."""
    scale, shift = getattr(ln, "scale", None), getattr(ln, "shift", None)
    if scale is None and shift is None:
        check.fail("no `scale` and `shift`: LayerNorm needs a trainable scale and shift, "
                   "self.scale = nn.Parameter(torch.ones(emb_dim)) and "
                   "self.shift = nn.Parameter(torch.zeros(emb_dim))")
        return False
    usable = True
    for attr, value, start in [("scale", scale, "ones"), ("shift", shift, "zeros")]:
        fill = 1.0 if attr == "scale" else 0.0
        if value is None:
            check.fail(f"no `{attr}`: add self.{attr} = nn.Parameter(torch.{start}(emb_dim))")
            usable = False
        elif not isinstance(value, torch.Tensor) or tuple(value.shape) != (emb_dim,):
            check.fail(f"`{attr}` should be a tensor of shape ({emb_dim},), one value per feature; "
                       f"got {shape_of(value)}")
            usable = False
        elif not isinstance(value, nn.Parameter):
            check.fail(f"`{attr}` is a plain tensor: wrap it in nn.Parameter so that the "
                       f"optimizer trains it")
        elif not torch.all(value == fill):
            check.fail(f"`{attr}` should start as {start}, so that a new LayerNorm only normalises")
        else:
            check.ok(f"`{attr}` is a trainable Parameter of shape ({emb_dim},) that starts as {start}")
    return usable


def check_layernorm(layer_norm_class) -> Check:
    """Check a learner's LayerNorm(emb_dim) class against the reference and common mistakes."""
    with Check("LayerNorm", seed=0, known=LAYER_ERRORS) as check:
        name, emb_dim = learner_name(layer_norm_class, "LayerNorm"), 8
        ln = check.call(f"{name}({emb_dim})", layer_norm_class, emb_dim)
        usable = _parameter_findings(check, ln, emb_dim)
        x, ref = _layernorm_input(), LayerNorm(emb_dim)
        with torch.no_grad():
            out = check.call(f"{name}({emb_dim})(x)", ln, x.clone())
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                check.stop(wrong_shape(f"{name}({emb_dim})(x)", out, tuple(x.shape), {"emb_dim": emb_dim},
                                       f" (the output keeps the input's shape {tuple(x.shape)})"))
            if close(out, ref(x), atol=1e-4):
                check.ok("each token's vector is normalised to mean 0 and variance 1 "
                         "(biased variance, eps inside the square root)")
            elif torch.isnan(out).any():
                check.stop("the output holds NaN for a constant row (variance 0): add eps "
                           "inside the square root, torch.sqrt(var + eps)")
            else:
                check.stop(diagnose(out, _layernorm_mistakes(x), atol=1e-4, default=(
                    "the output differs from the reference: subtract the mean over the last "
                    "dimension and divide by torch.sqrt(var + eps) with the biased variance"),
                    expected=ref(x), sizes={"emb_dim": emb_dim}))
            if usable:
                _check_scale_shift(check, ln, ref, x, emb_dim)
            other = check.call(f"{name}(16)", layer_norm_class, 16)
            x16 = torch.randn(5, 16, generator=torch.Generator().manual_seed(5)) * 3 + 1
            out16 = check.call(f"{name}(16)(x) on a 2-D input", other, x16)
            check.expect(close(out16, LayerNorm(16)(x16), atol=1e-4),
                         "works for any emb_dim and any number of leading dimensions",
                         "LayerNorm(16) on a (5, 16) input gives wrong values: avoid fixed sizes, "
                         "use emb_dim and dim=-1")
    return check


def _check_scale_shift(check: Check, ln, ref: LayerNorm, x: torch.Tensor, emb_dim: int) -> None:
    """With random scale and shift, the output must be scale * normalised + shift."""
    gen = torch.Generator().manual_seed(6)
    scale, shift = torch.randn(emb_dim, generator=gen), torch.randn(emb_dim, generator=gen)
    for module in (ln, ref):
        module.scale.copy_(scale)
        module.shift.copy_(shift)
    out = check.call("LayerNorm(x) with a trained scale and shift", ln, x.clone())
    if close(out, ref(x), atol=1e-4):
        check.ok("the output is scale * normalised + shift, and matches nn.LayerNorm "
                 "with the same parameters")
        return
    plain = _norm(x)
    check.fail(diagnose(out, {
        "scale and shift are never used in forward: return self.scale * norm_x + self.shift":
            plain,
        "shift is never used in forward: return self.scale * norm_x + self.shift":
            scale * plain,
        "scale is never used in forward: return self.scale * norm_x + self.shift":
            plain + shift,
        "scale and shift are swapped: return self.scale * norm_x + self.shift":
            shift * plain + scale,
    }, atol=1e-4, default="with a trained scale and shift the output differs: "
                          "return self.scale * norm_x + self.shift", expected=ref(x)))


# --- GELU --------------------------------------------------------------------------------------
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _tanh_gelu(x, constant=SQRT_2_OVER_PI, cubic=0.044715, power=3, half=0.5):
    return half * x * (1 + torch.tanh(constant * (x + cubic * x.pow(power))))


def _gelu_mistakes(x: torch.Tensor) -> dict:
    use = " GPT-2's GELU is 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))"
    return {
        "this is the exact GELU (with erf); here the tanh approximation is asked for." + use:
            gelu_exact(x),
        "this is ReLU, not GELU." + use: torch.relu(x),
        "this is the sigmoid approximation x * sigmoid(1.702 x)." + use:
            x * torch.sigmoid(1.702 * x),
        "the constant in front should be sqrt(2 / pi) ≈ 0.798, not sqrt(pi / 2)":
            _tanh_gelu(x, constant=math.sqrt(math.pi / 2)),
        "the constant in front should be sqrt(2 / pi) ≈ 0.798, not 2 / pi":
            _tanh_gelu(x, constant=2 / math.pi),
        "the constant in front should be sqrt(2 / pi) ≈ 0.798, not sqrt(2 * pi)":
            _tanh_gelu(x, constant=math.sqrt(2 * math.pi)),
        "the constant in front is missing: multiply by sqrt(2 / pi) ≈ 0.798":
            _tanh_gelu(x, constant=1.0),
        "the cubic coefficient should be 0.044715": _tanh_gelu(x, cubic=0.44715),
        "the cubic coefficient should be 0.044715 (one 4 is missing)": _tanh_gelu(x, cubic=0.04715),
        "the cubic term should be x**3 (x cubed), not x**2": _tanh_gelu(x, power=2),
        "the factor 0.5 is missing: GELU(x) = 0.5 * x * (1 + tanh(...))": _tanh_gelu(x, half=1.0),
        "the leading x is missing: GELU(x) = 0.5 * x * (1 + tanh(...))":
            0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3)))),
    }


def _gelu_constants(x: torch.Tensor, out: torch.Tensor) -> str | None:
    """If `out` is 0.5 x (1 + tanh(a x + c x^3)) with other constants, name the mistyped one."""
    x, out = x.double(), out.detach().double()
    inner = out / (0.5 * x) - 1  # tanh(a x + c x^3) where x != 0
    usable = (x.abs() > 0.1) & (inner.abs() < 0.999)
    if usable.sum() < 10:
        return None
    xs, t = x[usable], torch.atanh(inner[usable])
    design = torch.stack([xs, xs**3], dim=1)
    a, c = torch.linalg.lstsq(design, t[:, None]).solution.flatten().tolist()
    if not torch.allclose(design @ torch.tensor([a, c], dtype=torch.double), t, atol=1e-3) or a == 0:
        return None  # not of this form: another mistake
    cubic = c / a
    if math.isclose(-a, SQRT_2_OVER_PI, rel_tol=1e-3) and math.isclose(cubic, 0.044715, rel_tol=1e-4):
        return ("the bracket subtracts the tanh (or the tanh's argument has a minus sign): "
                "GELU(x) = 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))), with plus signs")
    if not math.isclose(a, SQRT_2_OVER_PI, rel_tol=1e-3):
        return (f"the constant in front is {a:.4g}: it should be sqrt(2 / pi) ≈ 0.7979 "
                f"(math.sqrt(2 / math.pi))")
    if not math.isclose(cubic, 0.044715, rel_tol=1e-4):
        return f"the cubic coefficient is {cubic:.4g}: it should be 0.044715 (check the digits)"
    return None


def _gelu_bracket(x: torch.Tensor, out: torch.Tensor) -> str | None:
    """If `out` is x * (p + q * tanh(...)) with the right tanh but other coefficients outside it,
    name them: GELU's bracket is 0.5 * (1 + tanh(...))."""
    x, out = x.double(), out.detach().double()
    keep = x.abs() > 0.1
    t = torch.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x.pow(3)))[keep]
    design = torch.stack([torch.ones_like(t), t], dim=1)
    target = (out[keep] / x[keep])[:, None]
    p, q = torch.linalg.lstsq(design, target).solution.flatten().tolist()
    if abs(q) < 1e-3 or not torch.allclose(design @ torch.tensor([p, q], dtype=torch.double),
                                           target.flatten(), atol=1e-4):
        return None
    if math.isclose(p, 0.5, rel_tol=1e-3) and math.isclose(q, -0.5, rel_tol=1e-3):
        return "the bracket subtracts the tanh: GELU(x) = 0.5 * x * (1 + tanh(...)), with a plus"
    return (f"the output is x * ({p:.4g} + {q:.4g} * tanh(...)): a coefficient outside the tanh is "
            f"wrong; GELU(x) = 0.5 * x * (1 + tanh(...)), that is x * (0.5 + 0.5 * tanh(...))")


def check_gelu(gelu) -> Check:
    """Check a learner's GELU: an nn.Module class (or any function of a tensor)."""
    with Check("GELU", seed=0, known=LAYER_ERRORS) as check:
        fn = gelu
        if isinstance(gelu, type):
            fn = check.call(f"{learner_name(gelu, 'GELU')}()", gelu)
        x = torch.linspace(-6, 6, 241)
        with torch.no_grad():
            out = check.call("GELU(x)", fn, x.clone())
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                check.stop(f"GELU(x) should keep the input's shape {tuple(x.shape)}, got {shape_of(out)}")
            reference = nn.GELU(approximate="tanh")
            if close(out, reference(x), atol=1e-5):
                check.ok("matches nn.GELU(approximate='tanh') from -6 to 6")
            else:
                check.stop(diagnose(out, _gelu_mistakes(x), atol=1e-5,
                                    default=_gelu_constants(x, out) or _gelu_bracket(x, out) or (
                    "the values differ from GELU's tanh approximation: "
                    "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))"),
                    expected=reference(x)))
            grid = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(7)) * 3
            out3 = check.call("GELU on a (2, 3, 4) tensor", fn, grid.clone())
            check.expect(isinstance(out3, torch.Tensor) and close(out3, reference(grid), atol=1e-5),
                         "works element by element on a tensor of any shape",
                         "on a (2, 3, 4) tensor the output is wrong: apply the formula element by "
                         "element and keep the shape")
            check.expect(close(check.call("GELU(0)", fn, torch.zeros(1)), torch.zeros(1)),
                         "GELU(0) = 0", "GELU(0) should be 0")
    return check


# --- FeedForward -------------------------------------------------------------------------------
FF_CFG = GPTConfig(vocab_size=10, context_length=8, emb_dim=12, n_heads=2, n_layers=1, drop_rate=0.0)


def check_feed_forward(feed_forward_class) -> Check:
    """Check FeedForward(cfg): Linear(C, 4C) -> GELU (tanh) -> Linear(4C, C) in `self.layers`."""
    with Check("FeedForward", seed=0, known=LAYER_ERRORS) as check:
        C = FF_CFG.emb_dim
        ff = check.call(f"{learner_name(feed_forward_class, 'FeedForward')}(cfg)", feed_forward_class, FF_CFG)
        layers = getattr(ff, "layers", None)
        if not isinstance(layers, nn.Sequential) or len(layers) != 3:
            check.stop("keep the three parts in self.layers = nn.Sequential(Linear, GELU, Linear), "
                       "so that later chapters can load GPT-2's weights into layers[0] and layers[2]")
        first, last = layers[0], layers[2]
        if not (isinstance(first, nn.Linear) and isinstance(last, nn.Linear)):
            check.stop("layers[0] and layers[2] should be nn.Linear")
        if first.in_features != C or last.out_features != C:
            check.stop(f"the first Linear must read emb_dim={C} features and the last must give "
                       f"{C} back, so the output can be added to the input")
        if first.out_features != 4 * C or last.in_features != 4 * C:
            check.stop(f"the hidden layer has {first.out_features} units: GPT-2 expands to "
                       f"4 * emb_dim = {4 * C}")
        check.ok(f"Linear({C}, {4 * C}) -> ... -> Linear({4 * C}, {C}): expand 4x, then project back")
        ref = FeedForward(FF_CFG)
        check.copy_weights(ff, ref, "the layers' parameters differ from the reference: use nn.Linear "
                           "with biases for layers[0] and layers[2], and a GELU without parameters")
        x = torch.randn(2, 5, C, generator=torch.Generator().manual_seed(8)) * 2
        with torch.no_grad():
            out = check.call("FeedForward(x)", ff, x)
            if close(out, ref(x), atol=1e-5):
                check.ok("with the same weights, the output matches the reference")
            else:
                hidden = first(x)
                check.fail(diagnose(out, {
                    "the activation is ReLU: GPT-2 uses GELU (the tanh approximation)":
                        last(torch.relu(hidden)),
                    "the activation is the exact GELU (nn.GELU()): use the tanh approximation, "
                    "GELU() from gptcourse.layers or nn.GELU(approximate='tanh')":
                        last(gelu_exact(hidden)),
                    "there is no activation between the two Linear layers: put GELU() there "
                    "(without it, two Linear layers are just one)": last(hidden),
                }, atol=1e-5, default="the output differs from Linear -> GELU -> Linear",
                    expected=ref(x), sizes={"emb_dim": C, "hidden": 4 * C}))
    return check
