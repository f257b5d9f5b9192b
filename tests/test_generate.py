"""Tests for sampling text from a model: greedy, temperature, top-k, eos, seeds and argument errors."""

import pytest
import torch
import torch.nn as nn

from gptcourse.config import GPTConfig
from gptcourse.generate import (
    generate,
    generate_text,
    generate_text_simple,
    sample_next,
    top_k_filter,
)
from gptcourse.model import GPTModel
from gptcourse.tokenizers import CharTokenizer

CFG = GPTConfig(vocab_size=11, context_length=6, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


class FixedLogits(nn.Module):
    """Returns the same next-token scores at every position (a model we can reason about)."""

    def __init__(self, scores):
        super().__init__()
        self.scores = torch.as_tensor(scores, dtype=torch.float)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, idx):
        return self.scores.expand(*idx.shape, -1).clone()


def prompt(batch=2, length=3):
    return torch.randint(CFG.vocab_size, (batch, length), generator=torch.Generator().manual_seed(1))


def test_greedy_equals_argmax_decoding(model):
    out = generate(model, prompt(), 8, temperature=0.0)
    torch.testing.assert_close(out, generate_text_simple(model, prompt(), 8))
    # Step by step: each new id is the argmax of the model's last-position logits.
    for t in range(3, out.size(1)):
        logits = model(out[:, max(0, t - CFG.context_length):t])[:, -1, :]
        assert torch.equal(out[:, t], logits.argmax(-1))


def test_prompt_is_kept_and_crop_to_context(model):
    start = prompt(length=CFG.context_length)  # already full: the model must crop as it goes
    out = generate(model, start, 5, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, CFG.context_length + 5)
    assert torch.equal(out[:, : CFG.context_length], start)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 5.0])
def test_top_k_1_is_greedy_at_any_temperature(model, temperature):
    greedy = generate(model, prompt(), 8)
    out = generate(model, prompt(), 8, temperature=temperature, top_k=1,
                   generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, greedy)


def test_same_seed_same_sample_and_different_seed_different_sample(model):
    def sample(seed):
        return generate(model, prompt(), 20, temperature=1.5, top_k=5,
                        generator=torch.Generator().manual_seed(seed))

    assert torch.equal(sample(3), sample(3))
    assert not torch.equal(sample(3), sample(4))


def test_generator_leaves_the_global_rng_alone(model):
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    generate(model, prompt(), 5, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(1), expected)


def test_top_k_only_ever_picks_the_k_most_likely():
    scores = torch.tensor([0.0, 3.0, 1.0, 2.9, -1.0, 2.8])
    m = FixedLogits(scores)
    out = generate(m, torch.zeros(1, 1, dtype=torch.long), 300, context_size=4, temperature=5.0,
                   top_k=3, generator=torch.Generator().manual_seed(0))
    assert set(out[0, 1:].tolist()) == {1, 3, 5}


def test_top_k_filter_keeps_exactly_k_with_ties():
    logits = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.5]])
    filtered = top_k_filter(logits, 2)
    assert torch.isfinite(filtered).sum() == 2
    assert torch.isneginf(filtered).sum() == 3  # -inf, not 0: softmax gives them exactly 0
    assert torch.softmax(filtered, -1)[0, [0, 4]].sum() == 0


def test_temperature_reshapes_the_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0]]).expand(4000, 3)
    gen = torch.Generator().manual_seed(0)
    cold = sample_next(logits, 0.5, generator=gen).flatten().bincount(minlength=3) / 4000
    hot = sample_next(logits, 2.0, generator=gen).flatten().bincount(minlength=3) / 4000
    torch.testing.assert_close(cold, torch.softmax(logits[0] / 0.5, -1), atol=0.03, rtol=0)
    torch.testing.assert_close(hot, torch.softmax(logits[0] / 2.0, -1), atol=0.03, rtol=0)


def test_eos_stops_generation():
    m = FixedLogits([0.0, 0.0, 5.0, 0.0])  # greedy always picks 2
    out = generate(m, torch.zeros(2, 1, dtype=torch.long), 10, context_size=4, eos_id=2)
    assert out.tolist() == [[0, 2], [0, 2]]


def test_eos_pads_sequences_that_ended_first():
    scores = torch.tensor([0.0, 0.0, 0.0])
    m = FixedLogits(scores)
    gen = torch.Generator().manual_seed(0)
    out = generate(m, torch.zeros(6, 1, dtype=torch.long), 40, context_size=4, temperature=1.0,
                   eos_id=2, generator=gen)
    for row in out.tolist():
        first = row.index(2, 1)  # every row met eos (40 tries at 1/3 each)
        assert all(t == 2 for t in row[first:])
    assert out.size(1) < 41


def test_generate_restores_training_mode(model):
    model.train()
    generate(model, prompt(), 2)
    assert model.training


def test_generate_text_round_trip(model):
    tok = CharTokenizer("abcdefghijk")
    text = generate_text(model, tok, "abc", 5, temperature=1.0, top_k=3, seed=1)
    assert text.startswith("abc") and len(text) == 8
    assert text == generate_text(model, tok, "abc", 5, temperature=1.0, top_k=3, seed=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": -0.1}, "temperature must be a number >= 0"),
        ({"temperature": float("nan")}, "temperature must be a number >= 0"),
        ({"temperature": "hot"}, "temperature must be a number >= 0"),
        ({"top_k": 0}, "top_k must be None or an int from 1 to vocab_size=11"),
        ({"top_k": 12}, "top_k must be None or an int from 1 to vocab_size=11"),
        ({"top_k": 2.5}, "top_k must be None"),
        ({"eos_id": 11}, "eos_id must be None or an int from 0 to 10"),
        ({"max_new_tokens": -1}, "max_new_tokens must be an int >= 0"),
        ({"context_size": 0}, "context_size must be an int from 1 to context_length=6"),
    ],
)
def test_bad_arguments_raise_clear_errors(model, kwargs, match):
    args = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate(model, prompt(), **args)


@pytest.mark.parametrize(
    "idx, match",
    [
        (torch.zeros(1, 0, dtype=torch.long), "the prompt is empty"),
        (torch.zeros(3, dtype=torch.long), "add a batch dimension"),
        (torch.zeros(1, 3), "integer token ids"),
    ],
)
def test_bad_prompts_raise_clear_errors(model, idx, match):
    with pytest.raises(ValueError, match=match):
        generate(model, idx, 3)


def test_sample_next_validates_too():
    with pytest.raises(ValueError, match="temperature"):
        sample_next(torch.zeros(1, 4), temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(torch.zeros(1, 4), 5)
