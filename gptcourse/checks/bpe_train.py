"""Checker for chapter 8's BPE training exercise: train(text, vocab_size) -> {pair: new_id},
with GPT-2's pre-tokenizer, as the package's train_bpe does it."""

from __future__ import annotations

from collections.abc import Mapping

from ..bpe import merge, pair_counts, split_text, train_bpe
from . import Check
from .bpe import likely_mistake, plain

TIE_RULE = "min(counts, key=lambda p: (-counts[p], p))"


def _train_variant(text: str, vocab_size: int, *, first_id: int = 256, n_merges: int | None = None,
                   tie: str = "smallest", pick: str = "most", update: bool = True,
                   units: str = "bytes", split: bool = True) -> dict:
    """BPE training with GPT-2's pre-tokenizer and one deliberate change, to recognise a
    learner's mistake: pairs are counted inside each piece, never across two."""
    texts = split_text(text) if split else [text]
    pieces = [list(t.encode("utf-8")) if units == "bytes" else [ord(ch) for ch in t] for t in texts]
    original = pieces
    merges: dict = {}
    n = vocab_size - 256 if n_merges is None else n_merges
    for new_id in range(first_id, first_id + n):
        counts: dict = {}
        for piece in (pieces if update else original):
            for pair, k in pair_counts(piece).items():
                counts[pair] = counts.get(pair, 0) + k
        if not update:
            counts = {p: k for p, k in counts.items() if p not in merges}
        if not counts:
            break
        if pick == "least":
            pair = min(counts, key=lambda p: (counts[p], p))
        elif tie == "smallest":
            pair = min(counts, key=lambda p: (-counts[p], p))
        elif tie == "first seen":
            pair = max(counts, key=counts.get)  # max keeps the first of equals: dict order
        else:  # "largest"
            pair = max(counts, key=lambda p: (counts[p], p))
        merges[pair] = new_id
        pieces = [merge(piece, pair, new_id) for piece in pieces]
    return merges


def _reference(text: str, vocab_size: int) -> dict:
    return dict(train_bpe(text, vocab_size, progress=False).merges)


TRAIN_MISTAKES = {
    "the new ids start at 257: the first new id is 256, right after the 256 byte values 0..255":
        lambda t, v: _train_variant(t, v, first_id=257),
    "the new ids start at 255: ids 0..255 are the byte values, so the first new id is 256":
        lambda t, v: _train_variant(t, v, first_id=255),
    "one merge too few: a vocabulary of vocab_size ids holds the 256 bytes and vocab_size - 256 "
    "merges, range(256, vocab_size)": lambda t, v: _train_variant(t, v, n_merges=v - 257),
    "one merge too many: the last new id is vocab_size - 1, so the merges are "
    "range(256, vocab_size)": lambda t, v: _train_variant(t, v, n_merges=v - 255),
    f"on a tie the pair seen first wins: ties go to the smallest pair, {TIE_RULE}":
        lambda t, v: _train_variant(t, v, tie="first seen"),
    f"on a tie the largest pair wins: ties go to the smallest pair, {TIE_RULE}":
        lambda t, v: _train_variant(t, v, tie="largest"),
    "the least frequent pair is merged: merge the most frequent one": lambda t, v: _train_variant(
        t, v, pick="least"),
    "every round counts the pairs of the original text: merge the chosen pair into the ids "
    "(ids = merge(ids, pair, new_id)) and count the merged ids next round":
        lambda t, v: _train_variant(t, v, update=False),
    "these are characters, not bytes: start each piece from list(piece.encode('utf-8'))":
        lambda t, v: _train_variant(t, v, units="characters"),
    "pairs are counted across pieces: cut the text with regex.findall(GPT2_SPLIT_PATTERN, text) "
    "first, count the pairs inside each piece and add the counts up, so no merge joins the end "
    "of one word to the start of the next": lambda t, v: _train_variant(t, v, split=False),
}

TRAIN_ERRORS = {
    "arg is an empty": "no pairs are left to merge (a short text is fully merged before "
                       "vocab_size is reached): stop early when pair_counts gives nothing",
}
# A tie between (b, a) and (d, c) in one text, (d, c) seen first; in the other (b, a) seen first:
# the smallest-pair rule, "first seen" and "largest" each give their own merges.
TRAIN_CASES = [
    ("the classic example", "aaabdaaabac", 259),
    ("words and spaces: no merge across a piece", "the cat sat on the mat, the end", 266),
    ("a tie, the larger pair seen first", "dcdcbaba", 258),
    ("a tie, the smaller pair seen first", "babadcdc", 258),
    ("Korean, 3 bytes per syllable", "대한민국 대한민국 민국", 264),
    ("a text fully merged before vocab_size", "abab", 300),
    ("vocab_size 256: no merges", "hello", 256),
]


def check_train_bpe(train_fn) -> Check:
    """Check train_fn(text, vocab_size) -> {pair: new_id} against train_bpe (GPT-2's pre-tokenizer)."""
    with Check("train", known=TRAIN_ERRORS) as check:
        results = []
        for _name, text, vocab_size in TRAIN_CASES:
            what = f"train({text!r}, {vocab_size})"
            got = check.call(what, train_fn, text, vocab_size)
            if not isinstance(got, Mapping):
                check.stop(f"{what} returned {type(got).__name__}: return a dict {{pair: new_id}}")
            got = plain(got)
            if got and all(isinstance(k, int) and isinstance(v, tuple) for k, v in got.items()):
                check.stop(f"{what} maps new ids to pairs: return {{pair: new_id}}, the way "
                           f"encode reads merges")
            results.append(((text, vocab_size), got))
        for (name, text, vocab_size), (args, got) in zip(TRAIN_CASES, results):
            expected = _reference(text, vocab_size)
            if got != expected:
                check.stop(f"{name}: train({text!r}, {vocab_size}) gave {got}, expected {expected}"
                           + likely_mistake(results, TRAIN_MISTAKES, (args, got)))
            check.ok(f"{name}: {len(expected)} merge(s), new ids {_ids(expected)}")
    return check


def _ids(merges: dict) -> str:
    return f"{min(merges.values())} .. {max(merges.values())}" if merges else "none"
