"""The chapter 3 checkers, tested three ways: the reference passes, a stub fails, and each
mistake a checker claims to diagnose is planted and named."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from checker_results import assert_diagnosed, problems_of

from gptcourse.attention import Head, merge_heads, split_heads
from gptcourse.checks.attention import check_causal_weights, check_split_merge
from gptcourse.checks.head import check_head

INF = float("-inf")


def stub(*args, **kwargs):
    raise NotImplementedError("Your turn")


# --- check_causal_weights --------------------------------------------------------------------------
def make_weights(*, diagonal=0, upper=False, no_mask=False, fill=INF, after=False, dim=-1,
                 inplace=False, t_from_first=False):
    """A learner's causal_weights(scores) with one planted mistake."""

    def causal_weights(scores):
        T = scores.shape[0] if t_from_first else scores.shape[-1]
        ones = torch.ones(T, T)
        keep = torch.triu(ones) if upper else torch.tril(ones, diagonal=diagonal)
        if no_mask:
            keep = ones
        if after:
            return torch.softmax(scores, dim=dim).masked_fill(keep == 0, fill)
        if inplace:
            return torch.softmax(scores.masked_fill_(keep == 0, fill), dim=dim)
        return torch.softmax(scores.masked_fill(keep == 0, fill), dim=dim)

    return causal_weights


def test_causal_weights_reference_passes(capsys):
    result = check_causal_weights(make_weights())
    assert result.passed, problems_of(result)
    assert "✅" in capsys.readouterr().out


def test_causal_weights_with_a_large_finite_fill_passes():
    assert check_causal_weights(make_weights(fill=-1e9)).passed


def test_causal_weights_stub_fails():
    assert_diagnosed(check_causal_weights(stub), "not written yet")


@pytest.mark.parametrize("mistake, fragment", [
    (dict(after=True, fill=0.0), "masking after the softmax"),
    (dict(after=True), "masking after the softmax with -inf"),
    (dict(diagonal=-1), "cannot see itself"),
    (dict(diagonal=-1, fill=-1e9), "cannot see itself"),
    (dict(no_mask=True), "tokens see the future: nothing is masked"),
    (dict(upper=True), "the mask is flipped"),
    (dict(diagonal=1), "one step into the future"),
    (dict(fill=0.0), "set to 0, not -inf"),
    (dict(dim=-2), "softmax over the wrong dimension"),
    (dict(inplace=True), "changed the scores it was given"),
    (dict(t_from_first=True), "works on one (T, T) matrix but not on a batch"),
    (dict(dim=1), "a batch of scores of shape (2, 3, 5, 5) gives wrong weights"),
    (dict(fill=-10.0), "not small enough"),
    (dict(fill=-100.0), "with scores near -1000"),
    (dict(diagonal=2), "weights above the diagonal are not zero"),
])
def test_causal_weights_mistakes_are_named(mistake, fragment):
    assert_diagnosed(check_causal_weights(make_weights(**mistake)), fragment)


def test_causal_weights_unknown_mistakes_get_a_property_diagnosis():
    def too_small(scores):
        return make_weights()(scores) * 0.5

    assert_diagnosed(check_causal_weights(too_small), "rows do not sum to 1")
    assert_diagnosed(check_causal_weights(lambda s: s.tolist()), "return a tensor")
    assert_diagnosed(check_causal_weights(lambda s: s[:3]), "expected (6, 6)")


# --- check_head ------------------------------------------------------------------------------------
def make_head(*, scale="head", keep="tril", fill=INF, after=False, dim=-1, swap_qk=False,
              dropout_mode="module", bias=False, slice_mask=True, mask_as="buffer",
              names=("query", "key", "value"), return_weights=False):
    """A learner's Head class with one planted mistake."""

    class LearnerHead(nn.Module):
        def __init__(self, d_in, head_size, context_length, dropout=0.0):
            super().__init__()
            for name in names:
                setattr(self, name, nn.Linear(d_in, head_size, bias=bias))
            ones = torch.ones(context_length, context_length)
            mask = {"tril": torch.tril(ones), "no diagonal": torch.tril(ones, -1),
                    "two ahead": torch.tril(ones, 2), "none": ones, "triu": torch.triu(ones)}[keep]
            if mask_as == "buffer":
                self.register_buffer("tril", mask)
            elif mask_as == "parameter":
                self.tril = nn.Parameter(mask)
            self.p = dropout
            self.dropout = nn.Dropout(dropout)
            self.d_in, self.head_size = d_in, head_size

        def forward(self, x):
            T = x.shape[1]
            q, k, v = (getattr(self, name)(x) for name in names)
            if dropout_mode == "on q":
                q = self.dropout(q)
            if dropout_mode == "on v":
                v = self.dropout(v)
            if swap_qk:
                q, k = k, q
            divide = {"head": math.sqrt(self.head_size), "none": 1.0, "embedding": math.sqrt(self.d_in),
                      "head no sqrt": self.head_size}[scale]
            scores = q @ k.transpose(-2, -1) / divide
            if dropout_mode == "raw scores":
                scores = self.dropout(scores)
            mask = self.tril if mask_as != "forward" else torch.tril(torch.ones(T, T))
            mask = mask[:T, :T] if slice_mask else mask
            if after:
                w = torch.softmax(scores, dim=dim).masked_fill(mask == 0, fill)
            else:
                masked = scores.masked_fill(mask == 0, fill)
                if dropout_mode == "masked scores":
                    masked = self.dropout(masked)
                w = torch.softmax(masked, dim=dim)
            if return_weights:
                return w
            if dropout_mode == "module":
                w = self.dropout(w)
            elif dropout_mode == "functional":
                w = F.dropout(w, self.p)  # training=True by default: never switched off
            elif dropout_mode == "functional, switched":  # correct, written differently
                w = F.dropout(w, self.p, training=self.training)
            elif dropout_mode == "fixed rate":
                w = F.dropout(w, 0.1, training=self.training)
            elif dropout_mode == "unscaled" and self.training:
                w = w * (torch.rand_like(w) >= self.p)
            out = w @ v
            return self.dropout(out) if dropout_mode == "output" else out

    return LearnerHead


def test_head_reference_passes(capsys):
    result = check_head(Head)
    assert result.passed, problems_of(result)
    assert "✅" in capsys.readouterr().out


def test_head_learner_version_passes():
    result = check_head(make_head())
    assert result.passed, problems_of(result)


def test_head_with_functional_dropout_that_follows_the_mode_passes():
    result = check_head(make_head(dropout_mode="functional, switched"))
    assert result.passed, problems_of(result)


def test_head_stub_fails():
    class StubHead(nn.Module):
        def __init__(self, d_in, head_size, context_length, dropout=0.0):
            super().__init__()
            raise NotImplementedError("Your turn")

    assert_diagnosed(check_head(StubHead), "not written yet")


def test_head_stub_forward_fails():
    class StubForward(make_head()):
        def forward(self, x):
            raise NotImplementedError("Your turn")

    assert_diagnosed(check_head(StubForward), "not written yet")


@pytest.mark.parametrize("mistake, fragment", [
    (dict(scale="none"), "no scaling"),
    (dict(scale="embedding"), "scaled by the embedding size"),
    (dict(scale="head no sqrt"), "divided by head_size"),
    (dict(after=True, fill=0.0), "masking after the softmax"),
    (dict(keep="no diagonal"), "cannot see itself"),
    (dict(keep="none"), "tokens see the future: nothing is masked"),
    (dict(keep="triu"), "the mask is flipped"),
    (dict(keep="two ahead"), "changing token 5 changed the outputs of earlier tokens"),
    (dict(fill=0.0), "set to 0, not -inf"),
    (dict(dim=-2), "softmax over the wrong dimension"),
    (dict(swap_qk=True), "scores are k @ q^T"),
    (dict(dropout_mode="functional"), "dropout is active in eval mode"),
    (dict(dropout_mode="none"), "nothing changed"),
    (dict(dropout_mode="output"), "dropout is applied to the head's output"),
    (dict(dropout_mode="raw scores"), "dropout acts before the softmax"),
    (dict(dropout_mode="masked scores"), "-inf * 0 is NaN"),
    (dict(dropout_mode="on q"), "dropout acts before the softmax"),
    (dict(dropout_mode="on v"), "dropout acts on the values"),
    (dict(dropout_mode="unscaled"), "not scaled by 1 / (1 - p)"),
    (dict(dropout_mode="fixed rate"), "as if p were fixed at 0.1"),
    (dict(bias=True), "have a bias"),
    (dict(slice_mask=False), "cut the mask to the input's length"),
    (dict(mask_as="parameter"), "the mask is an nn.Parameter"),
    (dict(mask_as="forward"), "no (context_length, context_length) buffer"),
    (dict(names=("q", "k", "v")), "name the projections self.query, self.key and self.value"),
    (dict(return_weights=True), "return weights @ v, not the weights"),
])
def test_head_mistakes_are_named(mistake, fragment):
    assert_diagnosed(check_head(make_head(**mistake)), fragment)


def test_head_combined_mistakes_get_a_fallback_diagnosis():
    # Two mistakes at once match no single known one; the NaN row still points at the diagonal.
    assert_diagnosed(check_head(make_head(scale="none", keep="no diagonal")), "cannot see itself")

    class Doubled(make_head()):
        def forward(self, x):
            return 2 * super().forward(x)

    assert_diagnosed(check_head(Doubled), "the output differs from softmax")


def test_head_that_is_not_a_module_is_named():
    def head_function(d_in, head_size, context_length, dropout=0.0):
        return lambda x: x

    assert_diagnosed(check_head(head_function), "class Head(nn.Module)")


def test_head_check_leaves_the_global_seed_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_head(Head)
    assert torch.equal(torch.rand(3), expected)


# --- check_split_merge ------------------------------------------------------------------------------
def make_split(*, order="heads first", transpose=(1, 2), num_heads=None):
    """A learner's split_heads(x, num_heads) with one planted mistake."""

    def split(x, nh):
        nh = num_heads or nh
        B, T, C = x.shape
        if order == "straight":
            return x.view(B, nh, T, C // nh)
        if order == "interleaved":
            return x.view(B, T, C // nh, nh).permute(0, 3, 1, 2)
        out = x.view(B, T, nh, C // nh)
        return out.transpose(*transpose) if transpose else out

    return split


def make_merge(*, transpose=(1, 2), contiguous=True):
    def merge(y):
        B, nh, T, hd = y.shape
        if transpose:
            y = y.transpose(*transpose)
        if contiguous:
            y = y.contiguous()
        return y.view(B, T, nh * hd)

    return merge


def test_split_merge_reference_passes(capsys):
    result = check_split_merge(split_heads, merge_heads)
    assert result.passed, problems_of(result)
    assert "✅" in capsys.readouterr().out
    assert check_split_merge(make_split(), make_merge()).passed


def test_split_merge_stubs_fail():
    assert_diagnosed(check_split_merge(stub, merge_heads), "not written yet")
    assert_diagnosed(check_split_merge(split_heads, stub), "not written yet")


@pytest.mark.parametrize("mistake, fragment", [
    (dict(transpose=None), "heads are not moved before tokens"),
    (dict(transpose=(2, 3)), "transposed the wrong dimensions (2, 3)"),
    (dict(transpose=(0, 1)), "transposed the wrong dimensions (0, 1)"),
    (dict(transpose=(1, 3)), "transposed the wrong dimensions (1, 3)"),
    (dict(order="straight"), "viewed straight as (B, num_heads, T, head_dim)"),
    (dict(order="interleaved"), "interleaved"),
    (dict(num_heads=3), "expected (B, num_heads, T, head_dim) = (1, 2, 3, 6)"),
])
def test_split_mistakes_are_named(mistake, fragment):
    assert_diagnosed(check_split_merge(make_split(**mistake), merge_heads), fragment)


@pytest.mark.parametrize("mistake, fragment", [
    (dict(transpose=None), "merged without moving heads back"),
    (dict(transpose=(2, 3)), "transposed the wrong dimensions (2, 3)"),
    (dict(contiguous=False), "call .contiguous() before .view"),
])
def test_merge_mistakes_are_named(mistake, fragment):
    assert_diagnosed(check_split_merge(split_heads, make_merge(**mistake)), fragment)


def test_split_merge_other_results_are_described():
    assert_diagnosed(check_split_merge(lambda x, nh: (x,), merge_heads), "return a tensor")
    assert_diagnosed(check_split_merge(split_heads, lambda y: y.sum(dim=1)),
                     "expected (B, T, num_heads * head_dim) = (2, 5, 12)")
