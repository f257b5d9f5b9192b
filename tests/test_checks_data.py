"""The chapter 1 checkers (and the checker framework): the reference passes, a stub fails,
and every mistake a checker claims to diagnose is planted and named."""

import pytest
import torch
from checker_results import has

from gptcourse.checks import Check, close, diagnose
from gptcourse.checks.data import (
    LENGTH_SLIPS,
    check_char_tokenizer,
    check_get_batch,
    check_sliding_window_dataset,
)
from gptcourse.data import SlidingWindowDataset, get_batch
from gptcourse.tokenizers import CharTokenizer


# --- the framework ------------------------------------------------------------------------------
def test_check_records_prints_and_stops(capsys):
    with Check("demo") as check:
        check.ok("first")
        check.expect(False, "never", "second failed")
        check.call("boom()", lambda: 1 / 0)
        check.ok("not reached")
    assert check.findings == [(True, "first"), (False, "second failed"),
                              (False, "boom() raised ZeroDivisionError: a division by zero: a count "
                                      "or a length is 0 here (an empty input, or a loop that never "
                                      "ran) (division by zero)")]
    assert not check.passed
    assert repr(check) == "demo: 2 problem(s) to fix, 1 check(s) passed."
    assert capsys.readouterr().out.splitlines()[0] == "✅ first"


def test_check_with_no_findings_does_not_pass():
    assert not Check("empty", quiet=True).passed


def test_call_reports_unfinished_code():
    def stub():
        raise NotImplementedError

    with Check("stub", quiet=True) as check:
        check.call("stub()", stub)
    assert check.problems == ["stub(): not written yet. Replace `raise NotImplementedError` with your code."]


def test_call_uses_the_checks_known_errors_by_message_or_class():
    def bad():
        raise IndexError("index 9 is out of bounds")

    with Check("t", quiet=True, known={IndexError: "the window runs off the end"}) as check:
        check.call("f()", bad)
    assert check.problems == ["f() raised IndexError: the window runs off the end"]
    with Check("t", quiet=True, known={"out of bounds": "general"}) as check:
        check.call("f()", bad, known={"index 9": "more specific"})
    assert check.problems == ["f() raised IndexError: more specific"]  # the call's own table first


def test_call_explains_common_torch_errors_and_keeps_torchs_line():
    def bad_matmul():
        return torch.ones(2, 3) @ torch.ones(2, 3)

    with Check("t", quiet=True) as check:
        check.call("f()", bad_matmul)
    (problem,) = check.problems
    assert "a matrix product got shapes that do not fit" in problem
    assert "cannot be multiplied" in problem  # torch's own line is kept


def test_seeded_check_runs_on_a_fork_of_the_global_rng():
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    with Check("t", quiet=True, seed=0):
        inside = torch.rand(1)
    assert torch.equal(torch.rand(1), expected)  # the notebook's sequence is untouched
    torch.manual_seed(0)
    assert torch.equal(inside, torch.rand(1))  # and the check itself is seeded


def test_close_and_diagnose():
    assert close(torch.tensor([1.0, 2.0]), [1.0, 2.0 + 1e-7])
    assert not close(torch.ones(2), torch.ones(3))
    assert close("abc", "abc") and not close("abc", "abd")
    out = torch.tensor([2.0])
    assert diagnose(out, {"doubled": torch.tensor([2.0])}, default="?") == "doubled"
    assert diagnose(out, {"broken": lambda: 1 / 0, "tripled": [3.0]}, default="unknown") == "unknown"


# --- check_char_tokenizer -----------------------------------------------------------------------
class UnsortedVocab(CharTokenizer):
    def __init__(self, text):
        super().__init__(text)
        self._set_vocab(list(dict.fromkeys(text)))  # order of first appearance


class IdsFromOne(CharTokenizer):
    def __init__(self, text):
        super().__init__(text)
        self.stoi = {ch: i + 1 for i, ch in enumerate(self.chars)}
        self.itos = {i + 1: ch for i, ch in enumerate(self.chars)}


class ReverseSorted(CharTokenizer):
    def __init__(self, text):
        super().__init__(text)
        self._set_vocab(sorted(set(text), reverse=True))


class SortedWithRepeats(CharTokenizer):
    def __init__(self, text):
        super().__init__(text)
        chars = sorted(text)  # repeats: the dictionary keeps each character's last position
        self.stoi = {ch: i for i, ch in enumerate(chars)}
        self.itos = {i: ch for i, ch in enumerate(chars)}


class WrittenDifferently:
    """A correct tokenizer that shares no code with the reference."""

    def __init__(self, text):
        self.vocab = "".join(sorted(set(text)))
        self.vocab_size = len(self.vocab)

    def encode(self, text):
        unknown = sorted(set(text) - set(self.vocab))
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown}")
        return [self.vocab.index(ch) for ch in text]

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)


class DecodeWithSpaces(CharTokenizer):
    def decode(self, ids):
        return " ".join(self.itos[i] for i in ids)


class DecodeToList(CharTokenizer):
    def decode(self, ids):
        return [self.itos[i] for i in ids]


class UnknownRaisesKeyError(CharTokenizer):
    def encode(self, text):
        return [self.stoi[ch] for ch in text]


class UnknownSkipped(CharTokenizer):
    def encode(self, text):
        return [self.stoi[ch] for ch in text if ch in self.stoi]


class UnknownNotNamed(CharTokenizer):
    def encode(self, text):
        if set(text) - self.stoi.keys():
            raise ValueError("bad input")
        return super().encode(text)


class StubTokenizer:
    def __init__(self, text):
        raise NotImplementedError


class StubEncode(CharTokenizer):
    def encode(self, text):
        raise NotImplementedError


def test_char_tokenizer_reference_passes():
    result = check_char_tokenizer(CharTokenizer)
    assert result.passed and len(result.findings) == 4


def test_char_tokenizer_stub_fails():
    result = check_char_tokenizer(StubTokenizer)
    assert not result.passed and has(result, "StubTokenizer(text): not written yet")
    assert has(check_char_tokenizer(StubEncode), "encode('hello'): not written yet")


def test_char_tokenizer_diagnoses_unsorted_vocabulary():
    assert has(check_char_tokenizer(UnsortedVocab), "the vocabulary is not sorted")


def test_char_tokenizer_written_differently_passes():
    result = check_char_tokenizer(WrittenDifferently)
    assert result.passed, result.problems


def test_char_tokenizer_diagnoses_ids_that_are_off():
    result = check_char_tokenizer(IdsFromOne)
    assert has(result, "every id is off by +1") and not has(result, "not sorted")
    assert has(check_char_tokenizer(ReverseSorted), "sorted backwards")
    assert has(check_char_tokenizer(SortedWithRepeats), "not sorted(text)")


def test_char_tokenizer_diagnoses_decode_joined_with_spaces():
    assert has(check_char_tokenizer(DecodeWithSpaces), "join with '' (an empty string), not ' '")
    assert has(check_char_tokenizer(DecodeToList), "decode returned a list")


def test_char_tokenizer_diagnoses_unknown_character_handling():
    assert has(check_char_tokenizer(UnknownRaisesKeyError), "raises KeyError")
    assert has(check_char_tokenizer(UnknownSkipped), "raise ValueError instead of skipping")
    assert has(check_char_tokenizer(UnknownNotNamed), "should list the unknown characters")


def test_char_tokenizer_missing_method_is_one_line():
    class NoVocabSize:
        def __init__(self, text):
            pass

    result = check_char_tokenizer(NoVocabSize)
    (problem,) = result.problems
    assert problem.startswith("vocab_size raised AttributeError: an attribute is read that was never set")
    assert problem.endswith("('NoVocabSize' object has no attribute 'vocab_size')")


# --- check_get_batch ----------------------------------------------------------------------------
def batch_from(data, starts, block_size):
    x = torch.stack([data[i : i + block_size] for i in starts])
    y = torch.stack([data[i + 1 : i + block_size + 1] for i in starts])
    return x, y


def targets_not_shifted(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x, _ = batch_from(data, starts, block_size)
    return x, x.clone()


def one_start_for_the_batch(data, block_size, batch_size, generator=None):
    start = torch.randint(len(data) - block_size, (1,), generator=generator)
    return batch_from(data, start.repeat(batch_size), block_size)


def written_differently(data, block_size, batch_size, generator=None):
    """Correct: unfold every window once, then index the random rows."""
    windows = data.unfold(0, block_size + 1, 1)  # (len - block_size, block_size + 1)
    rows = windows[torch.randint(len(windows), (batch_size,), generator=generator)]
    return rows[:, :-1], rows[:, 1:]


def test_get_batch_written_differently_passes():
    result = check_get_batch(written_differently)
    assert result.passed, result.problems


def test_get_batch_diagnoses_one_start_for_the_whole_batch():
    assert has(check_get_batch(one_start_for_the_batch), "every row of the batch is the same window")


def runs_off_the_end(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size + 1, (batch_size,), generator=generator)
    return batch_from(data, starts, block_size)


def starts_anywhere(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data), (batch_size,), generator=generator)
    return batch_from(data, starts, block_size)


def last_window_never_picked(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    return batch_from(data, starts, block_size)


def ignores_generator(data, block_size, batch_size, generator=None):
    starts = torch.randint(len(data) - block_size, (batch_size,))
    return batch_from(data, starts, block_size)


def stub_get_batch(data, block_size, batch_size, generator=None):
    raise NotImplementedError


def test_get_batch_reference_passes():
    result = check_get_batch(get_batch)
    assert result.passed and len(result.findings) == 5


def test_get_batch_stub_fails():
    result = check_get_batch(stub_get_batch)
    assert not result.passed and has(result, "not written yet")


def test_get_batch_diagnoses_targets_not_shifted():
    assert has(check_get_batch(targets_not_shifted), "y equals x: the targets are not shifted")


def test_get_batch_diagnoses_windows_off_the_end():
    assert has(check_get_batch(runs_off_the_end), "some windows run off the end")
    assert has(check_get_batch(starts_anywhere), "some windows run off the end")


def test_get_batch_diagnoses_last_window_never_picked():
    result = check_get_batch(last_window_never_picked)
    assert has(result, "the last possible window (start 5) is never picked")


def test_get_batch_diagnoses_ignored_generator():
    before = torch.get_rng_state()
    assert has(check_get_batch(ignores_generator), "the generator is ignored")
    assert torch.equal(torch.get_rng_state(), before)  # the checker leaves the global RNG alone


def test_get_batch_wrong_return_is_one_line():
    result = check_get_batch(lambda data, block_size, batch_size, generator=None: data)
    assert result.problems == ["get_batch should return a pair (x, y), got Tensor"]


# --- check_sliding_window_dataset ---------------------------------------------------------------
class Windows:
    """A configurable sliding-window dataset for planting mistakes."""

    use_stride = True
    extra_windows = 0  # +1: one window too many, -1: one too few
    shift = 1

    def __init__(self, token_ids, context_length, stride):
        step = stride if self.use_stride else 1
        last = len(token_ids) - context_length + self.extra_windows
        self.starts = list(range(0, last, step))
        self.ids, self.context_length = token_ids, context_length

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        s = self.starts[i]
        return self.ids[s : s + self.context_length], self.ids[s + self.shift : s + self.shift + self.context_length]


class StrideIgnored(Windows):
    use_stride = False


class NotShifted(Windows):
    shift = 0


class OneTooMany(Windows):
    extra_windows = 1


class OneTooFew(Windows):
    extra_windows = -1


class ShiftedByTwo(Windows):
    shift = 2


class StrideOnlyInLen(Windows):
    """Counts the windows right, but window i starts at i."""

    def __getitem__(self, i):
        return self.ids[i : i + self.context_length], self.ids[i + 1 : i + 1 + self.context_length]


class StubDataset:
    def __init__(self, token_ids, context_length, stride):
        raise NotImplementedError


def test_sliding_window_reference_passes():
    assert check_sliding_window_dataset(SlidingWindowDataset).passed
    assert check_sliding_window_dataset(Windows).passed  # the planting helper is right by default


def test_sliding_window_stub_fails():
    result = check_sliding_window_dataset(StubDataset)
    assert not result.passed and has(result, "not written yet")


def test_sliding_window_diagnoses_ignored_stride():
    assert has(check_sliding_window_dataset(StrideIgnored), "stride seems ignored")


def test_sliding_window_diagnoses_stride_ignored_in_getitem():
    assert has(check_sliding_window_dataset(StrideOnlyInLen), "__getitem__ ignores the stride")


def test_sliding_window_diagnoses_targets_not_shifted():
    assert has(check_sliding_window_dataset(NotShifted), "targets equal inputs")
    assert has(check_sliding_window_dataset(ShiftedByTwo), "the inputs are right but the targets are not")


def test_sliding_window_diagnoses_off_by_one_length():
    # One start too many at the end of the range is the target forgotten.
    assert has(check_sliding_window_dataset(OneTooMany), "the count forgets the target")
    assert has(check_sliding_window_dataset(OneTooFew), "too few windows")


@pytest.mark.parametrize("formula", list(LENGTH_SLIPS))
def test_sliding_window_length_formulas_are_distinct_and_named(formula):
    configs, N = [(4, 4), (4, 1), (3, 2)], 12
    lengths = {hint: tuple(f(N, T, s) for T, s in configs) for hint, f in LENGTH_SLIPS.items()}
    reference = tuple(len(SlidingWindowDataset(torch.arange(N), T, s)) for T, s in configs)
    assert len(set(lengths.values()) | {reference}) == len(lengths) + 1  # every formula its own

    class ByFormula(SlidingWindowDataset):
        def __len__(self):
            T, s = self.context_length, self.starts.step
            return LENGTH_SLIPS[formula](len(self.ids), T, s)

    assert has(check_sliding_window_dataset(ByFormula), formula)


def test_dropout_applied_twice_is_not_read_as_a_fixed_rate():
    from gptcourse.attention import Head, causal_attention_weights
    from gptcourse.checks.head import check_head

    class TwiceDropped(Head):
        def forward(self, x):
            weights = causal_attention_weights(self.query(x), self.key(x), self.mask)
            return self.dropout(self.dropout(weights)) @ self.value(x)

    assert has(check_head(TwiceDropped), "dropout is applied 2 times")


def test_sliding_window_bad_item_is_one_line():
    class ReturnsOne(Windows):
        def __getitem__(self, i):
            return super().__getitem__(i)[0]

    result = check_sliding_window_dataset(ReturnsOne)
    assert result.problems == [
        "ReturnsOne(ids, context_length=4, stride=4)[i] should return a pair (input_ids, target_ids)"
    ]
