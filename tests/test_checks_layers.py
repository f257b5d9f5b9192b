"""The chapter 4 checkers: the reference passes, a stub fails, and every mistake a checker
claims to diagnose is planted and named."""

import math

import pytest
import torch
import torch.nn as nn
from checker_results import NOT_WRITTEN, has

from gptcourse.checks.blocks import check_transformer_block
from gptcourse.checks.layers import check_feed_forward, check_gelu, check_layernorm
from gptcourse.layers import GELU, FeedForward, LayerNorm, TransformerBlock, gelu_exact


# --- LayerNorm ----------------------------------------------------------------------------------
class PlantedLayerNorm(nn.Module):
    """A LayerNorm with switches for the usual mistakes."""

    def __init__(self, emb_dim, unbiased=False, eps_outside=False, no_eps=False, dim=-1,
                 params=True, plain_tensors=False, ignore_params=False, no_keepdim=False,
                 no_center=False, no_sqrt=False, scale_init=1.0, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.cfg = dict(unbiased=unbiased, eps_outside=eps_outside, no_eps=no_eps, dim=dim,
                        ignore=ignore_params or not params, no_keepdim=no_keepdim,
                        no_center=no_center, no_sqrt=no_sqrt)
        if params:
            scale, shift = torch.full((emb_dim,), scale_init), torch.zeros(emb_dim)
            if plain_tensors:
                self.scale, self.shift = scale, shift
            else:
                self.scale, self.shift = nn.Parameter(scale), nn.Parameter(shift)

    def forward(self, x):
        c = self.cfg
        keep = not c["no_keepdim"]
        mean = x.mean(dim=c["dim"], keepdim=keep)
        var = x.var(dim=c["dim"], keepdim=keep, unbiased=c["unbiased"])
        eps = 0.0 if c["no_eps"] else self.eps
        top = x if c["no_center"] else x - mean
        if c["no_sqrt"]:
            norm = top / (var + eps)
        elif c["eps_outside"]:
            norm = top / (torch.sqrt(var) + eps)
        else:
            norm = top / torch.sqrt(var + eps)
        return norm if c["ignore"] else self.scale * norm + self.shift


class StubLayerNorm(nn.Module):
    def __init__(self, emb_dim):
        raise NotImplementedError


def planted(**kwargs):
    return lambda emb_dim: PlantedLayerNorm(emb_dim, **kwargs)


def test_layernorm_reference_passes():
    assert check_layernorm(LayerNorm).passed


def test_layernorm_planted_correct_version_passes():
    assert check_layernorm(planted()).passed


def test_layernorm_written_differently_passes():
    class CenteredFirst(nn.Module):
        def __init__(self, emb_dim, eps=1e-5):
            super().__init__()
            self.eps = eps
            self.scale = nn.Parameter(torch.ones(emb_dim))
            self.shift = nn.Parameter(torch.zeros(emb_dim))

        def forward(self, x):
            centered = x - x.mean(-1, keepdim=True)
            var = (centered**2).mean(-1, keepdim=True)
            return self.shift + self.scale * centered * torch.rsqrt(var + self.eps)

    result = check_layernorm(CenteredFirst)
    assert result.passed, result.problems


def test_layernorm_stub_fails():
    result = check_layernorm(StubLayerNorm)
    assert not result.passed and has(result, NOT_WRITTEN)


@pytest.mark.parametrize("mistake, words", [
    (dict(unbiased=True), "unbiased"),
    (dict(eps_outside=True), "eps is added outside the square root"),
    (dict(no_eps=True), "add eps"),
    (dict(dim=-2), "wrong dimension"),
    (dict(dim=0), "batch dimension"),
    (dict(dim=(0, 1, 2)), "whole tensor"),
    (dict(no_center=True), "mean is not subtracted"),
    (dict(no_sqrt=True), "not by its square root"),
    (dict(no_keepdim=True), "keepdim=True"),
    (dict(params=False), "no `scale` and `shift`"),
    (dict(plain_tensors=True), "plain tensor"),
    (dict(ignore_params=True), "scale and shift are never used"),
    (dict(scale_init=0.0), "should start as ones"),
    (dict(eps=1e-6), "eps is 1e-06, not the eps given to __init__"),
    (dict(eps=1e-8), "eps is 1e-08, not the eps given to __init__"),
    (dict(unbiased=True, eps_outside=True), "this uses x.std(), which is unbiased"),
])
def test_layernorm_mistakes_are_named(mistake, words):
    result = check_layernorm(planted(**mistake))
    assert not result.passed
    assert has(result, words), result.problems


class ShiftForgotten(LayerNorm):
    def forward(self, x):
        return super().forward(x) - self.shift


class ScaleShiftSwapped(LayerNorm):
    def forward(self, x):
        norm = (super().forward(x) - self.shift) / self.scale
        return self.shift * norm + self.scale


class FixedSize(LayerNorm):
    def forward(self, x):
        return nn.functional.layer_norm(x, (8,), self.scale[:8], self.shift[:8])


class FixedSizeUntrusted(nn.Module):
    """Broadcasts whatever the size: only the numbers give it away."""

    def __init__(self, emb_dim):
        super().__init__()
        self.scale, self.shift = nn.Parameter(torch.ones(emb_dim)), nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        norm = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5)
        if x.size(-1) != 8:
            norm = norm * 1.5  # as if a size were hard-coded somewhere
        return self.scale * norm + self.shift


def test_layernorm_partial_scale_shift_and_fixed_sizes_are_named():
    assert has(check_layernorm(ShiftForgotten), "shift is never used")
    assert has(check_layernorm(ScaleShiftSwapped), "swapped")
    assert has(check_layernorm(FixedSize), "expected input with shape")
    assert has(check_layernorm(FixedSizeUntrusted), "avoid fixed sizes")
    assert has(check_layernorm(planted(dim=2)), "use dim=-1")


def test_layernorm_check_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    check_layernorm(LayerNorm)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))


# --- GELU ---------------------------------------------------------------------------------------
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def tanh_gelu(constant=SQRT_2_OVER_PI, cubic=0.044715, power=3, half=0.5):
    return lambda x: half * x * (1 + torch.tanh(constant * (x + cubic * x**power)))


def test_gelu_reference_passes_as_class_instance_and_function():
    assert check_gelu(GELU).passed
    assert check_gelu(GELU()).passed
    assert check_gelu(tanh_gelu()).passed
    assert check_gelu(nn.GELU(approximate="tanh")).passed


def test_gelu_written_differently_passes():
    def gelu_with_sigmoid(x):  # 0.5 (1 + tanh(z)) equals sigmoid(2 z)
        return x * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x))

    result = check_gelu(gelu_with_sigmoid)
    assert result.passed, result.problems


def test_gelu_stub_fails():
    class Stub(nn.Module):
        def forward(self, x):
            raise NotImplementedError

    result = check_gelu(Stub)
    assert not result.passed and has(result, NOT_WRITTEN)


@pytest.mark.parametrize("fn, words", [
    (gelu_exact, "exact GELU"),
    (nn.GELU(), "exact GELU"),
    (torch.relu, "ReLU"),
    (lambda x: x * torch.sigmoid(1.702 * x), "sigmoid approximation"),
    (tanh_gelu(constant=math.sqrt(math.pi / 2)), "not sqrt(pi / 2)"),
    (tanh_gelu(constant=2 / math.pi), "not 2 / pi"),
    (tanh_gelu(constant=math.sqrt(2 * math.pi)), "not sqrt(2 * pi)"),
    (tanh_gelu(constant=1.0), "constant in front is missing"),
    (tanh_gelu(cubic=0.44715), "cubic coefficient"),
    (tanh_gelu(cubic=0.04715), "cubic coefficient"),
    (tanh_gelu(power=2), "x**3"),
    (tanh_gelu(cubic=0.04), "the cubic coefficient is 0.04: it should be 0.044715"),
    (tanh_gelu(cubic=0.0044715), "the cubic coefficient is 0.00447"),
    (tanh_gelu(constant=0.79), "the constant in front is 0.79: it should be sqrt(2 / pi)"),
    (tanh_gelu(half=1.0), "factor 0.5"),
    (lambda x: 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))), "leading x"),
    (lambda x: x.sum(), "shape"),
    (lambda x: x * 0.9, "differ from GELU's tanh approximation"),
])
def test_gelu_mistakes_are_named(fn, words):
    result = check_gelu(fn)
    assert not result.passed
    assert has(result, words), result.problems


# --- FeedForward --------------------------------------------------------------------------------
class PlantedFeedForward(nn.Module):
    def __init__(self, cfg, hidden=4, act=None, sequential=True, bias=True):
        super().__init__()
        C = cfg.emb_dim
        layers = [nn.Linear(C, hidden * C, bias=bias), act if act is not None else GELU(),
                  nn.Linear(hidden * C, C, bias=bias)]
        if sequential:
            self.layers = nn.Sequential(*layers)
        else:
            self.fc1, self.act, self.fc2 = layers

    def forward(self, x):
        if hasattr(self, "layers"):
            return self.layers(x)
        return self.fc2(self.act(self.fc1(x)))


def test_feed_forward_reference_passes():
    assert check_feed_forward(FeedForward).passed
    assert check_feed_forward(PlantedFeedForward).passed


def test_feed_forward_stub_fails():
    class Stub(nn.Module):
        def __init__(self, cfg):
            raise NotImplementedError

    assert has(check_feed_forward(Stub), NOT_WRITTEN)


@pytest.mark.parametrize("kwargs, words", [
    (dict(hidden=2), "4 * emb_dim"),
    (dict(act=nn.ReLU()), "ReLU"),
    (dict(act=nn.GELU()), "exact GELU"),
    (dict(act=nn.Identity()), "no activation"),
    (dict(sequential=False), "self.layers"),
    (dict(bias=False), "parameters differ from the reference: use nn.Linear with biases"),
])
def test_feed_forward_mistakes_are_named(kwargs, words):
    result = check_feed_forward(lambda cfg: PlantedFeedForward(cfg, **kwargs))
    assert not result.passed
    assert has(result, words), result.problems


# --- TransformerBlock ---------------------------------------------------------------------------
def block_with(forward):
    """A TransformerBlock class whose forward is replaced by `forward(self, x)`."""
    return type("PlantedBlock", (TransformerBlock,), {"forward": forward})


def post_ln(self, x):
    x = self.norm1(x + self.drop_shortcut(self.att(x)))
    return self.norm2(x + self.drop_shortcut(self.ff(x)))


def no_shortcuts(self, x):
    x = self.drop_shortcut(self.att(self.norm1(x)))
    return self.drop_shortcut(self.ff(self.norm2(x)))


def no_att_shortcut(self, x):
    x = self.drop_shortcut(self.att(self.norm1(x)))
    return x + self.drop_shortcut(self.ff(self.norm2(x)))


def no_ff_shortcut(self, x):
    x = x + self.drop_shortcut(self.att(self.norm1(x)))
    return self.drop_shortcut(self.ff(self.norm2(x)))


def parallel(self, x):
    return x + self.drop_shortcut(self.att(self.norm1(x))) + self.drop_shortcut(self.ff(self.norm2(x)))


def norms_swapped(self, x):
    x = x + self.drop_shortcut(self.att(self.norm2(x)))
    return x + self.drop_shortcut(self.ff(self.norm1(x)))


def shortcut_normalised(self, x):
    x = self.norm1(x)
    x = x + self.drop_shortcut(self.att(x))
    x = self.norm2(x)
    return x + self.drop_shortcut(self.ff(x))


def no_dropout(self, x):
    x = x + self.att(self.norm1(x))
    return x + self.ff(self.norm2(x))


def dropout_after_add(self, x):
    x = self.drop_shortcut(x + self.att(self.norm1(x)))
    return self.drop_shortcut(x + self.ff(self.norm2(x)))


def attention_dropout_only(self, x):
    x = x + self.drop_shortcut(self.att(self.norm1(x)))
    return x + self.ff(self.norm2(x))


def ff_dropout_only(self, x):
    x = x + self.att(self.norm1(x))
    return x + self.drop_shortcut(self.ff(self.norm2(x)))


def written_differently(self, x):
    attended = self.drop_shortcut(self.att(self.norm1(x)))
    h = attended + x
    return h.add(self.drop_shortcut(self.ff(self.norm2(h))))


def test_block_written_differently_passes():
    result = check_transformer_block(block_with(written_differently))
    assert result.passed, result.problems


def shape_changed(self, x):
    return TransformerBlock.forward(self, x)[:, -1]


def random_in_eval(self, x):
    return TransformerBlock.forward(self, x) + 1e-3 * torch.randn_like(x)


def test_block_reference_passes():
    assert check_transformer_block(TransformerBlock).passed


def test_block_stub_fails():
    def stub(self, x):
        raise NotImplementedError

    result = check_transformer_block(block_with(stub))
    assert not result.passed and has(result, NOT_WRITTEN)


@pytest.mark.parametrize("forward, words", [
    (post_ln, "post-LN"),
    (no_shortcuts, "no shortcuts"),
    (no_att_shortcut, "attention half has no shortcut"),
    (no_ff_shortcut, "feed-forward half has no shortcut"),
    (parallel, "feed-forward reads the block's input"),
    (norms_swapped, "swapped"),
    (shortcut_normalised, "shortcut carries the normalised x"),
    (no_dropout, "drop_shortcut is never applied"),
    (dropout_after_add, "after adding the shortcut"),
    (attention_dropout_only, "to the attention branch only"),
    (ff_dropout_only, "to the feed-forward branch only"),
    (shape_changed, "input's shape"),
    (random_in_eval, "differs from the reference"),
])
def test_block_mistakes_are_named(forward, words):
    result = check_transformer_block(block_with(forward))
    assert not result.passed
    assert has(result, words), result.problems


def test_block_with_renamed_parts_is_told_to_keep_the_names():
    class Renamed(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.attention = TransformerBlock(cfg).att

        def forward(self, x):
            return x

    assert has(check_transformer_block(Renamed), "named differently from the reference: keep self.att")
