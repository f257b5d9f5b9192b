"""Causal self-attention: one head, a list of heads, and the efficient multi-head module."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .validate import require_flag, require_positive_int, require_probability


# --- checking sizes and inputs -------------------------------------------------------------------
def validate_attention_args(d_in: int, d_out: int, context_length: int, dropout: float,
                            num_heads: int = 1, out_name: str = "d_out") -> None:
    """Raise a clear error for sizes that cannot make an attention layer.

    `out_name` is what the caller calls its output size ("head_size" for a single `Head`).
    """
    for name, value in [("d_in", d_in), (out_name, d_out), ("context_length", context_length),
                        ("num_heads", num_heads)]:
        require_positive_int(name, value)
    require_probability("dropout", dropout, hint=": it is the probability of dropping an attention "
                        "weight (0.0 turns dropout off)")
    if d_out % num_heads != 0:
        raise ValueError(
            f"d_out={d_out} is not divisible by num_heads={num_heads}: each head gets d_out // num_heads "
            f"dimensions, so choose num_heads that divides d_out (for example {_divisors_hint(d_out)})"
        )


def _divisors_hint(n: int) -> str:
    return ", ".join(str(d) for d in range(1, min(n, 16) + 1) if n % d == 0)


def validate_sequence(x: torch.Tensor, d_in: int, context_length: int) -> None:
    """Inputs must be float (batch, tokens, d_in) with no more tokens than the context length."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor of shape (batch, tokens, {d_in}), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"input has dtype {x.dtype}, but attention works on float vectors: "
                        f"turn token ids into embeddings first (nn.Embedding)")
    if x.dim() != 3:
        raise ValueError(f"expected input of shape (batch, tokens, {d_in}), got {tuple(x.shape)}")
    if x.size(-1) != d_in:
        raise ValueError(f"input has {x.size(-1)} features per token, but this layer expects d_in={d_in}")
    if x.size(1) > context_length:
        raise ValueError(
            f"input has {x.size(1)} tokens but context_length is {context_length}: "
            f"crop the input to its last {context_length} tokens"
        )


def causal_mask(context_length: int) -> torch.Tensor:
    """(T, T) booleans, True where a token may look: itself and the tokens before it."""
    return torch.tril(torch.ones(context_length, context_length, dtype=torch.bool))


# --- the averaging trick: three ways to average over the past --------------------------------
def mean_of_past_loop(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C) -> (B, T, C): out[:, t] is the mean of x[:, 0..t], one position at a time."""
    _require_btc(x)
    out = torch.zeros_like(x)
    for t in range(x.size(1)):
        out[:, t] = x[:, : t + 1].mean(dim=1)
    return out


def mean_of_past_matmul(x: torch.Tensor) -> torch.Tensor:
    """The same with one matmul: a lower-triangular matrix whose rows are normalised to sum to 1."""
    _require_btc(x)
    T = x.size(1)
    weights = torch.tril(torch.ones(T, T, dtype=x.dtype, device=x.device))
    weights = weights / weights.sum(dim=1, keepdim=True)  # (T, T), row t = 1/(t+1) on 0..t
    return weights @ x                                    # (T, T) @ (B, T, C) -> (B, T, C)


def mean_of_past_softmax(x: torch.Tensor) -> torch.Tensor:
    """The same as a masked softmax of all-zero scores: the form attention generalises."""
    _require_btc(x)
    T = x.size(1)
    scores = torch.zeros(T, T, dtype=x.dtype, device=x.device)
    scores = scores.masked_fill(~causal_mask(T).to(x.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ x


def _require_btc(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor of shape (batch, tokens, channels), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")


# --- the core: who looks at whom ---------------------------------------------------------------
def causal_attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_size)) with the future masked out: (..., Tq, Tk), rows sum to 1.

    The queries are the last Tq of the Tk positions (Tq < Tk when earlier keys were cached).
    """
    Tq, Tk = q.size(-2), k.size(-2)
    if not Tq <= Tk <= mask.size(0):
        raise ValueError(f"need queries <= keys <= context_length, got {Tq}, {Tk}, {mask.size(0)}")
    # q.k grows like the head size; dividing by its square root keeps the scores' variance ~1,
    # so softmax stays soft instead of picking one token.
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))         # (..., Tq, Tk)
    # -inf *before* softmax: exp(-inf) = 0, and the allowed weights still sum to 1.
    scores = scores.masked_fill(~mask[Tk - Tq:Tk, :Tk], float("-inf"))
    return torch.softmax(scores, dim=-1)


# On a CPU, PyTorch's fused attention kernel works through the scores in tiles, with a cost per
# head and per tile that short contexts do not pay back: up to this many tokens, two batched
# matmuls and a softmax (`causal_attention_batched`) are faster, forward and backward
# (benchmarks/attention_cpu.py measures both). Longer contexts keep the fused kernel, which never
# stores the (T, T) weights.
SHORT_CONTEXT_ON_CPU = 128


def batched_beats_sdpa(device: str | torch.device, dtype: torch.dtype, seq_len: int) -> bool:
    """Whether two batched matmuls (`causal_attention_batched`) beat PyTorch's fused kernel for
    seq_len tokens of this dtype on this device, so that the fast path (without dropout) runs them:
    float32/64 on a CPU, at most SHORT_CONTEXT_ON_CPU tokens."""
    return (torch.device(device).type == "cpu" and dtype in (torch.float32, torch.float64)
            and seq_len <= SHORT_CONTEXT_ON_CPU)


def causal_attention_batched(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             mask: torch.Tensor) -> torch.Tensor:
    """Causal attention of q, k, v (B, nh, T, hd) -> (B, nh, T, hd) in two batched matmuls.

    The same maths as causal_attention_weights(q, k, mask) @ v, with `mask` the (T, T) causal
    mask. baddbmm scales the scores and adds the mask (0 where a query may look, -inf elsewhere)
    inside the matmul itself, so neither costs a pass over the scores.
    """
    B, nh, T, hd = q.shape
    blocked = torch.zeros(T, T, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    scores = torch.baddbmm(blocked.expand(B * nh, T, T), q.reshape(B * nh, T, hd),
                           k.reshape(B * nh, T, hd).transpose(1, 2), alpha=1 / math.sqrt(hd))
    return torch.bmm(torch.softmax(scores, dim=-1), v.reshape(B * nh, T, hd)).view(B, nh, T, hd)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, d_out) -> (B, num_heads, T, head_dim): head h gets features h*hd:(h+1)*hd."""
    B, T, d_out = x.shape
    # view splits the last dim into (heads, head_dim); transpose puts heads before tokens so
    # that the matmuls below treat each head as a separate batch entry.
    return x.view(B, T, num_heads, d_out // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, num_heads, T, head_dim) -> (B, T, num_heads * head_dim): the inverse of split_heads."""
    B, num_heads, T, head_dim = x.shape
    # After transpose the memory is no longer in row order, so view needs .contiguous() first.
    return x.transpose(1, 2).contiguous().view(B, T, num_heads * head_dim)


# --- the modules ---------------------------------------------------------------------------------
class Head(nn.Module):
    """One head of causal self-attention: each token mixes the values of itself and earlier tokens."""

    def __init__(self, d_in: int, head_size: int, context_length: int, dropout: float = 0.0):
        super().__init__()
        validate_attention_args(d_in, head_size, context_length, dropout, out_name="head_size")
        self.d_in, self.head_size, self.context_length = d_in, head_size, context_length
        self.key = nn.Linear(d_in, head_size, bias=False)
        self.query = nn.Linear(d_in, head_size, bias=False)
        self.value = nn.Linear(d_in, head_size, bias=False)
        # A buffer, not a parameter: it moves with .to(device) but is never trained (nor saved).
        self.register_buffer("mask", causal_mask(context_length), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        """(B, T, d_in) -> (B, T, head_size); with return_weights, also the (B, T, T) weights
        before dropout (rows sum to 1), for plotting."""
        validate_sequence(x, self.d_in, self.context_length)
        k = self.key(x)    # (B, T, hs)
        q = self.query(x)  # (B, T, hs)
        v = self.value(x)  # (B, T, hs)
        weights = causal_attention_weights(q, k, self.mask)  # (B, T, T)
        out = self.dropout(weights) @ v                      # (B, T, hs)
        return (out, weights) if return_weights else out


class MultiHeadAttentionWrapper(nn.Module):
    """The readable multi-head version: several `Head`s side by side, concatenated, then projected."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int):
        super().__init__()
        validate_attention_args(d_in, d_out, context_length, dropout, num_heads)
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.heads = nn.ModuleList(Head(d_in, self.head_dim, context_length, dropout)
                                   for _ in range(num_heads))
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([head(x) for head in self.heads], dim=-1)  # (B, T, d_out)
        return self.out_proj(out)


class MultiHeadAttention(nn.Module):
    """Efficient multi-head causal attention: one projection for all heads, split with view/transpose."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False, fast: bool = False):
        super().__init__()
        validate_attention_args(d_in, d_out, context_length, dropout, num_heads)
        require_flag("qkv_bias", qkv_bias)
        require_flag("fast", fast)
        self.d_in, self.d_out, self.context_length = d_in, d_out, context_length
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.fast = fast  # attend through the fastest kernels for the device (see attend)
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, T, d_out) -> (B, n_heads, T, head_dim): each head gets its own slice of features."""
        return split_heads(t, self.num_heads)

    def merge_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, n_heads, T, head_dim) -> (B, T, d_out): the inverse of split_heads."""
        return merge_heads(t)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               fast: bool | None = None) -> torch.Tensor:
        """Causal attention of q (B, nh, Tq, hd) over k, v (B, nh, Tk, hd) -> (B, nh, Tq, hd).

        With Tq < Tk (a KV cache), the queries are the last Tq positions. fast (default: the
        module's own setting) picks the fast path for this one call: PyTorch's fused kernel, or
        on a CPU without dropout, for Tq = Tk <= SHORT_CONTEXT_ON_CPU, `causal_attention_batched`.
        """
        fast = self.fast if fast is None else fast
        if fast:
            p = self.dropout.p if self.training else 0.0
            Tq, Tk = q.size(-2), k.size(-2)
            if Tq == Tk:
                if p == 0.0 and batched_beats_sdpa(q.device, q.dtype, Tq):
                    return causal_attention_batched(q, k, v, self.mask[:Tk, :Tk])
                # PyTorch's fused kernel: same maths (its default scale is 1/sqrt(head_dim)).
                return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            # is_causal aligns the mask top-left; cached keys need it bottom-right, so pass it.
            assert Tq < Tk <= self.context_length, f"need queries <= keys <= context_length, got {Tq}, {Tk}"
            # One new query sits at the last position and may see every key: no mask needed.
            mask = None if Tq == 1 else self.mask[Tk - Tq:Tk, :Tk]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        weights = self.dropout(causal_attention_weights(q, k, self.mask))  # (B, nh, Tq, Tk)
        return weights @ v                                                  # (B, nh, Tq, hd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A learner calls this module directly (chapter 3), so a wrong shape gets a clear error
        # here. It reads three sizes, about 1 microsecond: inside a model it costs nothing that
        # matters, so the model's blocks need no way to skip it.
        validate_sequence(x, self.d_in, self.context_length)
        q = self.split_heads(self.W_query(x))  # (B, nh, T, hd)
        k = self.split_heads(self.W_key(x))
        v = self.split_heads(self.W_value(x))
        out = self.merge_heads(self.attend(q, k, v))  # (B, T, d_out)
        return self.out_proj(out)


@torch.no_grad()
def copy_heads_into(wrapper: MultiHeadAttentionWrapper, mha: MultiHeadAttention) -> MultiHeadAttention:
    """Copy the weights of a list-of-heads module into the efficient one, so both compute the same."""
    if not isinstance(wrapper, MultiHeadAttentionWrapper) or not isinstance(mha, MultiHeadAttention):
        raise TypeError(f"expected (MultiHeadAttentionWrapper, MultiHeadAttention), got "
                        f"({type(wrapper).__name__}, {type(mha).__name__})")
    first = wrapper.heads[0]
    if len(wrapper.heads) != mha.num_heads or first.head_size != mha.head_dim or first.d_in != mha.d_in:
        raise ValueError(
            f"shapes differ: the wrapper has {len(wrapper.heads)} heads of size {first.head_size} "
            f"reading d_in={first.d_in}; the MultiHeadAttention has {mha.num_heads} heads of size "
            f"{mha.head_dim} reading d_in={mha.d_in}"
        )
    # Head h owns rows h*hd:(h+1)*hd of the stacked projection (nn.Linear stores (out, in)),
    # which are exactly the features split_heads hands to head h.
    mha.W_query.weight.copy_(torch.cat([h.query.weight for h in wrapper.heads], dim=0))
    mha.W_key.weight.copy_(torch.cat([h.key.weight for h in wrapper.heads], dim=0))
    mha.W_value.weight.copy_(torch.cat([h.value.weight for h in wrapper.heads], dim=0))
    for proj in (mha.W_query, mha.W_key, mha.W_value):
        if proj.bias is not None:
            proj.bias.zero_()  # a Head has no biases
    mha.out_proj.load_state_dict(wrapper.out_proj.state_dict())
    return mha
