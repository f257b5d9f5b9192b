"""The sampling checker, tested three ways: the reference passes, a stub fails, each mistake is named."""

import pytest
import torch

from gptcourse.checks.sampling import check_sample_next
from gptcourse.generate import sample_next


def make_sample_next(*, divide="logits", greedy_when_hot=False, keep=0, mask=float("-inf"),
                     greedy_at_zero=True, keepdim=True, use_generator=True, top_k_on=True,
                     threshold="per row"):
    """A learner's sample_next with one planted mistake (the defaults are correct)."""

    def fn(logits, temperature=1.0, top_k=None, generator=None):
        if greedy_at_zero and temperature == 0:
            return logits.argmax(dim=-1, keepdim=keepdim)
        if greedy_when_hot:
            return logits.argmax(dim=-1, keepdim=keepdim)
        if top_k is not None and top_k_on:
            values = torch.topk(logits, top_k + keep, dim=-1).values if top_k + keep > 0 else None
            kth = {"per row": lambda: values[:, -1:], "row 0": lambda: values[0, -1],
                   "flat": lambda: values[:, -1], "sort": lambda: torch.sort(  # correct, another way
                       logits, dim=-1, descending=True).values[:, [top_k - 1]]}[threshold]()
            logits = logits.masked_fill(logits < kth, mask)
        if divide == "logits":
            probs = torch.softmax(logits / temperature, dim=-1)
        elif divide == "probs":
            probs = torch.softmax(logits, dim=-1) / temperature
        else:  # multiply
            probs = torch.softmax(logits * temperature, dim=-1)
        ids = torch.multinomial(probs, 1, generator=generator if use_generator else None)
        return ids if keepdim else ids.squeeze(-1)

    return fn


def row0_probs(logits, temperature=1.0, top_k=None, generator=None):
    """Samples every row from row 0's probabilities: identical rows hide it."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    if top_k is not None:
        logits = logits.masked_fill(logits < torch.topk(logits, top_k).values[:, -1:], float("-inf"))
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs[0], len(logits), replacement=True, generator=generator)[:, None]


def test_reference_passes():
    result = check_sample_next(sample_next)
    assert result.passed, result.problems


def test_a_correct_variant_passes():
    result = check_sample_next(make_sample_next())
    assert result.passed, result.problems


def test_a_correct_variant_with_sort_passes():
    result = check_sample_next(make_sample_next(threshold="sort"))
    assert result.passed, result.problems


def test_stub_fails():
    def stub(logits, temperature=1.0, top_k=None, generator=None):
        raise NotImplementedError

    result = check_sample_next(stub)
    assert not result.passed
    assert any("not written yet" in p for p in result.problems)


@pytest.mark.parametrize(
    "mistake, fragment",
    [
        (make_sample_next(divide="probs"), "not the probabilities after it"),
        (make_sample_next(divide="multiply"), "don't multiply"),
        (make_sample_next(greedy_when_hot=True), "that is greedy decoding"),
        (make_sample_next(keep=1), "it keeps k+1"),
        (make_sample_next(keep=-1), "it keeps k-1"),
        (make_sample_next(mask=0.0), "masked with 0 instead of -inf"),
        (make_sample_next(top_k_on=False), "top_k=3 changed nothing"),
        (make_sample_next(greedy_at_zero=False), "temperature 0 means greedy"),
        (make_sample_next(keepdim=False), "shape (B, 1)"),
        (make_sample_next(use_generator=False), "pass generator=generator"),
        (make_sample_next(threshold="row 0"), "every row used row 0's k-th largest value"),
        (make_sample_next(threshold="flat"), "the k-th largest value has the wrong shape"),
        (row0_probs, "sampled from row 0's distribution"),
    ],
)
def test_mistakes_are_diagnosed(mistake, fragment):
    result = check_sample_next(mistake)
    assert not result.passed
    assert any(fragment in p for p in result.problems), result.problems


def test_checker_leaves_the_global_rng_alone():
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    check_sample_next(sample_next)
    assert torch.equal(torch.rand(1), expected)
