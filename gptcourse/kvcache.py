"""Generation with a KV cache: keep every layer's keys and values, so a new token costs one position.

Without a cache, each generated token runs the model over the whole sequence again, although
the keys and values of the earlier positions never change. With the cache, the model runs on
the new token only; its query attends over the stored keys and values.

These functions run the layers and weights of an existing GPTModel (they do not change it):
`forward_with_cache(model, ids, cache)` gives exactly the logits `model(all_ids)` would give
for the new positions.
"""

from __future__ import annotations

import torch

from .attention import MultiHeadAttention
from .generate import sample_next
from .layers import TransformerBlock
from .model import GPTModel


class KVCache:
    """The keys and values of the tokens seen so far: one (B, n_heads, T, head_dim) pair per layer."""

    def __init__(self, n_layers: int):
        if not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    @property
    def length(self) -> int:
        """How many positions are cached (0 when empty)."""
        return 0 if self.keys[0] is None else self.keys[0].size(2)

    def reset(self) -> None:
        """Forget everything, e.g. to start a new sequence."""
        self.keys = [None] * len(self.keys)
        self.values = [None] * len(self.values)

    def __repr__(self) -> str:
        return f"KVCache(n_layers={len(self.keys)}, length={self.length})"


def attention_with_cache(att: MultiHeadAttention, x: torch.Tensor, past_k: torch.Tensor | None = None,
                         past_v: torch.Tensor | None = None):
    """Causal attention of new tokens x (B, T_new, C) over the past and themselves.

    Returns (output (B, T_new, C), keys, values), where keys and values now include the new tokens.
    """
    q = att.split_heads(att.W_query(x))  # (B, nh, T_new, hd): only the new tokens ask
    k = att.split_heads(att.W_key(x))    # (B, nh, T_new, hd)
    v = att.split_heads(att.W_value(x))
    if past_k is not None:
        # Time is dim 2 of (B, nh, T, hd): the new positions come after the cached ones.
        k = torch.cat([past_k, k], dim=2)  # (B, nh, T_past + T_new, hd)
        v = torch.cat([past_v, v], dim=2)
    # attend treats the queries as the last T_new of the T_past + T_new positions: new token i
    # sits at position T_past + i and may look at keys 0 .. T_past + i (the mask's rows T_past:).
    out = att.attend(q, k, v)  # (B, nh, T_new, hd)
    return att.out_proj(att.merge_heads(out)), k, v


def block_with_cache(block: TransformerBlock, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
    """One transformer block on the new tokens x (B, T_new, C), reading and extending layer `layer` of the cache."""
    att_out, cache.keys[layer], cache.values[layer] = attention_with_cache(
        block.att, block.norm1(x), cache.keys[layer], cache.values[layer])
    x = x + block.drop_shortcut(att_out)
    return x + block.drop_shortcut(block.ff(block.norm2(x)))


def forward_with_cache(model: GPTModel, idx_new: torch.Tensor, cache: KVCache,
                       last_only: bool = False) -> torch.Tensor:
    """Logits (B, T_new, vocab) for new token ids (B, T_new) that follow the cached ones.

    With last_only=True, only the last position goes through the output head: (B, 1, vocab).
    """
    model.check_input(idx_new)
    past, T_new = cache.length, idx_new.size(1)
    if len(cache.keys) != len(model.trf_blocks):
        raise ValueError(f"the cache has {len(cache.keys)} layers but the model has "
                         f"{len(model.trf_blocks)}: make it with KVCache(model.cfg.n_layers)")
    if past and cache.keys[0].size(0) != idx_new.size(0):
        raise ValueError(f"the cache holds a batch of {cache.keys[0].size(0)} sequences but idx_new "
                         f"has {idx_new.size(0)}: keep one cache per batch (or reset it)")
    if past + T_new > model.cfg.context_length:
        raise ValueError(f"the cache holds {past} positions, so {T_new} more would pass the context "
                         f"length {model.cfg.context_length}: reset the cache and start again from the "
                         f"last tokens (generate_cached does this)")
    # The new tokens come after the cached ones: positions past .. past + T_new - 1, not 0 ..
    pos = torch.arange(past, past + T_new, device=idx_new.device)
    x = model.drop_emb(model.tok_emb(idx_new) + model.pos_emb(pos))  # (B, T_new, C)
    for layer, block in enumerate(model.trf_blocks):
        x = block_with_cache(block, x, cache, layer)
    if last_only:
        x = x[:, -1:, :]  # generation needs only the last position's prediction
    return model.out_head(model.final_norm(x))


@torch.no_grad()
def generate_cached(model: GPTModel, idx: torch.Tensor, max_new_tokens: int,
                    context_size: int | None = None, temperature: float = 0.0, top_k: int | None = None,
                    generator: torch.Generator | None = None,
                    refill_length: int | None = None) -> torch.Tensor:
    """Like generate_text_simple / generate, but each step runs the model on the new token only.

    Past the context size, the oldest token must leave the window and every position shifts, so
    the cache is rebuilt from the last `refill_length` tokens. The default (= context_size) matches
    the uncached crop exactly, at the price of a full forward per token; a smaller value is faster
    but the model then sees fewer tokens than the uncached crop, so its tokens can differ.
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"model must be a GPTModel, got {type(model).__name__}")
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError("idx must be a (batch, tokens) tensor with at least one token; "
                         "add a batch dimension with idx.unsqueeze(0)")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    limit = model.cfg.context_length
    context_size = limit if context_size is None else context_size
    if not isinstance(context_size, int) or not 1 <= context_size <= limit:
        raise ValueError(f"context_size must be an int from 1 to the context length {limit}, got {context_size!r}")
    refill_length = context_size if refill_length is None else refill_length
    if not isinstance(refill_length, int) or not 1 <= refill_length <= context_size:
        raise ValueError(f"refill_length must be an int from 1 to context_size={context_size}, "
                         f"got {refill_length!r}")
    if top_k is not None and (not isinstance(top_k, int) or not 1 <= top_k <= model.cfg.vocab_size):
        raise ValueError(f"top_k must be an int between 1 and {model.cfg.vocab_size}, got {top_k!r}")
    if max_new_tokens == 0:
        return idx
    was_training = model.training
    model.eval()
    cache = KVCache(model.cfg.n_layers)
    logits = forward_with_cache(model, idx[:, -context_size:], cache, last_only=True)[:, -1]  # prefill
    for step in range(max_new_tokens):
        next_id = sample_next(logits, temperature, top_k, generator)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
        if step == max_new_tokens - 1:
            break  # the last token is chosen; no need to run the model on it
        if cache.length == context_size:
            # Full: the window slides, every position shifts, so the cached keys are stale.
            cache.reset()
            logits = forward_with_cache(model, idx[:, -refill_length:], cache, last_only=True)[:, -1]
        else:
            logits = forward_with_cache(model, next_id, cache, last_only=True)[:, -1]
    model.train(was_training)
    return idx
