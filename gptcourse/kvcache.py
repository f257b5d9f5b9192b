"""Generation with a KV cache: keep every layer's keys and values, so a new token costs one position.

Without a cache, each generated token runs the model over the whole sequence again, although
the keys and values of the earlier positions never change. With the cache, the model runs on
the new token only; its query attends over the stored keys and values.

These functions run the layers and weights of an existing GPTModel (they do not change it):
`forward_with_cache(model, ids, cache)` gives the logits `model(all_ids)` would give for the
new positions: the same computation, up to the order in which float sums are added.

fast=True runs LayerNorm, GELU and attention through the layers' fused functions (one kernel
each instead of several small operations) with the model's own weights; the logits then agree
with the model's to float rounding rather than bit for bit. `generate_cached` does this by
default, through `gptcourse.fastdecode`, which also keeps some weights in the layout a CPU
reads fastest; fast=False runs the model's own modules, the explicit reference.
"""

from __future__ import annotations

import torch

from .attention import MultiHeadAttention
from .fastdecode import COPIES_PAY_BACK_FROM, DecodePlan
from .generate import token_sampler
from .layers import GELU, FeedForward, LayerNorm, TransformerBlock
from .model import GPTModel
from .tokenizers import text_to_token_ids, token_ids_to_text
from .validate import (
    require_flag,
    require_instance,
    require_int,
    require_int_in_range,
    require_optional_int,
    require_positive_int,
)


class KVCache:
    """The keys and values of the tokens seen so far: one (B, n_heads, T, head_dim) pair per layer.

    By default append() uses torch.cat, which copies the whole cache into new memory at every
    step. With capacity=N, the first append reserves room for N positions per layer, and later
    ones write only the new positions, in place; keys[layer] is then a view of the filled part
    (so it changes when the cache is reset and refilled).
    """

    def __init__(self, n_layers: int, capacity: int | None = None):
        n_layers = require_positive_int("n_layers", n_layers)
        self.capacity = require_optional_int("capacity", capacity, low=1, hint=" (positions per layer)")
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self._room: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers  # reserved memory

    @property
    def length(self) -> int:
        """How many positions are cached (0 when empty)."""
        return 0 if self.keys[0] is None else self.keys[0].size(2)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Put new keys and values (B, nh, T_new, hd) after layer `layer`'s cached ones; return all of them."""
        past_k, past_v = self.keys[layer], self.values[layer]
        if self.capacity is None:
            if past_k is not None:  # time is dim 2: the new positions come after the cached ones
                k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        else:
            start = 0 if past_k is None else past_k.size(2)
            end = start + k.size(2)
            if end > self.capacity:
                raise ValueError(f"the cache has room for capacity={self.capacity} positions and holds "
                                 f"{start}, so {k.size(2)} more do not fit: reset it, or make it larger")
            room = self._room[layer]
            if start == 0:  # a new sequence: reuse the reserved memory if it still fits
                shape = (k.size(0), k.size(1), self.capacity, k.size(3))
                if room is None or room[0].shape != shape or room[0].dtype != k.dtype \
                        or room[0].device != k.device:
                    room = self._room[layer] = (k.new_empty(shape), v.new_empty(shape))
            room[0][:, :, start:end] = k  # only the new positions are written
            room[1][:, :, start:end] = v
            k, v = room[0][:, :, :end], room[1][:, :, :end]
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def reset(self) -> None:
        """Forget everything, e.g. to start a new sequence (reserved memory is kept for reuse)."""
        self.keys = [None] * len(self.keys)
        self.values = [None] * len(self.values)

    def __repr__(self) -> str:
        room = "" if self.capacity is None else f", capacity={self.capacity}"
        return f"KVCache(n_layers={len(self.keys)}, length={self.length}{room})"


def _new_qkv(att: MultiHeadAttention, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Queries, keys and values of the new tokens x (B, T_new, C): each (B, nh, T_new, hd)."""
    return tuple(att.split_heads(w(x)) for w in (att.W_query, att.W_key, att.W_value))


def _attend(att: MultiHeadAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            fast: bool) -> torch.Tensor:
    """The new queries over all keys and values, heads merged and projected: (B, T_new, C)."""
    # attend treats the queries as the last T_new of the T_past + T_new positions: new token i
    # sits at position T_past + i and may look at keys 0 .. T_past + i (the mask's rows T_past:).
    out = att.attend(q, k, v, fast=True if fast else None)  # (B, nh, T_new, hd)
    return att.out_proj(att.merge_heads(out))


def attention_with_cache(att: MultiHeadAttention, x: torch.Tensor, past_k: torch.Tensor | None = None,
                         past_v: torch.Tensor | None = None, fast: bool = False):
    """Causal attention of new tokens x (B, T_new, C) over the past and themselves.

    Returns (output (B, T_new, C), keys, values), where keys and values now include the new tokens.
    fast=True uses the attention's fast path for this call (PyTorch's fused kernel).
    """
    q, k, v = _new_qkv(att, x)  # only the new tokens ask
    if past_k is not None:
        # Time is dim 2 of (B, nh, T, hd): the new positions come after the cached ones.
        k = torch.cat([past_k, k], dim=2)  # (B, nh, T_past + T_new, hd)
        v = torch.cat([past_v, v], dim=2)
    return _attend(att, q, k, v, fast), k, v


def validate_fusable(model: GPTModel) -> None:
    """fast=True replaces exactly the course's LayerNorm and GELU: refuse anything else."""
    for i, block in enumerate(model.trf_blocks):
        ff = block.ff
        if type(block.norm1) is not LayerNorm or type(block.norm2) is not LayerNorm \
                or type(ff) is not FeedForward or len(ff.layers) != 3 or type(ff.layers[1]) is not GELU:
            raise ValueError(f"fast=True needs the course's LayerNorm, FeedForward and GELU, but block "
                             f"{i} has other modules: use fast=False (the model's own modules)")
    if type(model.final_norm) is not LayerNorm:
        raise ValueError("fast=True needs the course's LayerNorm as final_norm, but the model has "
                         f"{type(model.final_norm).__name__}: use fast=False")


def _shortcut_dropout(block: TransformerBlock, x: torch.Tensor) -> torch.Tensor:
    """block.drop_shortcut(x). In eval mode dropout is the identity, so skip the module call:
    generation makes two per block and token, a few microseconds each."""
    return block.drop_shortcut(x) if block.training else x


def block_with_cache(block: TransformerBlock, x: torch.Tensor, cache: KVCache, layer: int,
                     fast: bool = False) -> torch.Tensor:
    """One transformer block on the new tokens x (B, T_new, C), reading and extending layer `layer` of the cache."""
    norm1, norm2, ff = ((block.norm1.fused_forward, block.norm2.fused_forward, block.ff.fused_forward)
                        if fast else (block.norm1, block.norm2, block.ff))
    q, k, v = _new_qkv(block.att, norm1(x))
    k, v = cache.append(layer, k, v)  # as in attention_with_cache, with the cache's own storage
    x = x + _shortcut_dropout(block, _attend(block.att, q, k, v, fast))
    return x + _shortcut_dropout(block, ff(norm2(x)))


def forward_with_cache(model: GPTModel, idx_new: torch.Tensor, cache: KVCache,
                       last_only: bool = False, fast: bool = False) -> torch.Tensor:
    """Logits (B, T_new, vocab) for new token ids (B, T_new) that follow the cached ones.

    With last_only=True, only the last position goes through the output head: (B, 1, vocab).
    With fast=True, LayerNorm, GELU and attention use the layers' fused functions (see the top).
    """
    require_flag("fast", fast)
    if fast:
        validate_fusable(model)
    _check_step(model, idx_new, cache)
    return _forward_checked(model, idx_new, cache, last_only, fast)


def _check_step(model: GPTModel, idx_new: torch.Tensor, cache: KVCache) -> None:
    """Clear errors for ids or a cache that the model cannot extend."""
    model.validate_input(idx_new)
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


def _forward_checked(model: GPTModel, idx_new: torch.Tensor, cache: KVCache, last_only: bool,
                     fast: bool) -> torch.Tensor:
    """forward_with_cache without its checks, for a caller that has made them already."""
    past, T_new = cache.length, idx_new.size(1)
    # The new tokens come after the cached ones: positions past .. past + T_new - 1, not 0 ..
    pos = torch.arange(past, past + T_new, device=idx_new.device)
    x = model.drop_emb(model.embed_tokens(idx_new) + model.pos_emb(pos))  # (B, T_new, C)
    for layer, block in enumerate(model.trf_blocks):
        x = block_with_cache(block, x, cache, layer, fast)
    if last_only:
        x = x[:, -1:, :]  # generation needs only the last position's prediction
    final_norm = model.final_norm.fused_forward if fast else model.final_norm
    return model.out_head(final_norm(x))


@torch.no_grad()
def generate_cached(model: GPTModel, idx: torch.Tensor, max_new_tokens: int,
                    context_size: int | None = None, temperature: float = 0.0, top_k: int | None = None,
                    generator: torch.Generator | None = None,
                    refill_length: int | None = None, fast: bool = True) -> torch.Tensor:
    """Like generate_text_simple / generate, but each step runs the model on the new token only.

    Past the context size, the oldest token must leave the window and every position shifts, so
    the cache is rebuilt from the last `refill_length` tokens. The default (= context_size) matches
    the uncached crop exactly, at the price of a full forward per token; a smaller value is faster
    but the model then sees fewer tokens than the uncached crop, so its tokens can differ.
    fast=True (the default) runs the steps through `gptcourse.fastdecode`; fast=False through
    the model's own modules (forward_with_cache), the explicit reference.
    """
    require_instance("model", model, GPTModel)
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError("idx must be a (batch, tokens) tensor with at least one token; "
                         "add a batch dimension with idx.unsqueeze(0)")
    max_new_tokens = require_int("max_new_tokens", max_new_tokens, low=0)
    limit = model.cfg.context_length
    context_size = limit if context_size is None else context_size
    context_size = require_int_in_range("context_size", context_size, 1, limit, "context_length")
    refill_length = context_size if refill_length is None else refill_length
    refill_length = require_int_in_range("refill_length", refill_length, 1, context_size, "context_size")
    sample = token_sampler(temperature, top_k, generator, model.cfg.vocab_size)  # checked once, here
    require_flag("fast", fast)
    if fast:
        validate_fusable(model)
    if max_new_tokens == 0:
        return idx
    was_training = model.training
    model.eval()
    cache = KVCache(model.cfg.n_layers, capacity=context_size)  # written in place, never copied
    # After eval(): the plan skips dropout. Copies of weights only where they pay back.
    plan = DecodePlan(model, copy=max_new_tokens >= COPIES_PAY_BACK_FROM) if fast else None

    def next_logits(ids: torch.Tensor) -> torch.Tensor:
        """(B, vocab) after ids, extending the cache (whose room the caller has checked)."""
        if plan is not None:
            return plan.forward(ids, cache)[:, -1]
        return _forward_checked(model, ids, cache, True, False)[:, -1]

    def refill(ids: torch.Tensor) -> torch.Tensor:
        """next_logits for a window of ids into an empty cache, with every check of a step."""
        _check_step(model, ids, cache)
        return next_logits(ids)

    logits = refill(idx[:, -context_size:])  # the prefill
    for step in range(max_new_tokens):
        next_id = sample(logits)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
        if step == max_new_tokens - 1:
            break  # the last token is chosen; no need to run the model on it
        if cache.length == context_size:
            # Full: the window slides, every position shifts, so the cached keys are stale.
            cache.reset()
            logits = refill(idx[:, -refill_length:])
        else:
            # One token the model itself chose, into a cache with room (checked just above): the
            # prefill's checks hold, so no step repeats them.
            logits = next_logits(next_id)
    model.train(was_training)
    return idx


def generate_text_cached(model: GPTModel, tokenizer, prompt: str, max_new_tokens: int,
                         temperature: float = 0.0, top_k: int | None = None,
                         seed: int | None = None) -> str:
    """generate.generate_text through generate_cached: text in, text out (`gptcourse sample`)."""
    require_optional_int("seed", seed, low=0, hint=" (None: not seeded)")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    idx = text_to_token_ids(prompt, tokenizer).to(model.tok_emb.weight.device)
    out = generate_cached(model, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                          generator=generator)
    return token_ids_to_text(out.cpu(), tokenizer)
