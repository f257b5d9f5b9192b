"""The default cached decode step: kvcache's computation in fewer, faster operations.

`generate_cached` runs this unless it is given fast=False. It computes what
`kvcache.forward_with_cache` computes with the same weights (tests/test_fastdecode.py checks
the logits to float rounding and the greedy tokens exactly), with three changes:

- LayerNorm and GELU run through the layers' own fused functions (`LayerNorm.fused_forward`,
  `gelu_tanh_fused`), attention through `MultiHeadAttention.attend(..., fast=True)`.
- A cached step multiplies one token's vector by every weight matrix, so it is mostly reading
  weights. On a CPU, PyTorch's matrix-vector product reads a matrix stored input-major,
  (in, out), faster than nn.Linear's (out, in) when its rows are short (in <= out): that layout
  does one short dot product per output. So `DecodePlan` copies those float32 matrices once, at
  the start of a generation, into the faster layout: the query, key and value matrices side by
  side as one (C, 3C) product (the layout GPT-2's own checkpoint uses), the attention's output
  projection, the feed-forward's expansion and the output head (for a generation of at least
  COPIES_PAY_BACK_FROM tokens). `python benchmarks/kv_cache.py` prints both layouts' speeds.
- The loop over the blocks reads prepared tuples, not modules: no module calls, no dropout
  calls (generation runs in eval mode), no checks per token.

The copies take memory while the generation runs: for GPT-2 124M about three quarters of the
model's own size. A Linear layer of another kind (a LoRA layer, an int8 layer) or on another
device is called as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import gelu_tanh_fused
from .model import GPTModel

Product = Callable[[torch.Tensor], torch.Tensor]

# The copies take about as long as a few tokens' steps, and each later step is faster: measured
# on GPT-2 124M at 1 and 2 threads they pay back within a few dozen new tokens (the count hardly
# depends on the model's size, since both sides grow with its bytes). Shorter generations read
# the weights where they are.
COPIES_PAY_BACK_FROM = 32


def reads_faster_transposed(layer: nn.Module) -> bool:
    """Whether DecodePlan copies this layer's weight input-major: a float32 nn.Linear on a CPU
    whose rows are short (in_features <= out_features)."""
    return (type(layer) is nn.Linear and layer.weight.device.type == "cpu"
            and layer.weight.dtype == torch.float32 and layer.in_features <= layer.out_features)


def input_major(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """(out_i, in) matrices side by side, stored input-major: (in, sum of out_i), one copy."""
    out = weights[0].new_empty(weights[0].size(1), sum(w.size(0) for w in weights))
    start = 0
    for w in weights:
        # A few rows at a time: transposing a whole large matrix in one copy strides through
        # memory and runs about half as fast.
        for row in range(0, w.size(0), 64):
            block = w[row:row + 64]
            out[:, start + row:start + row + block.size(0)] = block.t()
        start += w.size(0)
    return out


def side_by_side(layers: Sequence[nn.Module], copy: bool = True) -> Product:
    """x (..., in) -> the layers' outputs concatenated on the last dimension. With copy=True, one
    product where every layer is a plain Linear that reads faster input-major (see the top)."""
    if copy and all(reads_faster_transposed(layer) for layer in layers):
        weight = input_major([layer.weight.detach() for layer in layers])  # (in, out)
        biases = [layer.bias for layer in layers]
        bias = None if all(b is None for b in biases) else torch.cat(
            [layer.weight.new_zeros(layer.out_features) if b is None else b.detach()
             for layer, b in zip(layers, biases)])

        def product(x: torch.Tensor) -> torch.Tensor:
            rows = x.reshape(-1, x.size(-1))  # (B * T, in): one matrix product for all tokens
            out = rows @ weight if bias is None else torch.addmm(bias, rows, weight)
            return out.view(*x.shape[:-1], weight.size(1))
        return product
    products = [(lambda x, layer=layer: F.linear(x, layer.weight, layer.bias))  # no module call
                if type(layer) is nn.Linear else layer for layer in layers]
    if len(products) == 1:
        return products[0]
    return lambda x: torch.cat([product(x) for product in products], dim=-1)


class DecodePlan:
    """A GPTModel's cached step, prepared once per generation (see the top of this module).

    With copy=True the plan holds input-major copies of some weights (see the top): make a new
    one after the weights change. copy=False reads every weight where it is.
    """

    def __init__(self, model: GPTModel, copy: bool = True):
        self.model = model
        self.blocks = []
        for block in model.trf_blocks:
            att, ff = block.att, block.ff
            self.blocks.append((block.norm1.fused_forward,
                                side_by_side([att.W_query, att.W_key, att.W_value], copy), att,
                                side_by_side([att.out_proj], copy), block.norm2.fused_forward,
                                side_by_side([ff.expand], copy), side_by_side([ff.project], copy)))
        self.head = side_by_side([model.out_head], copy)

    def forward(self, idx_new: torch.Tensor, cache, last_only: bool = True) -> torch.Tensor:
        """Logits (B, T_new or 1, vocab) for ids (B, T_new) that follow the cached ones, as
        forward_with_cache gives them (eval mode; the caller checks the ids and the cache)."""
        model = self.model
        past, T_new = cache.length, idx_new.size(1)
        # The rows of positions past .. past + T_new - 1: what pos_emb(arange(...)) looks up.
        x = model.embed_tokens(idx_new) + model.pos_emb.weight[past:past + T_new]
        for layer, (norm1, qkv, att, out_proj, norm2, expand, project) in enumerate(self.blocks):
            q, k, v = qkv(norm1(x)).split(att.d_out, dim=-1)  # (B, T_new, C) each
            k, v = cache.append(layer, att.split_heads(k), att.split_heads(v))
            x = x + out_proj(att.merge_heads(att.attend(att.split_heads(q), k, v, fast=True)))
            x = x + project(gelu_tanh_fused(expand(norm2(x))))
        if last_only:
            x = x[:, -1:, :]
        return self.head(model.final_norm.fused_forward(x))
