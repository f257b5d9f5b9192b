"""Rotary position embeddings (RoPE): tell attention where a token is by rotating its query and key.

GPT-2 adds a learned position vector to each token. RoPE learns nothing: it splits each query and
key into pairs of numbers and turns pair i of the token at position p by the angle p * theta_i.
A query at position m and a key at position n then meet at the angle (m - n) * theta_i, so the
attention score depends on how far apart the two tokens are, never on where they both sit.

Which numbers make a pair is a convention. Here, as in Hugging Face's Llama, number i pairs with
number i + head_dim / 2 ("rotate half"). The weights must follow the convention they were trained
with; gptcourse.smollm2 reorders the rows of a GGUF file, which pairs neighbours (2i, 2i + 1).
"""

from __future__ import annotations

import torch

from .validate import require_positive_int, require_positive_number


def rope_frequencies(head_dim: int, base: float = 10_000.0) -> torch.Tensor:
    """theta_i = base ** (-2i / head_dim) for i = 0 .. head_dim/2 - 1: fast turns first, slow last."""
    head_dim = require_positive_int("head_dim", head_dim)
    if head_dim % 2:
        raise ValueError(f"head_dim={head_dim} is odd: RoPE turns pairs of numbers, so it must be even")
    base = require_positive_number("base", base, hint=" (Llama models use 10000 to 500000)")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim
    return 1.0 / base**exponents  # (head_dim / 2,)


def rope_angles(head_dim: int, n_positions: int, base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's angles, each (n_positions, head_dim), both halves equal."""
    n_positions = require_positive_int("n_positions", n_positions)
    positions = torch.arange(n_positions, dtype=torch.float32)
    angles = torch.outer(positions, rope_frequencies(head_dim, base))  # (T, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1)  # number i and number i + head_dim/2 share an angle
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a quarter turn of every pair."""
    half = x.size(-1) // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn each pair (x_i, x_{i+d/2}) of x (..., T, head_dim) by its position's angle.

    cos and sin are (T, head_dim): the rows for x's positions (rope_angles, sliced).
    The 2-D rotation (a, b) -> (a cos - b sin, b cos + a sin), for every pair at once.
    """
    return x * cos + rotate_half(x) * sin
