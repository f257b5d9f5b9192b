"""Chapter 8's BPE training exercise: the reference passes, a stub fails, and each mistake the
checker names is planted and named."""

import pytest
import regex

from gptcourse.bpe import GPT2_SPLIT_PATTERN, merge, pair_counts, train_bpe
from gptcourse.checks.bpe_train import TRAIN_CASES, TRAIN_MISTAKES, _train_variant, check_train_bpe


def reference(text, vocab_size):
    return train_bpe(text, vocab_size, progress=False).merges


def learner(text, vocab_size):
    """A learner's loop, written as the exercise asks."""
    pieces = [list(p.encode("utf-8")) for p in regex.findall(GPT2_SPLIT_PATTERN, text)]
    merges = {}
    for new_id in range(256, vocab_size):
        counts = {}
        for piece in pieces:
            for pair, n in pair_counts(piece).items():
                counts[pair] = counts.get(pair, 0) + n
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges[pair] = new_id
        pieces = [merge(piece, pair, new_id) for piece in pieces]
    return merges


def has(result, words):
    return not result.passed and any(words in p for p in result.problems)


def test_reference_and_a_written_loop_pass():
    assert check_train_bpe(reference).passed
    result = check_train_bpe(learner)
    assert result.passed, result.problems


def test_stub_fails():
    def stub(text, vocab_size):
        raise NotImplementedError

    assert has(check_train_bpe(stub), "not written yet")


@pytest.mark.parametrize("message", list(TRAIN_MISTAKES))
def test_every_planted_mistake_is_named(message):
    result = check_train_bpe(TRAIN_MISTAKES[message])
    assert has(result, message), result.problems


def test_every_mistake_gives_its_own_merges_on_the_cases():
    outputs = {m: tuple(str(f(t, v)) for _, t, v in TRAIN_CASES) for m, f in TRAIN_MISTAKES.items()}
    reference_out = tuple(str(dict(reference(t, v))) for _, t, v in TRAIN_CASES)
    assert len(set(outputs.values()) | {reference_out}) == len(outputs) + 1


def test_not_stopping_early_is_named():
    def never_stops(text, vocab_size):
        pieces, merges = [list(p.encode("utf-8")) for p in regex.findall(GPT2_SPLIT_PATTERN, text)], {}
        for new_id in range(256, vocab_size):
            counts = {}
            for piece in pieces:
                for pair, n in pair_counts(piece).items():
                    counts[pair] = counts.get(pair, 0) + n
            pair = min(counts, key=lambda p: (-counts[p], p))  # fails once nothing is left
            merges[pair] = new_id
            pieces = [merge(piece, pair, new_id) for piece in pieces]
        return merges

    assert has(check_train_bpe(never_stops), "stop early when pair_counts gives nothing")


def test_inverted_mapping_and_wrong_type_are_named():
    assert has(check_train_bpe(lambda t, v: {i: p for p, i in reference(t, v).items()}),
               "maps new ids to pairs")
    assert has(check_train_bpe(lambda t, v: list(reference(t, v))), "return a dict")


def test_the_variant_helper_is_the_reference_without_changes():
    for _, text, vocab_size in TRAIN_CASES:
        assert _train_variant(text, vocab_size) == reference(text, vocab_size)
