"""Tests for gptcourse.bigram: the counting baseline and the neural bigram model."""

import math

import pytest
import torch
import torch.nn.functional as F

from gptcourse.bigram import (
    BigramLanguageModel,
    bigram_counts,
    bigram_nll,
    bigram_probs,
    counting_baseline,
)
from gptcourse.train import train_simple


def markov_corpus(vocab_size: int, length: int, seed: int) -> torch.Tensor:
    """Ids drawn from a random first-order Markov chain: a corpus a bigram model fits exactly."""
    gen = torch.Generator().manual_seed(seed)
    cdf = F.softmax(2.0 * torch.randn(vocab_size, vocab_size, generator=gen), dim=-1).cumsum(-1)
    uniforms = torch.rand(length, generator=gen).tolist()
    ids, current = [0], 0
    for u in uniforms[1:]:
        current = min(int(torch.searchsorted(cdf[current], u)), vocab_size - 1)
        ids.append(current)
    return torch.tensor(ids)


# --- counting ------------------------------------------------------------------------------------
def test_counts_tally_each_pair():
    counts = bigram_counts(torch.tensor([0, 1, 0, 1, 2]), vocab_size=3)
    expected = torch.tensor([[0, 2, 0], [1, 0, 1], [0, 0, 0]])
    assert torch.equal(counts, expected)
    assert counts.dtype == torch.long


def test_counts_sum_to_number_of_pairs():
    ids = torch.randint(10, (500,))
    assert bigram_counts(ids, 10).sum().item() == 499


def test_probs_rows_sum_to_one_and_empty_rows_are_uniform():
    counts = torch.tensor([[0, 2, 0], [1, 0, 1], [0, 0, 0]])
    probs = bigram_probs(counts)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    torch.testing.assert_close(probs[0], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(probs[2], torch.full((3,), 1 / 3))


def test_smoothing_adds_to_every_count():
    counts = torch.tensor([[0, 2], [1, 1]])
    probs = bigram_probs(counts, smoothing=1.0)
    torch.testing.assert_close(probs, torch.tensor([[1 / 4, 3 / 4], [1 / 2, 1 / 2]]))


def test_nll_known_value():
    probs = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    ids = torch.tensor([0, 1, 0])  # pairs (0, 1) and (1, 0)
    assert bigram_nll(probs, ids) == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 2)


def test_nll_is_infinite_for_an_unseen_pair_without_smoothing():
    train = torch.tensor([0, 1, 0, 1])
    probs = bigram_probs(bigram_counts(train, 2))
    assert math.isinf(bigram_nll(probs, torch.tensor([0, 0])))
    assert math.isfinite(bigram_nll(bigram_probs(bigram_counts(train, 2), 1.0), torch.tensor([0, 0])))


def test_counting_nll_on_train_is_the_bigram_floor():
    # The counts' own probabilities minimise the train NLL: any other table does worse.
    ids = markov_corpus(6, 2000, seed=1)
    floor = bigram_nll(bigram_probs(bigram_counts(ids, 6)), ids)
    other = F.softmax(torch.randn(6, 6), dim=-1)
    assert floor < bigram_nll(other, ids)
    assert floor < bigram_nll(bigram_probs(bigram_counts(ids, 6), smoothing=5.0), ids)


def test_counting_baseline_reports_every_split():
    ids = markov_corpus(6, 1000, seed=2)
    result = counting_baseline(ids[:800], {"train": ids[:800], "val": ids[800:]}, 6)
    assert set(result) == {"train", "val"}
    probs = bigram_probs(bigram_counts(ids[:800], 6), 1.0)
    assert result["val"] == pytest.approx(bigram_nll(probs, ids[800:]))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: bigram_counts([0, 1, 2], 3), TypeError, "ids must be a torch.Tensor"),
        (lambda: bigram_counts(torch.tensor([0.0, 1.0]), 3), TypeError, "integer token ids"),
        (lambda: bigram_counts(torch.zeros(2, 3, dtype=torch.long), 3), ValueError, r"shape \(T,\)"),
        (lambda: bigram_counts(torch.tensor([0, 5]), 3), ValueError, "outside the vocabulary 0..2"),
        (lambda: bigram_counts(torch.tensor([-1, 0]), 3), ValueError, "outside the vocabulary"),
        (lambda: bigram_counts(torch.tensor([1]), 3), ValueError, "at least 2"),
        (lambda: bigram_counts(torch.tensor([0, 1]), 0), ValueError, "vocab_size must be a positive int, got 0"),
        (lambda: bigram_counts(torch.tensor([0, 1]), 3.0), TypeError, "vocab_size must be a positive int, got 3.0"),
        (lambda: bigram_probs(torch.zeros(3, 4)), ValueError, r"square \(V, V\)"),
        (lambda: bigram_probs(torch.zeros(3, 3), smoothing=-1), ValueError, "smoothing must be a number >= 0"),
        (lambda: bigram_probs(-torch.ones(3, 3)), ValueError, "counts must be >= 0"),
        (lambda: bigram_nll(torch.ones(3), torch.tensor([0, 1])), ValueError, "probs must be a square"),
        (lambda: bigram_nll(torch.ones(3, 3) / 3, torch.tensor([0, 3])), ValueError, "outside"),
        (lambda: bigram_nll(torch.ones(3, 3) / 3, torch.tensor([0])), ValueError, "at least 2"),
    ],
)
def test_counting_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- the neural bigram ---------------------------------------------------------------------------
def test_forward_shapes_and_loss_none_without_targets():
    model = BigramLanguageModel(11)
    idx = torch.randint(11, (4, 6))
    logits, loss = model(idx)
    assert logits.shape == (4, 6, 11)
    assert loss is None
    torch.testing.assert_close(logits, model.token_embedding_table.weight[idx])


def test_forward_loss_is_mean_cross_entropy_over_all_positions():
    model = BigramLanguageModel(11)
    idx, targets = torch.randint(11, (4, 6)), torch.randint(11, (4, 6))
    logits, loss = model(idx, targets)
    assert logits.shape == (4, 6, 11)
    assert loss.shape == ()
    manual = -F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).mean()
    torch.testing.assert_close(loss, manual)
    assert loss.requires_grad


def test_initial_loss_is_near_ln_vocab_plus_a_half():
    # Logits ~ N(0, 1): the expected loss is about ln(V) + 1/2, above a uniform guess's ln(V).
    torch.manual_seed(0)
    model = BigramLanguageModel(65)
    idx, targets = torch.randint(65, (64, 32)), torch.randint(65, (64, 32))
    _, loss = model(idx, targets)
    assert math.log(65) < loss.item() < math.log(65) + 0.9
    assert loss.item() == pytest.approx(math.log(65) + 0.5, abs=0.25)


def test_table_of_log_probs_reproduces_the_counting_nll():
    ids = markov_corpus(6, 500, seed=3)
    probs = bigram_probs(bigram_counts(ids, 6), smoothing=1.0)
    model = BigramLanguageModel(6)
    with torch.no_grad():
        model.token_embedding_table.weight.copy_(probs.log())
    _, loss = model(ids[:-1].unsqueeze(0), ids[1:].unsqueeze(0))
    assert loss.item() == pytest.approx(bigram_nll(probs, ids), abs=1e-5)


def test_generate_length_prompt_and_range():
    model = BigramLanguageModel(9)
    idx = torch.randint(9, (3, 4))
    out = model.generate(idx, 20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 24)
    assert out.dtype == torch.long
    assert torch.equal(out[:, :4], idx)
    assert 0 <= out.min() and out.max() < 9
    assert torch.equal(model.generate(idx, 0), idx)


def test_generate_is_deterministic_with_a_seeded_generator():
    model = BigramLanguageModel(9)
    idx = torch.zeros((1, 1), dtype=torch.long)
    a = model.generate(idx, 50, generator=torch.Generator().manual_seed(7))
    b = model.generate(idx, 50, generator=torch.Generator().manual_seed(7))
    c = model.generate(idx, 50, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generate_samples_from_the_table():
    # A table that puts almost all mass on "next = current + 1" must produce that sequence.
    V = 5
    model = BigramLanguageModel(V)
    with torch.no_grad():
        model.token_embedding_table.weight.fill_(-30.0)
        model.token_embedding_table.weight[torch.arange(V), (torch.arange(V) + 1) % V] = 30.0
    out = model.generate(torch.zeros((1, 1), dtype=torch.long), 7)
    assert out.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2]]


def test_trained_neural_bigram_reaches_the_counting_floor():
    V = 12
    ids = markov_corpus(V, 20000, seed=0)
    train, val = ids[:16000], ids[16000:]
    floor = counting_baseline(train, {"val": val}, V, smoothing=1.0)["val"]
    torch.manual_seed(0)
    model = BigramLanguageModel(V)
    train_simple(model, train, val, steps=300, block_size=8, batch_size=32, lr=0.1,
                 eval_interval=300, eval_iters=2, progress=False)
    # The neural table's softmax is a bigram table too: score it on the whole val split.
    neural = bigram_nll(F.softmax(model.token_embedding_table.weight.detach(), dim=-1), val)
    assert abs(neural - floor) < 0.05


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m: BigramLanguageModel(0), ValueError, "vocab_size must be a positive int, got 0"),
        (lambda m: BigramLanguageModel(65.0), TypeError, "vocab_size must be a positive int, got 65.0"),
        (lambda m: m(torch.tensor([[0, 9]])), ValueError, r"outside the vocabulary 0..8"),
        (lambda m: m(torch.tensor([[-1, 0]])), ValueError, "outside the vocabulary"),
        (lambda m: m(torch.zeros(2, 3)), TypeError, r"integer token ids \(torch.long\)"),
        (lambda m: m(torch.zeros(3, dtype=torch.long)), ValueError, r"unsqueeze\(0\)"),
        (lambda m: m(torch.zeros(1, 2, 3, dtype=torch.long)), ValueError, r"shape \(B, T\)"),
        (lambda m: m([[0, 1]]), TypeError, "idx must be a torch.Tensor"),
        (lambda m: m(torch.zeros(2, 0, dtype=torch.long)), ValueError, "at least one token"),
        (lambda m: m(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long)),
         ValueError, "same shape as idx"),
        (lambda m: m(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3)), TypeError, "targets"),
        (lambda m: m(torch.zeros(2, 3, dtype=torch.long), torch.full((2, 3), 9)), ValueError,
         "targets holds ids"),
        (lambda m: m.generate(torch.zeros(1, 1, dtype=torch.long), -1), ValueError,
         "max_new_tokens must be an int >= 0"),
        (lambda m: m.generate(torch.zeros(1, 1, dtype=torch.long), 2.5), TypeError,
         "max_new_tokens must be an int"),
        (lambda m: m.generate(torch.zeros(1, 0, dtype=torch.long), 3), ValueError,
         "start from at least one token"),
        (lambda m: m.generate(torch.tensor([[12]]), 3), ValueError, "outside the vocabulary"),
    ],
)
def test_model_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call(BigramLanguageModel(9))
