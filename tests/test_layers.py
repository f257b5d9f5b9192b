"""Tests for gptcourse.layers: LayerNorm, GELU, FeedForward, the shortcut demo, TransformerBlock."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptcourse.attention import MultiHeadAttention
from gptcourse.config import GPTConfig
from gptcourse.layers import (
    GELU,
    ExampleDeepNeuralNetwork,
    FeedForward,
    LayerNorm,
    TransformerBlock,
    gelu_exact,
    gelu_tanh_fused,
    layer_gradients,
)

TINY = GPTConfig(vocab_size=20, context_length=8, emb_dim=16, n_heads=4, n_layers=1, drop_rate=0.0)


# --- LayerNorm ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 5), (3, 4, 16), (2, 3, 4, 8), (7, 1), (1, 768)])
def test_layernorm_equals_nn_layernorm_with_copied_parameters(shape):
    emb_dim = shape[-1]
    ours, theirs = LayerNorm(emb_dim), nn.LayerNorm(emb_dim, eps=1e-5)
    with torch.no_grad():
        ours.scale.copy_(torch.randn(emb_dim))
        ours.shift.copy_(torch.randn(emb_dim))
        theirs.weight.copy_(ours.scale)
        theirs.bias.copy_(ours.shift)
    x = torch.randn(*shape) * 3 + 2
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)


def test_layernorm_starts_as_pure_normalisation():
    ln = LayerNorm(6)
    assert isinstance(ln.scale, nn.Parameter) and isinstance(ln.shift, nn.Parameter)
    assert torch.equal(ln.scale, torch.ones(6)) and torch.equal(ln.shift, torch.zeros(6))
    assert ln.eps == 1e-5
    out = ln(torch.randn(4, 6) * 5 + 3)
    torch.testing.assert_close(out.mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_layernorm_uses_biased_variance_and_eps_inside_the_root():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    mean, var = x.mean(), x.var(unbiased=False)
    expected = (x - mean) / math.sqrt(var + 1e-5)
    torch.testing.assert_close(LayerNorm(4)(x), expected)
    # A nearly constant row: eps inside the root keeps the output small and finite.
    tiny = torch.tensor([[0.0, 1e-4, 0.0, -1e-4]])
    assert LayerNorm(4)(tiny).abs().max() < 0.05
    assert torch.equal(LayerNorm(4)(torch.full((2, 4), 3.0)), torch.zeros(2, 4))


def test_layernorm_trains_scale_and_shift():
    ln = LayerNorm(3)
    ln(torch.randn(5, 3)).pow(2).mul(torch.arange(3.0)).sum().backward()
    assert ln.scale.grad is not None and ln.shift.grad is not None


@pytest.mark.parametrize("emb_dim", [0, -3, 2.5, True, "8"])
def test_layernorm_rejects_bad_emb_dim(emb_dim):
    with pytest.raises(ValueError, match="emb_dim must be a positive int"):
        LayerNorm(emb_dim)


@pytest.mark.parametrize("eps", [0, -1e-5, "1e-5", None])
def test_layernorm_rejects_bad_eps(eps):
    with pytest.raises(ValueError, match="eps must be a positive number"):
        LayerNorm(4, eps=eps)


def test_layernorm_names_a_wrong_last_dimension():
    with pytest.raises(ValueError, match="last dimension of x has size 5.*emb_dim=4"):
        LayerNorm(4)(torch.randn(2, 5))


# --- GELU ---------------------------------------------------------------------------------------
def test_gelu_equals_torch_tanh_gelu():
    x = torch.cat([torch.linspace(-10, 10, 2001), torch.randn(1000) * 4])
    torch.testing.assert_close(GELU()(x), nn.GELU(approximate="tanh")(x), atol=1e-6, rtol=1e-5)
    x3 = torch.randn(2, 3, 4)
    assert GELU()(x3).shape == x3.shape


def test_gelu_exact_equals_torch_gelu_and_is_close_to_the_tanh_version():
    x = torch.linspace(-8, 8, 4001, dtype=torch.float64)
    torch.testing.assert_close(gelu_exact(x), nn.GELU()(x))
    gap = (GELU()(x) - gelu_exact(x)).abs().max().item()
    assert 1e-4 < gap < 1e-3  # close, but a check with atol=1e-5 still tells them apart


def test_gelu_is_smooth_and_negative_below_zero():
    x = torch.tensor([-1.0, 0.0, 1.0], requires_grad=True)
    y = GELU()(x)
    assert y[0] < 0 and y[1] == 0 and 0.8 < y[2] < 0.85
    y.sum().backward()
    assert 0.45 < x.grad[1] < 0.55  # slope 1/2 at zero: no kink as in ReLU


# --- FeedForward --------------------------------------------------------------------------------
def test_feed_forward_shapes_and_parameter_count():
    ff = FeedForward(TINY)
    C = TINY.emb_dim
    assert isinstance(ff.layers[0], nn.Linear) and isinstance(ff.layers[1], GELU)
    assert (ff.layers[0].in_features, ff.layers[0].out_features) == (C, 4 * C)
    assert (ff.layers[2].in_features, ff.layers[2].out_features) == (4 * C, C)
    assert sum(p.numel() for p in ff.parameters()) == 8 * C * C + 5 * C
    x = torch.randn(2, 3, C)
    assert ff(x).shape == x.shape


def test_feed_forward_treats_tokens_independently():
    ff = FeedForward(TINY)
    x = torch.randn(1, 5, TINY.emb_dim)
    changed = x.clone()
    changed[0, 4] += 1.0
    torch.testing.assert_close(ff(x)[0, :4], ff(changed)[0, :4])


@pytest.mark.parametrize("module", [FeedForward, TransformerBlock])
def test_modules_want_a_gpt_config(module):
    with pytest.raises(TypeError, match="cfg must be a GPTConfig"):
        module({"emb_dim": 16})


# --- shortcut demo ------------------------------------------------------------------------------
SIZES = [8] * 8 + [1]  # seven hidden layers of width 8, then one output


def demo_gradients(use_shortcut, seed):
    torch.manual_seed(seed)
    model = ExampleDeepNeuralNetwork(SIZES, use_shortcut=use_shortcut)
    x = torch.linspace(-1, 1, SIZES[0]).unsqueeze(0)  # (1, 8)
    return layer_gradients(model, x, torch.zeros(1, 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shortcuts_keep_the_first_layer_gradient_alive(seed):
    without, with_shortcut = demo_gradients(False, seed), demo_gradients(True, seed)
    assert len(without) == len(with_shortcut) == len(SIZES) - 1
    # Without shortcuts the gradient shrinks on its way back to the input; with them it does not.
    assert without[0] < without[-1] / 10
    assert with_shortcut[0] / without[0] > 100


def test_deep_network_shortcut_skips_layers_that_change_size():
    torch.manual_seed(0)
    model = ExampleDeepNeuralNetwork([4, 4, 2], use_shortcut=True)
    x = torch.randn(5, 4)
    hidden = x + model.layers[0](x)
    torch.testing.assert_close(model(x), model.layers[1](hidden))


@pytest.mark.parametrize("sizes, error, words", [
    ([3], ValueError, "at least an input and an output"),
    ([3, 0, 1], ValueError, r"layer_sizes\[1\] must be a positive int"),
    ([3, 2.5, 1], ValueError, r"layer_sizes\[1\] must be a positive int"),
])
def test_deep_network_rejects_bad_sizes(sizes, error, words):
    with pytest.raises(error, match=words):
        ExampleDeepNeuralNetwork(sizes, use_shortcut=True)


def test_deep_network_and_layer_gradients_reject_bad_arguments():
    with pytest.raises(TypeError, match="use_shortcut must be True or False"):
        ExampleDeepNeuralNetwork([3, 3], use_shortcut="yes")
    with pytest.raises(TypeError, match="model must be an ExampleDeepNeuralNetwork"):
        layer_gradients(nn.Linear(3, 1), torch.ones(1, 3), torch.zeros(1, 1))


# --- TransformerBlock ---------------------------------------------------------------------------
def test_block_keeps_the_shape_and_is_deterministic_in_eval_mode():
    block = TransformerBlock(TINY.replace(drop_rate=0.1)).eval()
    x = torch.randn(2, 8, TINY.emb_dim)
    out = block(x)
    assert out.shape == x.shape
    assert torch.equal(out, block(x))


def test_block_dropout_is_active_in_training_mode():
    block = TransformerBlock(TINY.replace(drop_rate=0.5)).train()
    x = torch.randn(2, 8, TINY.emb_dim)
    assert not torch.equal(block(x), block(x))


def test_block_is_pre_layernorm_with_two_shortcuts():
    block = TransformerBlock(TINY).eval()
    with torch.no_grad():
        for norm in (block.norm1, block.norm2):  # non-trivial norms so that their place matters
            norm.scale.copy_(torch.rand(TINY.emb_dim) + 0.5)
            norm.shift.copy_(torch.randn(TINY.emb_dim))
    x = torch.randn(2, 8, TINY.emb_dim)
    h = x + block.att(block.norm1(x))
    expected = h + block.ff(block.norm2(h))
    torch.testing.assert_close(block(x), expected)


def test_block_parts_keep_their_names():
    block = TransformerBlock(TINY)
    assert isinstance(block.att, MultiHeadAttention) and isinstance(block.ff, FeedForward)
    assert isinstance(block.norm1, LayerNorm) and isinstance(block.norm2, LayerNorm)
    assert isinstance(block.drop_shortcut, nn.Dropout)
    names = {name for name, _ in block.named_parameters()}
    assert {"norm1.scale", "norm1.shift", "ff.layers.0.weight", "ff.layers.2.bias",
            "att.W_query.weight", "att.out_proj.weight"} <= names


def test_block_is_causal():
    block = TransformerBlock(TINY).eval()
    x = torch.randn(1, 8, TINY.emb_dim)
    changed = x.clone()
    changed[0, -1] += 1.0
    torch.testing.assert_close(block(x)[:, :-1], block(changed)[:, :-1])


def test_block_with_sdpa_computes_the_same():
    torch.manual_seed(0)
    plain = TransformerBlock(TINY).eval()
    fused = TransformerBlock(TINY.replace(fast=True)).eval()
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(3, 8, TINY.emb_dim)
    torch.testing.assert_close(fused(x), plain(x), atol=1e-5, rtol=1e-4)


def test_gpt2_small_block_parameter_count():
    # Attention 4 * 768^2 + 768 (out_proj bias), feed-forward 8 * 768^2 + 5 * 768, two LayerNorms.
    C = 768
    block = TransformerBlock(GPTConfig())
    assert sum(p.numel() for p in block.parameters()) == 12 * C * C + 6 * C + 4 * C == 7_085_568


def test_block_gives_a_clear_error_for_the_wrong_width():
    with pytest.raises(ValueError, match="emb_dim=16"):
        TransformerBlock(TINY)(torch.randn(1, 4, 8))


def test_a_standalone_attention_layer_names_a_sequence_longer_than_its_context():
    standalone = MultiHeadAttention(8, 8, 4, 0.0, 2)
    with pytest.raises(ValueError, match="input has 5 tokens but context_length is 4"):
        standalone(torch.randn(1, 5, 8))


# --- the fused paths the model runs: equal to the written-out reference --------------------------
@pytest.mark.parametrize("shape", [(2, 5, 16), (3, 768), (1, 1, 4)])
def test_fused_layernorm_equals_explicit_values_and_gradients(shape):
    torch.manual_seed(0)
    explicit, fused = LayerNorm(shape[-1]), LayerNorm(shape[-1], fast=True)
    with torch.no_grad():
        explicit.scale.normal_()
        explicit.shift.normal_()
    fused.load_state_dict(explicit.state_dict())  # same parameter names: checkpoints fit both
    x = 3 * torch.randn(*shape) + 1
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = explicit(xa), fused(xb)
    torch.testing.assert_close(out_b, out_a, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out_a)
    out_a.backward(g)
    out_b.backward(g)
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fused.scale.grad, explicit.scale.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fused.shift.grad, explicit.shift.grad)


def test_fused_gelu_equals_explicit_values_and_gradients():
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = GELU()(xa), GELU(fast=True)(xb)
    torch.testing.assert_close(out_b, out_a, atol=1e-12, rtol=1e-12)  # float64: the same curve
    out_a.sum().backward()
    out_b.sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-12, rtol=1e-12)
    assert not torch.allclose(GELU(fast=True)(x), gelu_exact(x), atol=1e-6)  # tanh, not erf


def test_cpu_tanh_gelu_matches_torch_in_float32_with_any_upstream_gradient():
    # The CPU path is a hand-written autograd.Function (x * sigmoid(2u)): check it against
    # PyTorch's own tanh GELU, values and gradients, including far tails where sigmoid saturates.
    torch.manual_seed(0)
    x = torch.cat([torch.randn(4000) * 3, torch.tensor([-1e4, -60.0, -10.0, 0.0, 10.0, 60.0, 1e4])])
    upstream = torch.randn_like(x)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = F.gelu(xa, approximate="tanh"), gelu_tanh_fused(xb)
    torch.testing.assert_close(out_b, out_a, atol=1e-6, rtol=1e-5)
    out_a.backward(upstream)
    out_b.backward(upstream)
    assert torch.isfinite(xb.grad).all()
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-5, rtol=1e-5)


def test_cpu_tanh_gelu_passes_gradcheck_and_keeps_other_dtypes_on_torch():
    x = (torch.randn(2, 30, dtype=torch.float64) * 3).requires_grad_()
    assert torch.autograd.gradcheck(gelu_tanh_fused, (x,))
    half = torch.randn(64).to(torch.bfloat16)  # low precision: PyTorch's kernel computes inside in float
    assert torch.equal(gelu_tanh_fused(half), F.gelu(half, approximate="tanh"))
    assert gelu_tanh_fused(torch.randn(3, 5)).shape == (3, 5)


def test_cpu_tanh_gelu_keeps_only_its_derivative_and_skips_it_for_inference():
    # Training keeps one tensor per GELU (the derivative), not two (x and the sigmoid).
    x = torch.randn(8, 16, requires_grad=True)
    out = gelu_tanh_fused(x)
    assert len(out.grad_fn.saved_tensors) == 1
    # Without a gradient (a frozen input, or torch.no_grad) the shorter inference path runs:
    # still the same curve, and nothing to keep.
    frozen = torch.cat([torch.randn(500) * 4, torch.tensor([-1e4, -60.0, 0.0, 60.0, 1e4])])
    with torch.no_grad():
        torch.testing.assert_close(gelu_tanh_fused(frozen), F.gelu(frozen, approximate="tanh"),
                                   atol=1e-6, rtol=1e-5)
    assert gelu_tanh_fused(frozen).grad_fn is None
    # The saved derivative is a plain number per element: a second derivative is refused
    # instead of coming out silently wrong.
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="does not require grad|twice|differentiable"):
        grad.sum().backward()


def test_fast_flags_are_validated_and_shown():
    with pytest.raises(TypeError, match="fast must be True or False"):
        LayerNorm(4, fast="yes")
    with pytest.raises(TypeError, match="fast must be True or False"):
        GELU(fast=1.0)
    assert "fast=True" in repr(LayerNorm(4, fast=True)) and "fast" not in repr(LayerNorm(4))
    assert repr(GELU()) == "GELU()"


def test_block_with_fast_kernels_equals_explicit_block():
    torch.manual_seed(0)
    explicit = TransformerBlock(TINY)
    fused = TransformerBlock(TINY.replace(fast=True))
    fused.load_state_dict(explicit.state_dict())
    assert fused.norm1.fast and fused.ff.layers[1].fast and not explicit.norm2.fast
    x = torch.randn(3, 8, 16)
    torch.testing.assert_close(fused(x), explicit(x), atol=1e-5, rtol=1e-5)
