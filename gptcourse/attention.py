"""Causal self-attention: one head, a list of heads, and the efficient multi-head module."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def check_attention_args(d_in: int, d_out: int, context_length: int, dropout: float,
                         num_heads: int = 1) -> None:
    """Raise a clear error for sizes that cannot make an attention layer."""
    for name, value in [("d_in", d_in), ("d_out", d_out), ("context_length", context_length),
                        ("num_heads", num_heads)]:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}: it is the probability of dropping a weight")
    if d_out % num_heads != 0:
        raise ValueError(
            f"d_out={d_out} is not divisible by num_heads={num_heads}: each head gets d_out // num_heads "
            f"dimensions, so choose num_heads that divides d_out (for example {_divisors_hint(d_out)})"
        )


def _divisors_hint(n: int) -> str:
    return ", ".join(str(d) for d in range(1, min(n, 16) + 1) if n % d == 0)


def check_sequence(x: torch.Tensor, d_in: int, context_length: int) -> None:
    """Inputs must be (batch, tokens, d_in) with no more tokens than the context length."""
    if x.dim() != 3:
        raise ValueError(f"expected input of shape (batch, tokens, {d_in}), got {tuple(x.shape)}")
    if x.size(-1) != d_in:
        raise ValueError(f"input has {x.size(-1)} features per token, but this layer expects d_in={d_in}")
    if x.size(1) > context_length:
        raise ValueError(
            f"input has {x.size(1)} tokens but context_length is {context_length}: "
            f"crop the input to its last {context_length} tokens"
        )


class Head(nn.Module):
    """One head of causal self-attention: each token mixes the values of itself and earlier tokens."""

    def __init__(self, d_in: int, head_size: int, context_length: int, dropout: float = 0.0):
        super().__init__()
        check_attention_args(d_in, head_size, context_length, dropout)
        self.d_in, self.head_size, self.context_length = d_in, head_size, context_length
        self.key = nn.Linear(d_in, head_size, bias=False)
        self.query = nn.Linear(d_in, head_size, bias=False)
        self.value = nn.Linear(d_in, head_size, bias=False)
        # A buffer, not a parameter: it moves with .to(device) but is never trained.
        self.register_buffer("mask", torch.tril(torch.ones(context_length, context_length, dtype=torch.bool)))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        check_sequence(x, self.d_in, self.context_length)
        T = x.size(1)
        k = self.key(x)    # (B, T, hs)
        q = self.query(x)  # (B, T, hs)
        v = self.value(x)  # (B, T, hs)
        # Scale by the head size so the scores have variance ~1 and softmax stays soft.
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_size)      # (B, T, T)
        scores = scores.masked_fill(~self.mask[:T, :T], float("-inf"))  # no peeking at the future
        weights = torch.softmax(scores, dim=-1)                         # rows sum to 1
        out = self.dropout(weights) @ v                                 # (B, T, hs)
        return (out, weights) if return_weights else out


class MultiHeadAttentionWrapper(nn.Module):
    """The readable multi-head version: several `Head`s side by side, concatenated, then projected."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int):
        super().__init__()
        check_attention_args(d_in, d_out, context_length, dropout, num_heads)
        head_size = d_out // num_heads
        self.heads = nn.ModuleList(Head(d_in, head_size, context_length, dropout) for _ in range(num_heads))
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([head(x) for head in self.heads], dim=-1)  # (B, T, d_out)
        return self.out_proj(out)


class MultiHeadAttention(nn.Module):
    """Efficient multi-head causal attention: one projection for all heads, split with view/transpose."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False, use_sdpa: bool = False):
        super().__init__()
        check_attention_args(d_in, d_out, context_length, dropout, num_heads)
        self.d_in, self.d_out, self.context_length = d_in, d_out, context_length
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.use_sdpa = use_sdpa
        self.dropout_p = dropout
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.tril(torch.ones(context_length, context_length, dtype=torch.bool)),
                             persistent=False)

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, T, d_out) -> (B, n_heads, T, head_dim): each head gets its own slice of features."""
        B, T, _ = t.shape
        return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, n_heads, T, head_dim) -> (B, T, d_out): the inverse of split_heads."""
        B, _, T, _ = t.shape
        return t.transpose(1, 2).contiguous().view(B, T, self.d_out)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention of q over k, v, all (B, nh, T, hd)."""
        if self.use_sdpa:
            p = self.dropout_p if self.training else 0.0
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        T = q.size(-2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)     # (B, nh, T, T)
        scores = scores.masked_fill(~self.mask[:T, :T], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return weights @ v                                                # (B, nh, T, hd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sequence(x, self.d_in, self.context_length)
        q = self.split_heads(self.W_query(x))
        k = self.split_heads(self.W_key(x))
        v = self.split_heads(self.W_value(x))
        out = self.merge_heads(self.attend(q, k, v))
        return self.out_proj(out)


@torch.no_grad()
def copy_heads_into(wrapper: MultiHeadAttentionWrapper, mha: MultiHeadAttention) -> MultiHeadAttention:
    """Copy the weights of a list-of-heads module into the efficient one, so both compute the same."""
    if len(wrapper.heads) != mha.num_heads or wrapper.heads[0].head_size != mha.head_dim:
        raise ValueError(
            f"shapes differ: wrapper has {len(wrapper.heads)} heads of size {wrapper.heads[0].head_size}, "
            f"MultiHeadAttention has {mha.num_heads} of size {mha.head_dim}"
        )
    # Head h owns rows h*hd:(h+1)*hd of the stacked projection (nn.Linear stores (out, in)).
    mha.W_query.weight.copy_(torch.cat([h.query.weight for h in wrapper.heads], dim=0))
    mha.W_key.weight.copy_(torch.cat([h.key.weight for h in wrapper.heads], dim=0))
    mha.W_value.weight.copy_(torch.cat([h.value.weight for h in wrapper.heads], dim=0))
    for proj in (mha.W_query, mha.W_key, mha.W_value):
        if proj.bias is not None:
            proj.bias.zero_()
    mha.out_proj.load_state_dict(wrapper.out_proj.state_dict())
    return mha
