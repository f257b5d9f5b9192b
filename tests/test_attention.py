"""Attention: the averaging trick, one head, the list of heads, the efficient and SDPA versions."""

import math

import pytest
import torch
import torch.nn.functional as F

import gptcourse.attention as attention_module
from gptcourse.attention import (
    SHORT_CONTEXT_ON_CPU,
    Head,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    causal_attention_batched,
    causal_attention_weights,
    causal_mask,
    copy_heads_into,
    mean_of_past_loop,
    mean_of_past_matmul,
    mean_of_past_softmax,
    merge_heads,
    split_heads,
)

D_IN, D_OUT, CTX, HEADS = 12, 8, 6, 4


def make_trio(qkv_bias=False):
    """A list-of-heads module, the efficient one and its SDPA twin, all with the same weights."""
    wrapper = MultiHeadAttentionWrapper(D_IN, D_OUT, CTX, 0.0, HEADS)
    mha = copy_heads_into(wrapper, MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, HEADS, qkv_bias=qkv_bias))
    sdpa = MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, HEADS, qkv_bias=qkv_bias, fast=True)
    sdpa.load_state_dict(mha.state_dict())
    return wrapper, mha, sdpa


# --- the averaging trick ---------------------------------------------------------------------------
def test_three_averages_agree_and_mean_the_past():
    x = torch.randn(3, 7, 5)
    loop = mean_of_past_loop(x)
    torch.testing.assert_close(loop[:, 4], x[:, :5].mean(dim=1))
    assert torch.allclose(loop, mean_of_past_matmul(x), atol=1e-6)
    assert torch.allclose(loop, mean_of_past_softmax(x), atol=1e-6)
    torch.testing.assert_close(loop[:, 0], x[:, 0])  # the first token only sees itself


def test_averages_reject_wrong_shapes():
    with pytest.raises(ValueError, match="batch, tokens, channels"):
        mean_of_past_matmul(torch.randn(7, 5))


# --- one head ------------------------------------------------------------------------------------
def test_head_matches_the_formula_with_head_size_scaling():
    head = Head(d_in=16, head_size=4, context_length=8)
    x = torch.randn(2, 8, 16)
    q, k, v = head.query(x), head.key(x), head.value(x)
    scores = q @ k.transpose(-2, -1) / math.sqrt(4)  # the head size, not the embedding size
    scores = scores.masked_fill(torch.triu(torch.ones(8, 8, dtype=torch.bool), 1), float("-inf"))
    torch.testing.assert_close(head(x), torch.softmax(scores, dim=-1) @ v)
    assert head.key.bias is None and head.query.bias is None and head.value.bias is None


def test_head_weights_are_causal_rows_of_a_distribution():
    head = Head(10, 5, 7)
    out, weights = head(torch.randn(3, 5, 10), return_weights=True)  # fewer tokens than the context
    assert out.shape == (3, 5, 5) and weights.shape == (3, 5, 5)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3, 5))
    assert torch.all(weights.triu(diagonal=1) == 0)
    assert torch.all(weights.diagonal(dim1=-2, dim2=-1) > 0)  # every token sees itself
    torch.testing.assert_close(weights[:, 0, 0], torch.ones(3))


def test_mask_is_a_boolean_buffer_that_is_not_saved():
    head = Head(4, 2, 5)
    assert "mask" in dict(head.named_buffers()) and "mask" not in head.state_dict()
    assert head.mask.dtype == torch.bool and torch.equal(head.mask, causal_mask(5))
    assert not any(p is head.mask for p in head.parameters())
    assert head.double().mask.dtype == torch.bool  # .to(dtype) leaves the mask alone
    assert torch.equal(causal_mask(3).int(), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]))


@pytest.mark.parametrize("make", [
    lambda: Head(D_IN, 3, CTX),
    lambda: MultiHeadAttentionWrapper(D_IN, D_OUT, CTX, 0.0, HEADS),
    lambda: MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, HEADS),
    lambda: MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, HEADS, fast=True),
], ids=["head", "wrapper", "efficient", "sdpa"])
def test_changing_a_future_token_changes_no_earlier_output(make):
    layer = make().eval()
    x = torch.randn(2, CTX, D_IN)
    for t in range(CTX):
        changed = x.clone()
        changed[:, t] = torch.randn(2, D_IN) * 5
        before, after = layer(x), layer(changed)
        torch.testing.assert_close(after[:, :t], before[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(after[:, t], before[:, t])  # the token itself does change


# --- multi-head: three versions, one result ----------------------------------------------------------
@pytest.mark.parametrize("T", [CTX, 3, 1])
def test_list_of_heads_equals_efficient_equals_sdpa(T):
    wrapper, mha, sdpa = make_trio()
    x = torch.randn(2, T, D_IN)
    expected = wrapper(x)
    torch.testing.assert_close(mha(x), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sdpa(x), expected, atol=1e-6, rtol=1e-5)


def test_copy_heads_into_zeroes_qkv_biases():
    wrapper, mha, _ = make_trio(qkv_bias=True)
    assert torch.all(mha.W_query.bias == 0)
    x = torch.randn(2, CTX, D_IN)
    torch.testing.assert_close(mha(x), wrapper(x), atol=1e-6, rtol=1e-5)


def test_copy_heads_into_places_head_h_in_rows_h():
    wrapper, mha, _ = make_trio()
    hd = D_OUT // HEADS
    for h, head in enumerate(wrapper.heads):
        assert torch.equal(mha.W_value.weight[h * hd:(h + 1) * hd], head.value.weight)


def test_copy_heads_into_rejects_mismatched_modules():
    wrapper = MultiHeadAttentionWrapper(D_IN, D_OUT, CTX, 0.0, HEADS)
    with pytest.raises(ValueError, match="shapes differ"):
        copy_heads_into(wrapper, MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, 2))
    with pytest.raises(ValueError, match="d_in="):
        copy_heads_into(wrapper, MultiHeadAttention(D_IN + 1, D_OUT, CTX, 0.0, HEADS))
    with pytest.raises(TypeError, match="MultiHeadAttentionWrapper"):
        copy_heads_into(MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, HEADS), wrapper)


def test_split_and_merge_heads_are_inverse_and_slice_features():
    x = torch.arange(2 * 3 * 8).float().view(2, 3, 8)  # (B, T, d_out)
    parts = split_heads(x, 4)
    assert parts.shape == (2, 4, 3, 2)
    torch.testing.assert_close(parts[1, 2, 0], x[1, 0, 4:6])  # head 2 of token 0: features 4, 5
    torch.testing.assert_close(merge_heads(parts), x)
    mha = MultiHeadAttention(8, 8, 3, 0.0, 4)
    torch.testing.assert_close(mha.merge_heads(mha.split_heads(x)), x)


@pytest.mark.parametrize("fast", [False, True])
def test_cached_keys_give_the_last_rows_of_full_attention(fast):
    mha = MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, HEADS, fast=fast)
    q, k, v = (torch.randn(2, HEADS, CTX, D_OUT // HEADS) for _ in range(3))
    full = mha.attend(q, k, v)
    for n_new in (1, 2):
        torch.testing.assert_close(mha.attend(q[:, :, -n_new:], k, v), full[:, :, -n_new:])


def test_causal_weights_reject_more_queries_than_keys():
    q = torch.randn(1, 4, 2)
    with pytest.raises(ValueError, match="queries <= keys <= context_length"):
        causal_attention_weights(q, q[:, :2], causal_mask(4))
    with pytest.raises(ValueError, match="queries <= keys <= context_length"):
        causal_attention_weights(q, q, causal_mask(3))


# --- dropout -------------------------------------------------------------------------------------
def test_head_dropout_scales_kept_weights_in_training_and_is_off_in_eval():
    head = Head(6, 3, 5, dropout=0.5)
    plain = Head(6, 3, 5, dropout=0.0)
    plain.load_state_dict(head.state_dict())
    x = torch.randn(4, 5, 6)
    head.eval()
    torch.testing.assert_close(head(x), plain(x))
    torch.testing.assert_close(head(x), head(x))  # nothing random in eval mode
    head.train()
    head.value.weight.data = torch.eye(3, 6)  # so the output shows the weights that were kept
    plain.value.weight.data = torch.eye(3, 6)
    torch.manual_seed(1)
    dropped = head(x)
    assert not torch.allclose(dropped, plain(x))
    # Each kept weight is scaled by 1/(1-p) = 2, so the expected output equals the plain one:
    # averaging many dropout draws (a batch of copies of one sequence) must approach it.
    one = x[:1].expand(4000, 5, 6)
    torch.testing.assert_close(head(one).mean(dim=0), plain(x[:1])[0], atol=0.05, rtol=0)


def test_dropout_layer_keeps_values_scaled_by_one_over_keep_probability():
    drop = torch.nn.Dropout(0.75)
    out = drop(torch.ones(1000))
    assert set(out.unique().tolist()) == {0.0, 4.0}  # kept ones become 1 / (1 - 0.75)
    assert 150 < (out > 0).sum() < 350
    assert torch.equal(drop.eval()(torch.ones(5)), torch.ones(5))


@pytest.mark.parametrize("fast", [False, True])
def test_mha_dropout_only_in_training(fast):
    mha = MultiHeadAttention(D_IN, D_OUT, CTX, 0.5, HEADS, fast=fast)
    plain = MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, HEADS)
    plain.load_state_dict(mha.state_dict())
    x = torch.randn(2, CTX, D_IN)
    mha.train()
    assert not torch.allclose(mha(x), plain(x))
    mha.eval()
    torch.testing.assert_close(mha(x), plain(x), atol=1e-6, rtol=1e-5)
    mha.dropout.p = 0.0  # one source of truth: the SDPA path reads the same probability
    mha.train()
    torch.testing.assert_close(mha(x), plain(x), atol=1e-6, rtol=1e-5)


# --- the fused path on a CPU: batched matmuls for short contexts, PyTorch's kernel for long ones -----
@pytest.mark.parametrize("T", [1, 2, 7, 64])
def test_batched_attention_equals_the_formula_and_sdpa_with_gradients(T):
    # Queries, keys and values as the model makes them: transposed views, not contiguous tensors.
    q, k, v = (split_heads(torch.randn(3, T, 20, dtype=torch.float64), 4).requires_grad_()
               for _ in range(3))
    got = causal_attention_batched(q, k, v, causal_mask(T))
    formula = causal_attention_weights(q, k, causal_mask(T)) @ v
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(got, formula)
    torch.testing.assert_close(got, fused)
    upstream = torch.randn_like(got)
    expected = torch.autograd.grad(formula, (q, k, v), upstream)
    for name, grad, want in zip("qkv", torch.autograd.grad(got, (q, k, v), upstream), expected):
        torch.testing.assert_close(grad, want, msg=lambda m, name=name: f"gradient of {name}: {m}")


def spy_on_attention_paths(monkeypatch) -> list[str]:
    """Record which attention each call runs: "batched" or "sdpa"."""
    calls: list[str] = []
    batched, sdpa = attention_module.causal_attention_batched, F.scaled_dot_product_attention

    def spy_batched(*args, **kwargs):
        calls.append("batched")
        return batched(*args, **kwargs)

    def spy_sdpa(*args, **kwargs):
        calls.append("sdpa")
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(attention_module, "causal_attention_batched", spy_batched)
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy_sdpa)
    return calls


@pytest.mark.parametrize("T, dtype, dropout, training, path", [
    (SHORT_CONTEXT_ON_CPU, torch.float32, 0.0, True, "batched"),
    (8, torch.float64, 0.0, True, "batched"),
    (8, torch.float32, 0.5, False, "batched"),   # dropout is off in eval mode
    (SHORT_CONTEXT_ON_CPU + 1, torch.float32, 0.0, True, "sdpa"),  # (T, T) weights too big to keep
    (8, torch.float32, 0.5, True, "sdpa"),       # dropout inside the fused kernel
    (8, torch.bfloat16, 0.0, True, "sdpa"),      # low precision keeps PyTorch's kernel
], ids=["longest-short", "float64", "dropout-in-eval", "long", "dropout-in-training", "bfloat16"])
def test_fused_attention_on_a_cpu_picks_the_faster_path(monkeypatch, T, dtype, dropout, training, path):
    mha = MultiHeadAttention(16, 16, SHORT_CONTEXT_ON_CPU + 1, dropout, 4, fast=True).to(dtype)
    mha.train(training)
    calls = spy_on_attention_paths(monkeypatch)
    mha(torch.randn(2, T, 16, dtype=dtype))
    assert calls == [path]


def test_fused_attention_beyond_the_short_context_equals_the_formula():
    T = SHORT_CONTEXT_ON_CPU + 8
    manual = MultiHeadAttention(16, 16, T, 0.0, 4).double()
    fused = MultiHeadAttention(16, 16, T, 0.0, 4, fast=True).double()
    fused.load_state_dict(manual.state_dict())
    x = torch.randn(2, T, 16, dtype=torch.float64)
    torch.testing.assert_close(fused(x), manual(x))


def test_sdpa_default_scale_is_one_over_sqrt_head_dim():
    q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))
    manual = causal_attention_weights(q, k, causal_mask(4)) @ v
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, is_causal=True), manual)


# --- config and input errors ---------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(d_out=10, num_heads=4), ValueError, r"d_out=10 is not divisible by num_heads=4.*1, 2, 5, 10"),
    (dict(context_length=0), ValueError, "context_length must be a positive int, got 0"),
    (dict(context_length=8.0), TypeError, "context_length must be a positive int, got 8.0"),
    (dict(d_in=-3), ValueError, "d_in must be a positive int"),
    (dict(num_heads=True), TypeError, "num_heads must be a positive int, got True"),
    (dict(dropout=1.0), ValueError, r"dropout must be a number in \[0, 1\), got 1.0"),
    (dict(dropout=-0.1), ValueError, r"dropout must be a number in \[0, 1\)"),
    (dict(dropout=float("nan")), ValueError, r"dropout must be a number in \[0, 1\)"),
    (dict(dropout="0.1"), TypeError, "dropout must be a number"),
    (dict(qkv_bias="yes"), TypeError, "qkv_bias must be True or False"),
    (dict(fast=None), TypeError, "fast must be True or False"),
])
def test_multi_head_attention_config_errors(kwargs, error, match):
    args = dict(d_in=8, d_out=8, context_length=4, dropout=0.0, num_heads=2) | kwargs
    with pytest.raises(error, match=match):
        MultiHeadAttention(**args)


def test_wrapper_and_head_config_errors():
    with pytest.raises(ValueError, match="d_out=6 is not divisible by num_heads=4"):
        MultiHeadAttentionWrapper(8, 6, 4, 0.0, 4)
    with pytest.raises(ValueError, match="head_size must be a positive int"):
        Head(8, 0, 4)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        Head(8, 2, 4, dropout=1.5)


@pytest.mark.parametrize("x, error, match", [
    (torch.randn(2, 5, 8), ValueError, "input has 5 tokens but context_length is 4: crop"),
    (torch.randn(2, 4, 7), ValueError, "input has 7 features per token, but this layer expects d_in=8"),
    (torch.randn(4, 8), ValueError, r"expected input of shape \(batch, tokens, 8\), got \(4, 8\)"),
    (torch.zeros(2, 4, 8, dtype=torch.long), TypeError, "turn token ids into embeddings first"),
    ([[0.0] * 8], TypeError, "got list"),
])
def test_input_errors(x, error, match):
    for layer in (Head(8, 2, 4), MultiHeadAttention(8, 8, 4, 0.0, 2),
                  MultiHeadAttentionWrapper(8, 8, 4, 0.0, 2)):
        with pytest.raises(error, match=match):
            layer(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_gpu_the_mask_moves_and_all_versions_agree():
    wrapper, mha, sdpa = make_trio()
    wrapper, mha, sdpa = wrapper.cuda(), mha.cuda(), sdpa.cuda()
    assert mha.mask.is_cuda and wrapper.heads[0].mask.is_cuda
    x = torch.randn(2, CTX, D_IN, device="cuda")
    expected = wrapper(x)
    torch.testing.assert_close(mha(x), expected, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(sdpa(x), expected, atol=1e-4, rtol=1e-3)
