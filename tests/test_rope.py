"""RoPE against transformers' Llama implementation, and the property it exists for."""

from __future__ import annotations

import pytest
import torch

from gptcourse.rope import apply_rope, rope_angles, rope_frequencies, rotate_half

modeling_llama = pytest.importorskip("transformers.models.llama.modeling_llama")
from transformers import LlamaConfig as HFLlamaConfig  # noqa: E402


def test_angles_and_rotation_equal_transformers():
    head_dim, n_pos, base = 16, 40, 100_000.0
    cfg = HFLlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, rope_theta=base,
                        max_position_embeddings=n_pos)
    rotary = modeling_llama.LlamaRotaryEmbedding(config=cfg)
    x = torch.randn(2, 4, n_pos, head_dim, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(n_pos).unsqueeze(0)
    hf_cos, hf_sin = rotary(x, positions)
    cos, sin = rope_angles(head_dim, n_pos, base)
    torch.testing.assert_close(cos, hf_cos[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(sin, hf_sin[0], rtol=0, atol=1e-5)
    k = torch.randn_like(x)
    hf_q, hf_k = modeling_llama.apply_rotary_pos_emb(x, k, hf_cos, hf_sin)
    torch.testing.assert_close(apply_rope(x, cos, sin), hf_q, rtol=0, atol=1e-4)
    torch.testing.assert_close(apply_rope(k, cos, sin), hf_k, rtol=0, atol=1e-4)


def test_scores_depend_only_on_the_distance():
    head_dim = 8
    cos, sin = rope_angles(head_dim, 64)
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(head_dim, generator=gen), torch.randn(head_dim, generator=gen)

    def score(m: int, n: int) -> float:
        qm = apply_rope(q, cos[m], sin[m])
        kn = apply_rope(k, cos[n], sin[n])
        return float(qm @ kn)

    for distance in (0, 1, 5, 17):
        scores = [score(n + distance, n) for n in (0, 3, 20, 40)]
        assert max(scores) - min(scores) < 1e-4, (distance, scores)
    assert abs(score(5, 0) - score(0, 5)) > 1e-3  # before and after are told apart


def test_rotation_keeps_lengths_and_position_zero_is_unchanged():
    cos, sin = rope_angles(16, 10)
    x = torch.randn(3, 10, 16, generator=torch.Generator().manual_seed(2))
    rotated = apply_rope(x, cos, sin)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rotated[:, 0], x[:, 0])


def test_rotate_half_is_a_quarter_turn_of_each_pair():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])  # pairs (1, 3) and (2, 4)
    assert rotate_half(x).tolist() == [-3.0, -4.0, 1.0, 2.0]
    assert rotate_half(rotate_half(x)).tolist() == (-x).tolist()


def test_frequencies_go_from_fast_to_slow():
    theta = rope_frequencies(8, base=10_000.0)
    assert theta.tolist() == pytest.approx([1.0, 0.1, 0.01, 0.001])


def test_bad_sizes():
    with pytest.raises(ValueError, match="odd"):
        rope_frequencies(7)
    with pytest.raises(ValueError, match="base"):
        rope_frequencies(8, base=0)
    with pytest.raises(ValueError, match="n_positions"):
        rope_angles(8, 0)
