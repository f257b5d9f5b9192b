"""A modern LLM (the Llama architecture of SmolLM2): GPT-2's model with four parts changed.

1. RMSNorm instead of LayerNorm: scale each vector by its root mean square; no centring, no shift.
2. SwiGLU instead of the GELU feed-forward: a second "gate" projection, through SiLU, multiplies
   the first one, element by element.
3. RoPE instead of learned position embeddings: queries and keys are rotated by their position
   (gptcourse/rope.py), so attention sees relative positions.
4. Grouped-query attention: several query heads share one key/value head, so the KV cache is
   n_heads / n_kv_heads times smaller.

No biases anywhere, no dropout (the model is only used pretrained here). The KV cache is the
course's own `KVCache` (gptcourse/kvcache.py): each layer stores its n_kv_heads keys and values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import replace_fields
from .kvcache import KVCache
from .rope import apply_rope, rope_angles
from .tying import TiedEmbeddingMixin
from .validate import require_flag, require_instance, require_positive_int, require_positive_number


@dataclass(frozen=True)
class LlamaConfig:
    """Every size that defines a Llama model. Defaults are SmolLM2-135M's."""

    vocab_size: int = 49152
    context_length: int = 8192
    emb_dim: int = 576
    n_heads: int = 9            # query heads
    n_kv_heads: int = 3         # key/value heads, each shared by n_heads // n_kv_heads query heads
    n_layers: int = 30
    hidden_dim: int = 1536      # the feed-forward's inner size
    rope_base: float = 100_000.0
    norm_eps: float = 1e-5
    tie_weights: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_kv_heads", "n_layers",
                     "hidden_dim"):
            object.__setattr__(self, name, require_positive_int(name, getattr(self, name)))
        for name in ("rope_base", "norm_eps"):
            object.__setattr__(self, name, require_positive_number(name, getattr(self, name)))
        require_flag("tie_weights", self.tie_weights)
        if self.emb_dim % self.n_heads:
            raise ValueError(f"emb_dim={self.emb_dim} is not divisible by n_heads={self.n_heads}: "
                             f"every head gets emb_dim // n_heads dimensions")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads="
                             f"{self.n_kv_heads}: each key/value head serves the same number of "
                             f"query heads")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} (emb_dim // n_heads) is odd: RoPE turns "
                             f"pairs of numbers, so it must be even")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def replace(self, **changes) -> LlamaConfig:
        """A copy with some fields changed (and checked again)."""
        return replace_fields(self, "config field(s)", **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight: LayerNorm without the mean and the shift."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.emb_dim = require_positive_int("emb_dim", emb_dim)
        self.eps = require_positive_number("eps", eps)
        self.weight = nn.Parameter(torch.ones(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = x.pow(2).mean(dim=-1, keepdim=True)      # (..., 1)
        return x * torch.rsqrt(mean_square + self.eps) * self.weight

    def extra_repr(self) -> str:
        return f"{self.emb_dim}, eps={self.eps}"


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): the gate decides, per inner unit, how much of `up` passes."""

    def __init__(self, emb_dim: int, hidden_dim: int):
        super().__init__()
        self.gate = nn.Linear(emb_dim, hidden_dim, bias=False)
        self.up = nn.Linear(emb_dim, hidden_dim, bias=False)
        self.down = nn.Linear(hidden_dim, emb_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))  # (..., C) -> (..., H) -> (..., C)


def causal_mask(n_new: int, n_past: int, device=None) -> torch.Tensor | None:
    """True where new token i (at position n_past + i) may look at key j: j <= n_past + i.

    None for one new token: it may look at every key, so no mask is needed.
    """
    if n_new == 1:
        return None
    keys = torch.arange(n_past + n_new, device=device)
    queries = torch.arange(n_past, n_past + n_new, device=device)
    return keys[None, :] <= queries[:, None]  # (n_new, n_past + n_new)


class GroupedQueryAttention(nn.Module):
    """Causal attention where each key/value head serves a group of n_heads // n_kv_heads query heads."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.W_query = nn.Linear(cfg.emb_dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.W_key = nn.Linear(cfg.emb_dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.W_value = nn.Linear(cfg.emb_dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.out_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.emb_dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.W_query(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)    # (B, nh, T, hd)
        k = self.W_key(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)   # (B, nkv, T, hd)
        v = self.W_value(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # position goes in by rotation
        if cache is not None:
            k, v = cache.append(layer, k, v)  # the cache stores only the n_kv_heads heads
        # Query head h reads key/value head h // (n_heads // n_kv_heads). enable_gqa=True does
        # that inside the fused kernel, the same as k.repeat_interleave(group, dim=1) (chapter 9
        # proves it) without copying the whole cache at every step.
        n_past = k.size(2) - T  # the new tokens come after the cached ones
        if n_past == 0 or T == 1:  # a plain causal mask, or one token that may see every key
            out = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, n_past, x.device),
                                                 enable_gqa=True)  # (B, nh, T, hd)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class LlamaBlock(nn.Module):
    """Pre-norm block, as GPT-2's: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.att = GroupedQueryAttention(cfg)
        self.norm2 = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.ff = SwiGLU(cfg.emb_dim, cfg.hidden_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.att(self.norm1(x), cos, sin, cache, layer)  # (B, T, C)
        return x + self.ff(self.norm2(x))


class LlamaModel(TiedEmbeddingMixin, nn.Module):
    """forward(idx) maps (B, T) token ids to (B, T, vocab) logits; with a KVCache, only new tokens run."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = require_instance("cfg", cfg, LlamaConfig)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)  # no position embedding: RoPE
        self.trf_blocks = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        cos, sin = rope_angles(cfg.head_dim, cfg.context_length, cfg.rope_base)
        # Computed from the config, not learned: not saved with the weights (persistent=False).
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if cfg.tie_weights:
            self.tie_weights()

    def new_cache(self, capacity: int | None = None) -> KVCache:
        """An empty KV cache for this model (capacity: positions to reserve, up to context_length)."""
        return KVCache(self.cfg.n_layers, capacity=capacity)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Logits for the tokens idx (B, T), which follow the cache's tokens if a cache is given.

        last_only=True runs only the last position through the output head: (B, 1, vocab).
        """
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.size(1) == 0 \
                or idx.dtype not in (torch.long, torch.int32):
            raise ValueError("idx must be a (batch, tokens) tensor of integer ids with at least one "
                             "token; add a batch dimension with idx.unsqueeze(0)")
        n_past, T = (cache.length if cache is not None else 0), idx.size(1)
        if n_past + T > self.cfg.context_length:
            raise ValueError(f"{n_past} cached + {T} new tokens pass the context length "
                             f"{self.cfg.context_length}: start a new cache with fewer tokens")
        if cache is not None and len(cache.keys) != len(self.trf_blocks):
            raise ValueError(f"the cache has {len(cache.keys)} layers but the model has "
                             f"{len(self.trf_blocks)}: make it with model.new_cache()")
        cos = self.rope_cos[n_past:n_past + T]  # (T, hd): the angles of the new tokens' positions
        sin = self.rope_sin[n_past:n_past + T]
        x = self.tok_emb(idx)                     # (B, T, C)
        for layer, block in enumerate(self.trf_blocks):
            x = block(x, cos, sin, cache, layer)
        if last_only:
            x = x[:, -1:]
        return self.out_head(self.final_norm(x))  # (B, T, vocab)
