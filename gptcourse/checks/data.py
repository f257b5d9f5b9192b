"""Checkers for chapter 1: the character tokenizer, get_batch and the sliding-window dataset."""

from __future__ import annotations

import torch

from ..data import SlidingWindowDataset
from ..tokenizers import CharTokenizer
from . import NOT_WRITTEN, Check, all_equal, wrong_shape

SAMPLE_TEXT = "hello world! 안녕하세요"


def check_char_tokenizer(tokenizer_class) -> Check:
    """Check a learner's CharTokenizer class: sorted vocabulary, round trip, unknown characters."""
    with Check("CharTokenizer") as check:
        reference = CharTokenizer(SAMPLE_TEXT)
        name = getattr(tokenizer_class, "__name__", "tokenizer_class")
        tok = check.call(f"{name}(text)", tokenizer_class, SAMPLE_TEXT)
        size = check.call("vocab_size", lambda: tok.vocab_size)
        check.expect(size == reference.vocab_size,
                     f"vocab_size is {size}: one id per distinct character",
                     f"vocab_size is {size}, expected {reference.vocab_size}: count each distinct "
                     f"character once (use set(text))")
        ids = check.call("encode('hello')", lambda: tok.encode("hello"))
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            check.stop(f"encode should return a list of ints, got {type(ids).__name__}")
        expected = reference.encode("hello")
        if ids == expected:
            check.ok(f"encode('hello') == {ids}: ids follow the sorted vocabulary")
        else:
            check.fail(f"encode('hello') gave {ids}, expected {expected}: "
                       + _encode_mistake(ids, expected, reference))
        text = check.call("decode(encode(text))", lambda: tok.decode(tok.encode(SAMPLE_TEXT)))
        if text == SAMPLE_TEXT:
            check.ok("decode(encode(text)) gives the text back, Korean included")
        elif isinstance(text, list):
            check.fail("decode returned a list: join the characters into one string with ''.join(...)")
        elif isinstance(text, str) and text.replace(" ", "") == SAMPLE_TEXT.replace(" ", ""):
            check.fail("decode puts spaces between characters: join with '' (an empty string), not ' '")
        else:
            check.fail(f"decode(encode(text)) gave {text!r}, expected {SAMPLE_TEXT!r}")
        _check_unknown_character(check, tok)
    return check


def _encode_mistake(ids: list[int], expected: list[int], reference: CharTokenizer) -> str:
    """Name the likely mistake behind ids that differ from the sorted vocabulary's."""
    shift = ids[0] - expected[0]
    if len(ids) == len(expected) and all(i - e == shift for i, e in zip(ids, expected)):
        return (f"every id is off by {shift:+d}: number the characters from 0, "
                f"{{ch: i for i, ch in enumerate(chars)}}")
    reverse = [reference.vocab_size - 1 - e for e in expected]
    if ids == reverse:
        return "the vocabulary is sorted backwards: use sorted(set(text)), smallest character first"
    with_repeats = {ch: i for i, ch in enumerate(sorted(SAMPLE_TEXT))}
    if ids == [with_repeats[ch] for ch in "hello"] or max(ids, default=0) >= reference.vocab_size:
        return (f"id {max(ids)} is beyond the {reference.vocab_size} distinct characters: build the "
                f"vocabulary from the distinct characters, sorted(set(text)), not sorted(text)")
    if len(ids) == 5 and len(set(ids)) == 4 and ids[2] == ids[3]:
        return ("the ids look consistent but the vocabulary is not sorted. "
                "Use sorted(set(text)) so ids never change between runs")
    return "one id per character, its position in sorted(set(text))"


def _check_unknown_character(check: Check, tok) -> None:
    try:
        result = tok.encode("hello?")
    except NotImplementedError:
        check.stop(f"encode: {NOT_WRITTEN}")
    except ValueError as exc:
        check.expect("?" in str(exc), "an unknown character raises ValueError that names it",
                     "an unknown character raises ValueError, but the message should list the "
                     "unknown characters (here '?') so the user knows what to fix")
        return
    except KeyError:
        check.fail("an unknown character raises KeyError from the dictionary lookup: check for "
                   "unknown characters first and raise ValueError listing them")
        return
    except Exception as exc:
        check.fail(f"an unknown character raised {type(exc).__name__}: raise ValueError listing them")
        return
    check.fail(f"encode('hello?') returned {result} although '?' is not in the vocabulary: "
               f"raise ValueError instead of skipping or guessing")


OFF_THE_END = ("some windows run off the end of the data. "
               "Random starts must stay below len(data) - block_size, and every window must be "
               "cut from the `data` argument, not from a tensor defined elsewhere in the notebook")
# A window cut short makes torch.stack fail; indexing past the end raises IndexError.
BATCH_ERRORS = {IndexError: f"could not build the batch: {OFF_THE_END}",
                "stack expects each tensor to be equal size": f"could not build the batch: {OFF_THE_END}"}


def check_get_batch(get_batch_fn) -> Check:
    """Check get_batch(data, block_size, batch_size, generator=...) on data = 0, 1, 2, ..."""
    # seed: the check runs on a fork of the global RNG, which a learner's get_batch may draw
    # from, so the notebook's seed does not depend on whether the check cell was run.
    with Check("get_batch", seed=0, known=BATCH_ERRORS) as check:
        data = torch.arange(20)
        block_size, batch_size = 4, 3
        gen = torch.Generator().manual_seed(0)
        out = check.call("get_batch(data, 4, 3)", get_batch_fn, data, block_size, batch_size, generator=gen)
        if not (isinstance(out, tuple) and len(out) == 2):
            check.stop(f"get_batch should return a pair (x, y), got {type(out).__name__}")
        x, y = out
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            check.stop(f"get_batch should return two tensors (x, y), got {type(x).__name__}, {type(y).__name__}")
        want = (batch_size, block_size)
        if tuple(x.shape) != want or tuple(y.shape) != want:
            bad = x if tuple(x.shape) != want else y
            check.stop(wrong_shape("x" if bad is x else "y", bad, want,
                                   {"batch_size": batch_size, "block_size": block_size},
                                   f" (both should be (batch_size, block_size) = {want})"))
        check.ok(f"x and y have shape {want}")
        # With data = arange, every row of x must count up by one from its start.
        contiguous = torch.equal(x - x[:, :1], torch.arange(block_size).expand_as(x))
        check.expect(contiguous, "each row of x is a contiguous window of the data",
                     "rows of x are not contiguous windows: take data[i : i + block_size] for a random start i")
        if torch.equal(y, x + 1):
            check.ok("y is x shifted by one: each target is the next token")
        elif torch.equal(y, x):
            check.fail("y equals x: the targets are not shifted. Take y from data[i + 1 : i + block_size + 1]")
        elif torch.equal(y, x - 1):
            check.fail("y is shifted the wrong way: the target is the token *after* x, data[i + 1 : i + block_size + 1]")
        else:
            check.fail("y is not x shifted by one: take y from data[i + 1 : i + block_size + 1]")
        _check_generator_used(check, get_batch_fn)
        _check_window_range(check, get_batch_fn)
    return check


def _check_generator_used(check: Check, get_batch_fn) -> None:
    """Two generators seeded alike must give the same batch."""
    data = torch.arange(1000)
    torch.manual_seed(12345)  # the global RNG moves on between the calls if it is used
    first = check.call("get_batch(..., generator=g)", get_batch_fn, data, 8, 4,
                  generator=torch.Generator().manual_seed(7))
    second = check.call("get_batch(..., generator=g)", get_batch_fn, data, 8, 4,
                   generator=torch.Generator().manual_seed(7))
    rows = first[0] if isinstance(first, tuple) and isinstance(first[0], torch.Tensor) else None
    if rows is not None and rows.dim() == 2 and bool((rows == rows[:1]).all()):
        check.stop("every row of the batch is the same window: draw batch_size random starts, "
                   "one per row (torch.randint(..., (batch_size,)))")
    check.expect(torch.equal(first[0], second[0]),
                 "the same seeded generator gives the same batch",
                 "two generators with the same seed gave different batches: the generator is "
                 "ignored. Pass generator=generator to torch.randint")


def _check_window_range(check: Check, get_batch_fn) -> None:
    """Draw many batches from short data: every window must fit, and the last one must be reachable."""
    data = torch.arange(10)
    block_size = 4
    gen = torch.Generator().manual_seed(1)
    starts = set()
    for _ in range(40):
        x, y = check.call("get_batch on short data", get_batch_fn, data, block_size, 8, generator=gen)
        if tuple(x.shape) != (8, block_size) or tuple(y.shape) != (8, block_size) or y.max() > 9:
            check.stop(f"with short data, the batch has the wrong shape or values: {OFF_THE_END}")
        starts.update(x[:, 0].tolist())
    last_start = len(data) - block_size - 1
    check.expect(last_start in starts, "windows stay inside the data, and the last window can be picked",
                 f"the last possible window (start {last_start}) is never picked: draw starts with "
                 f"torch.randint(len(data) - block_size, ...)")


# How many windows a learner's __len__ counts, by the formula behind it: N ids, context T, stride s.
# The checker's three datasets give each formula its own three lengths.
LENGTH_SLIPS = {
    "stride seems ignored: step the start by `stride`": lambda N, T, s: N - T,
    "the count forgets the target: a window needs context_length + 1 ids, so the last start is "
    "len(ids) - context_length - 1, and the count is (N - T - 1) // stride + 1":
        lambda N, T, s: (N - T) // s + 1,
    "the count is one short: the window at start 0 counts too, (N - T - 1) // stride + 1":
        lambda N, T, s: (N - T - 1) // s,
    "(N - T) // stride counts the steps between starts, not the starts: the count is "
    "(N - T - 1) // stride + 1": lambda N, T, s: (N - T) // s,
    "N // stride counts as if every start had a full window after it: the last start is "
    "N - T - 1, so the count is (N - T - 1) // stride + 1": lambda N, T, s: N // s,
}


def check_sliding_window_dataset(dataset_class) -> Check:
    """Check a learner's sliding-window Dataset(token_ids, context_length, stride)."""
    with Check("SlidingWindowDataset") as check:
        ids = torch.arange(12)
        name = getattr(dataset_class, "__name__", "dataset_class")
        configs = [(4, 4), (4, 1), (3, 2)]
        made = []
        for context_length, stride in configs:
            what = f"{name}(ids, context_length={context_length}, stride={stride})"
            ds = check.call(what, dataset_class, ids, context_length, stride)
            made.append((what, ds, check.call(f"len({what})", len, ds)))
        lengths = tuple(n for _, _, n in made)
        wanted = tuple(len(SlidingWindowDataset(ids, T, s)) for T, s in configs)
        if lengths != wanted:
            # The lengths of all three datasets together tell which formula the count follows.
            N = len(ids)
            formula = next((hint for hint, f in LENGTH_SLIPS.items()
                            if lengths == tuple(f(N, T, s) for T, s in configs)), None)
            i = next(i for i in range(len(configs)) if lengths[i] != wanted[i])
            (context_length, stride), (what, _, n) = configs[i], made[i]
            if formula is None:
                formula = ("too many windows: the last window must leave one token for its "
                           "target, so starts stay below len(ids) - context_length") if n > wanted[i] else (
                           "too few windows: the last start, len(ids) - context_length - 1, "
                           "is missing (range stops before its end value)")
            check.stop(f"len({what}) is {n}, expected {wanted[i]}: {formula}")
        for (context_length, stride), (what, ds, n) in zip(configs, made):
            reference = SlidingWindowDataset(ids, context_length, stride)
            items = [check.call(f"{what}[{i}]", lambda i=i, ds=ds: ds[i]) for i in range(n)]
            if not all(isinstance(item, (tuple, list)) and len(item) == 2 for item in items):
                check.stop(f"{what}[i] should return a pair (input_ids, target_ids)")
            xs = [torch.as_tensor(x) for x, _ in items]
            ys = [torch.as_tensor(y) for _, y in items]
            ref_x = [reference[i][0] for i in range(n)]
            ref_y = [reference[i][1] for i in range(n)]
            if all_equal(xs, ref_x) and all_equal(ys, ref_y):
                check.ok(f"context_length={context_length}, stride={stride}: {n} windows, "
                         f"inputs and targets correct")
                continue
            if any(a.shape != b.shape for a, b in zip(xs + ys, ref_x + ref_y)):
                check.stop(f"with stride={stride}, some windows have the wrong length: each input and "
                           f"target holds exactly context_length={context_length} ids")
            if all_equal(xs, ys):
                check.stop("targets equal inputs: the target window must be shifted by one token")
            if stride != 1 and all_equal(xs, [ids[i:i + context_length] for i in range(n)]):
                check.stop(f"__getitem__ ignores the stride: window i starts at i * stride "
                           f"(here {stride}), not at i")
            if all_equal(xs, ref_x):
                check.stop("the inputs are right but the targets are not: target i is the input "
                           "shifted by one, ids[start + 1 : start + context_length + 1]")
            check.stop(f"with context_length={context_length}, stride={stride}, the windows differ from "
                       f"the expected ones: window i starts at i * stride")
    return check
