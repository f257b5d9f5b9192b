"""Checkers for chapter 1: the character tokenizer, get_batch and the sliding-window dataset."""

from __future__ import annotations

import torch

from ..data import SlidingWindowDataset
from ..tokenizers import CharTokenizer
from . import Check, shape_of

SAMPLE_TEXT = "hello world! 안녕하세요"


def check_char_tokenizer(tokenizer_class) -> Check:
    """Check a learner's CharTokenizer class: sorted vocabulary, round trip, unknown characters."""
    with Check("CharTokenizer") as check:
        reference = CharTokenizer(SAMPLE_TEXT)
        tok = check.call(f"{tokenizer_class.__name__}(text)", tokenizer_class, SAMPLE_TEXT)
        size = check.call("vocab_size", lambda: tok.vocab_size)
        check.expect(size == reference.vocab_size,
                     f"vocab_size is {size}: one id per distinct character",
                     f"vocab_size is {size}, expected {reference.vocab_size}: count each distinct "
                     f"character once (use set(text))")
        ids = check.call("encode('hello')", tok.encode, "hello")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            check.stop(f"encode should return a list of ints, got {type(ids).__name__}")
        expected = reference.encode("hello")
        if ids == expected:
            check.ok(f"encode('hello') == {ids}: ids follow the sorted vocabulary")
        elif len(ids) == 5 and len(set(ids)) == 4:
            check.fail(f"encode('hello') gave {ids}, expected {expected}: the ids look consistent but "
                       f"the vocabulary is not sorted. Use sorted(set(text)) so ids never change between runs")
        else:
            check.fail(f"encode('hello') gave {ids}, expected {expected}")
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


def _check_unknown_character(check: Check, tok) -> None:
    try:
        result = tok.encode("hello?")
    except NotImplementedError:
        check.stop("encode: not written yet. Replace `raise NotImplementedError` with your code.")
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


def check_get_batch(get_batch_fn) -> Check:
    """Check get_batch(data, block_size, batch_size, generator=...) on data = 0, 1, 2, ..."""
    with Check("get_batch") as check:
        data = torch.arange(20)
        block_size, batch_size = 4, 3
        gen = torch.Generator().manual_seed(0)
        x, y = check.call("get_batch(data, 4, 3)", get_batch_fn, data, block_size, batch_size, generator=gen)
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            check.stop(f"get_batch should return two tensors (x, y), got {type(x).__name__}, {type(y).__name__}")
        want = (batch_size, block_size)
        if tuple(x.shape) != want or tuple(y.shape) != want:
            check.stop(f"x and y should both have shape (batch_size, block_size) = {want}; "
                       f"got {shape_of(x)} and {shape_of(y)}")
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
        _check_window_range(check, get_batch_fn)
    return check


def _check_window_range(check: Check, get_batch_fn) -> None:
    """Draw many batches from short data: every window must fit, and the last one must be reachable."""
    data = torch.arange(10)
    block_size = 4
    gen = torch.Generator().manual_seed(1)
    starts = set()
    for _ in range(40):
        try:
            x, y = get_batch_fn(data, block_size, 8, generator=gen)
        except (RuntimeError, IndexError):
            check.stop("with short data, stacking the windows fails: some windows run off the end. "
                       "Random starts must stay below len(data) - block_size")
        if tuple(x.shape) != (8, block_size) or tuple(y.shape) != (8, block_size) or y.max() > 9:
            check.stop("some windows run off the end of the data (short or out-of-range rows). "
                       "Random starts must stay below len(data) - block_size")
        starts.update(x[:, 0].tolist())
    last_start = len(data) - block_size - 1
    check.expect(last_start in starts, "windows stay inside the data, and the last window can be picked",
                 f"the last possible window (start {last_start}) is never picked: draw starts with "
                 f"torch.randint(len(data) - block_size, ...)")


def check_sliding_window_dataset(dataset_class) -> Check:
    """Check a learner's sliding-window Dataset(token_ids, context_length, stride)."""
    with Check("SlidingWindowDataset") as check:
        ids = torch.arange(12)
        for context_length, stride in [(4, 4), (4, 1), (3, 2)]:
            reference = SlidingWindowDataset(ids, context_length, stride)
            what = f"{dataset_class.__name__}(ids, context_length={context_length}, stride={stride})"
            ds = check.call(what, dataset_class, ids, context_length, stride)
            n = check.call(f"len({what})", len, ds)
            if n != len(reference):
                hint = ("stride seems ignored: step the start by `stride`"
                        if n == len(SlidingWindowDataset(ids, context_length, 1)) and stride != 1
                        else "the last window must leave one token for its target: "
                             "starts go up to len(ids) - context_length - 1")
                check.stop(f"len({what}) is {n}, expected {len(reference)}: {hint}")
            items = [check.call(f"{what}[{i}]", ds.__getitem__, i) for i in range(n)]
            xs = [torch.as_tensor(x) for x, _ in items]
            ys = [torch.as_tensor(y) for _, y in items]
            ref_x = [x for x, _ in (reference[i] for i in range(n))]
            ref_y = [y for _, y in (reference[i] for i in range(n))]
            if all(torch.equal(a, b) for a, b in zip(xs, ref_x)) and all(torch.equal(a, b) for a, b in zip(ys, ref_y)):
                check.ok(f"context_length={context_length}, stride={stride}: {n} windows, "
                         f"inputs and targets correct")
                continue
            if all(torch.equal(a, b) for a, b in zip(xs, ys)):
                check.stop("targets equal inputs: the target window must be shifted by one token")
            if any(a.shape != b.shape for a, b in zip(xs, ref_x)) or any(a.shape != b.shape for a, b in zip(ys, ref_y)):
                check.stop(f"with stride={stride}, some windows have the wrong length: each input and "
                           f"target holds exactly context_length={context_length} ids")
            check.stop(f"with context_length={context_length}, stride={stride}, the windows differ from "
                       f"the expected ones: window i starts at i * stride")
    return check
