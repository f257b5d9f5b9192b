"""The chapter 9 checkers for Llama's parts, RMSNorm and expand_kv: the reference passes, a stub
fails, and every mistake a checker claims to diagnose is planted and named."""

import pytest
import torch
import torch.nn as nn
from checker_results import NOT_WRITTEN, all_passed, has

from gptcourse.checks.llama import check_expand_kv, check_rmsnorm, expand_kv
from gptcourse.llama import RMSNorm


# --- RMSNorm -------------------------------------------------------------------------------------
class PlantedRMSNorm(nn.Module):
    """An RMSNorm with switches for the usual mistakes."""

    def __init__(self, emb_dim, eps=1e-5, *, center=False, eps_outside=False, power=2, absolute=False,
                 reduce="mean", dim=-1, no_eps=False, use_weight=True, bias=False, name="weight",
                 fixed_eps=None, plain=False, start=1.0, no_keepdim=False):
        super().__init__()
        self.eps = eps if fixed_eps is None else fixed_eps
        self.cfg = dict(center=center, eps_outside=eps_outside, power=power, absolute=absolute,
                        reduce=reduce, dim=dim, no_eps=no_eps, use_weight=use_weight, name=name,
                        no_keepdim=no_keepdim)
        weight = torch.full((emb_dim,), start)
        setattr(self, name, weight if plain else nn.Parameter(weight))
        if bias:
            self.bias = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        c = self.cfg
        keep = not c["no_keepdim"]
        top = x - x.mean(dim=-1, keepdim=True) if c["center"] == "numerator" else x
        if c["center"] == "all":
            x = top = x - x.mean(dim=-1, keepdim=True)
        v = x.abs() if c["absolute"] else x
        v = v.pow(c["power"])
        if c["reduce"] == "mean":
            ms = v.mean(dim=c["dim"], keepdim=keep)
        elif c["reduce"] == "sum":
            ms = v.sum(dim=c["dim"], keepdim=keep)
        else:  # "n-1"
            ms = v.sum(dim=c["dim"], keepdim=keep) / (x.size(-1) - 1)
        eps = 0.0 if c["no_eps"] else self.eps
        norm = top / (ms.sqrt() + eps) if c["eps_outside"] else top / torch.sqrt(ms + eps)
        out = norm * getattr(self, c["name"]) if c["use_weight"] else norm
        return out + self.bias if hasattr(self, "bias") else out


def planted(**kwargs):
    return lambda emb_dim, eps=1e-5: PlantedRMSNorm(emb_dim, eps, **kwargs)


class LayerNormCopy(nn.Module):
    """Chapter 4's LayerNorm handed in as RMSNorm."""

    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.scale, self.shift = nn.Parameter(torch.ones(emb_dim)), nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - x.mean(dim=-1, keepdim=True)) / torch.sqrt(var + self.eps) + self.shift


class VarInRoot(RMSNorm):
    def forward(self, x):
        return x * torch.rsqrt(x.var(dim=-1, keepdim=True, unbiased=False) + self.eps) * self.weight


class MultipliedByRoot(RMSNorm):
    def forward(self, x):
        return x * torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class MeanOfX(RMSNorm):
    def forward(self, x):
        return x * torch.rsqrt(x.mean(dim=-1, keepdim=True) + self.eps) * self.weight


class NoRoot(RMSNorm):
    def forward(self, x):
        return x / (x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class WeightAdded(RMSNorm):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) + self.weight


class WeightFirst(RMSNorm):
    def forward(self, x):
        x = x * self.weight
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


class TorchDefaultEps(RMSNorm):
    def forward(self, x):
        return nn.functional.rms_norm(x, (x.size(-1),), self.weight)


class WrittenDifferently(nn.Module):
    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(emb_dim))

    def forward(self, x):
        rms = torch.sqrt((x * x).sum(-1, keepdim=True) / x.shape[-1] + self.eps)
        return self.weight * (x / rms)


class NotAModule:
    def __init__(self, emb_dim, eps=1e-5):
        self.weight = torch.ones(emb_dim)


def test_rmsnorm_reference_passes_every_line(capsys):
    assert all_passed(check_rmsnorm(RMSNorm), capsys)


def test_rmsnorm_planted_correct_version_and_other_spellings_pass():
    for cls in (planted(), WrittenDifferently,
                lambda emb_dim, eps=1e-5: nn.RMSNorm(emb_dim, eps=eps)):
        result = check_rmsnorm(cls)
        assert result.passed, result.problems


def test_rmsnorm_stub_fails():
    class Stub(nn.Module):
        def __init__(self, emb_dim, eps=1e-5):
            raise NotImplementedError

    class StubForward(RMSNorm):
        def forward(self, x):
            raise NotImplementedError

    for cls in (Stub, StubForward):
        result = check_rmsnorm(cls)
        assert not result.passed and has(result, NOT_WRITTEN), result.problems


@pytest.mark.parametrize("cls, words", [
    (LayerNormCopy, "this is LayerNorm: it subtracts the mean"),
    (LayerNormCopy, "the scale is called `scale`: name it `weight`"),
    (LayerNormCopy, "RMSNorm has no shift or bias: remove `shift`"),
    (planted(center="all"), "this is LayerNorm: it subtracts the mean"),
    (planted(center="numerator"), "the mean is subtracted from x"),
    (VarInRoot, "x.var() subtracts the mean"),
    (planted(eps_outside=True), "eps is added outside the square root"),
    (planted(power=1, absolute=True), "x is not squared"),
    (planted(power=1, absolute=True), "not of mean |x|"),
    (MeanOfX, "not of mean x"),
    (NoRoot, "there is no square root"),
    (MultipliedByRoot, "multiplied by the root mean square instead of divided"),
    (planted(reduce="sum"), "the squares are summed, not averaged"),
    (planted(reduce="n-1"), "divided by n - 1"),
    (planted(dim=-2), "wrong dimension (the tokens, dim=-2)"),
    (planted(dim=0), "the batch dimension (dim=0)"),
    (planted(dim=(0, 1, 2)), "the whole tensor"),
    (planted(no_eps=True), "a row of zeros gives 0 / 0 = NaN"),
    (planted(fixed_eps=1e-6), "eps is 1e-06, not the eps given to __init__"),
    (TorchDefaultEps, "torch.finfo(float32).eps"),
    (planted(use_weight=False), "the weight is never used in forward"),
    (WeightAdded, "the weight is added, not multiplied"),
    (WeightFirst, "the weight is applied before normalising"),
    (planted(bias=True), "RMSNorm has no shift or bias: remove `bias`"),
    (planted(name="gain"), "the scale is called `gain`: name it `weight`"),
    (planted(plain=True), "plain tensor"),
    (planted(start=0.0), "should start as ones"),
    (planted(no_keepdim=True), "keepdim=True"),
    (NotAModule, "make it a module"),
    (lambda emb_dim, eps=1e-5: nn.Identity(), "no `weight`: RMSNorm has a trainable scale"),
])
def test_rmsnorm_mistakes_are_named(cls, words):
    result = check_rmsnorm(cls)
    assert not result.passed
    assert has(result, words), result.problems


def test_rmsnorm_a_weight_not_starting_as_ones_is_the_only_finding():
    result = check_rmsnorm(planted(start=0.0))
    assert len(result.problems) == 1 and has(result, "should start as ones"), result.problems


def test_rmsnorm_ignoring_the_given_eps_is_named():
    result = check_rmsnorm(lambda emb_dim, eps=1e-5: RMSNorm(emb_dim))
    assert has(result, "eps given to __init__ is not used"), result.problems
    assert has(check_rmsnorm(lambda emb_dim: RMSNorm(emb_dim)), "keep the signature RMSNorm(emb_dim, eps=1e-5)")


def test_rmsnorm_nan_for_a_zero_row_is_named_even_with_another_mistake():
    result = check_rmsnorm(planted(no_eps=True, reduce="sum"))
    assert has(result, "holds NaN"), result.problems


def test_rmsnorm_check_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    check_rmsnorm(RMSNorm)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))


# --- expand_kv -------------------------------------------------------------------------------------
def tiled(kv, n_heads):
    return kv.repeat(1, n_heads // kv.size(1), 1, 1)


def tiled_by_expand(kv, n_heads):
    B, n_kv, T, hd = kv.shape
    return kv[:, None].expand(B, n_heads // n_kv, n_kv, T, hd).reshape(B, n_heads, T, hd)


def grouped_by_expand(kv, n_heads):
    B, n_kv, T, hd = kv.shape
    return kv[:, :, None].expand(B, n_kv, n_heads // n_kv, T, hd).reshape(B, n_heads, T, hd)


def by_index(kv, n_heads):
    group = n_heads // kv.size(1)
    return kv[:, [h // group for h in range(n_heads)]]


def index_by_n_kv(kv, n_heads):
    return kv[:, [h // kv.size(1) for h in range(n_heads)]]


def repeated_on(dim):
    return lambda kv, n_heads: kv.repeat_interleave(n_heads // kv.size(1), dim=dim)


def mixed_positions(kv, n_heads):
    return kv.repeat_interleave(n_heads // kv.size(1), dim=2).reshape(kv.size(0), n_heads, kv.size(2), -1)


def reversed_groups(kv, n_heads):
    return kv.flip(1).repeat_interleave(n_heads // kv.size(1), dim=1)


def test_expand_kv_reference_passes_every_line(capsys):
    assert all_passed(check_expand_kv(expand_kv), capsys)


def test_expand_kv_other_correct_versions_pass():
    for fn in (grouped_by_expand, by_index, lambda kv, n: torch.repeat_interleave(kv, n // kv.shape[1], 1)):
        result = check_expand_kv(fn)
        assert result.passed, result.problems


def test_expand_kv_stub_fails():
    def expand_kv(kv, n_heads):
        raise NotImplementedError

    result = check_expand_kv(expand_kv)
    assert not result.passed and has(result, NOT_WRITTEN)
    assert result.problems[0].startswith("expand_kv(")


def test_reference_expand_kv_refuses_bad_input():
    with pytest.raises(ValueError, match="not a multiple"):
        expand_kv(torch.zeros(1, 3, 2, 4), 4)
    with pytest.raises(ValueError, match="n_kv_heads, T, head_dim"):
        expand_kv(torch.zeros(3, 2, 4), 6)


@pytest.mark.parametrize("fn, words", [
    (tiled, "the heads are tiled (.repeat"),
    (tiled_by_expand, "query head h reads kv head h % n_kv_heads"),
    (repeated_on(2), "the repeat runs along dimension 2"),
    (repeated_on(0), "the repeat runs along dimension 0"),
    (repeated_on(-1), "the repeat runs along dimension 3"),
    (lambda kv, n_heads: kv.repeat_interleave(kv.size(1), dim=1), "repeated n_kv_heads = 3 times"),
    (lambda kv, n_heads: kv.repeat_interleave(n_heads, dim=1), "repeated n_heads = 12 times"),
    (lambda kv, n_heads: kv.repeat_interleave(kv.size(1) // n_heads, dim=1), "the group size is 0"),
    (lambda kv, n_heads: kv, "the keys come back unexpanded"),
    (index_by_n_kv, "not h // n_kv_heads"),
    (lambda kv, n_heads: kv.repeat_interleave(n_heads / kv.size(1), dim=1), "integer division"),
    (mixed_positions, "not whole copies of key/value heads"),
    (lambda kv, n: kv[:, :, None].expand(-1, -1, n // kv.size(1), -1, -1), "still a dimension of its own: reshape"),
    (lambda kv, n: kv[:, None].expand(-1, n // kv.size(1), -1, -1, -1), "and before the kv heads"),
    (reversed_groups, "query heads read kv heads [2, 2, 2, 2, 1"),
])
def test_expand_kv_mistakes_are_named(fn, words):
    result = check_expand_kv(fn)
    assert not result.passed
    assert has(result, words), result.problems


# --- every named mistake is told apart from the others on the checker's inputs -------------------
def test_every_named_rmsnorm_mistake_gives_its_own_output():
    from gptcourse.checks import close
    from gptcourse.checks.llama import _rms_input, _rmsnorm_mistakes

    def distinct(values):
        values = [v() if callable(v) else v for v in values]
        return all(not close(a, b, atol=1e-4) for i, a in enumerate(values) for b in values[i + 1:])

    x = _rms_input()
    assert distinct(_rmsnorm_mistakes(x).values())
