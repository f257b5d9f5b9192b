"""Checkers for chapter 8: pair counts, one merge, encoding with a list of merges, decoding."""

from __future__ import annotations

from collections.abc import Mapping

from ..bpe import BPETokenizer, merge, pair_counts, split_text, train_bpe
from . import Check

A, B, C = 97, 98, 99  # the bytes of "a", "b", "c"
Z = 256  # a new token


# Shared with bpe_train.py, chapter 8's other checker: a mistake there is a function too.
def plain(value):
    """A mapping as a plain dict (a Counter or defaultdict compares the same way)."""
    return dict(value) if isinstance(value, Mapping) else value


def likely_mistake(results: list[tuple[tuple, object]], mistakes: dict, bad: tuple) -> str:
    """": " + the likely mistake, else "".

    A candidate must give the learner's output on the failing case `bad`; among those, the one
    that agrees with the learner on the most cases wins (the first listed on a tie).
    """
    def same(wrong, args, got) -> bool:
        try:
            return plain(wrong(*args)) == got
        except Exception:  # a variant that cannot run on some case does not match there
            return False

    best, best_score = "", 0
    for message, wrong in mistakes.items():
        if not same(wrong, *bad):
            continue
        score = sum(same(wrong, args, got) for args, got in results)
        if score > best_score:
            best, best_score = f": {message}", score
    return best


# --- exercise 1: pair counts ---------------------------------------------------------------------------
def _counts_once(ids):
    return {p: 1 for p in zip(ids, ids[1:])}


def _counts_in_twos(ids):
    counts = {}
    for pair in zip(ids[::2], ids[1::2]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def _counts_without_overlap(ids):
    # how many times merge() would join each pair: [a, a, a] gives (a, a) once
    return {p: len(ids) - len(merge(ids, p, -1)) for p in set(zip(ids, ids[1:]))}


def _counts_missing_last(ids):
    return pair_counts(ids[:-1])


PAIR_COUNT_MISTAKES = {
    "every pair is counted once, whatever its frequency: add 1 each time you meet it "
    "(counts[pair] = counts.get(pair, 0) + 1)": _counts_once,
    "overlapping pairs are counted once: count every pair of neighbours, zip(ids, ids[1:]), so "
    "[a, a, a] holds (a, a) twice (the merge decides later which ones to join)": _counts_without_overlap,
    "the last pair is missing: the pairs are (ids[i], ids[i + 1]) for i up to len(ids) - 2, "
    "e.g. zip(ids, ids[1:])": _counts_missing_last,
    "only the pairs at even positions are counted (ids[0:2], ids[2:4], ...): every id starts a pair "
    "with its right neighbour, zip(ids, ids[1:])": _counts_in_twos,
}
PAIR_CASES = [[1, 2, 3, 1, 2], [A, A, A], [A, A, A, A, B], list("한국어".encode()), [7], []]


def check_pair_counts(pair_counts_fn) -> Check:
    """Check pair_counts_fn(ids) -> {pair: count} on small lists, "aaa" and Korean bytes."""
    with Check("pair_counts") as check:
        results = []
        for ids in PAIR_CASES:
            what = f"pair_counts({ids})"
            got = plain(check.call(what, pair_counts_fn, list(ids)))
            if not isinstance(got, dict):
                check.stop(f"{what} returned {type(got).__name__}: return a dict {{pair: count}}")
            if any(not isinstance(k, tuple) for k in got):
                check.stop(f"{what} has keys such as {next(iter(got))!r}: use tuples (a, b) as keys")
            results.append(((ids,), got))
        for (ids,), got in results:
            if got != pair_counts(ids):
                check.stop(f"pair_counts({ids}) gave {got}, expected {pair_counts(ids)}"
                           + likely_mistake(results, PAIR_COUNT_MISTAKES, ((ids,), got)))
        check.ok("counts every pair of neighbours, overlapping ones too ([a, a, a] holds (a, a) twice)")
        check.ok("an empty list and a single id have no pairs")
    return check


# --- exercise 2: one merge -------------------------------------------------------------------------------
def _merge_overlapping(ids, pair, new_id):
    # every position where the pair starts is merged, even when the previous match used it
    starts = {i for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) == pair}
    return [new_id if i in starts else x for i, x in enumerate(ids)
            if i in starts or i - 1 not in starts]


def _merge_without_skip(ids, pair, new_id):
    # the second id of a matched pair is kept as well
    return [new_id if i + 1 < len(ids) and (x, ids[i + 1]) == pair else x for i, x in enumerate(ids)]


def _merge_dropping_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_from_the_right(ids, pair, new_id):
    return merge(ids[::-1], pair[::-1], new_id)[::-1]


MERGE_MISTAKES = {
    "overlapping pairs are merged twice: in [a, a, a] the middle a belongs to one pair only. After "
    "a match, skip both ids (i += 2), so merge([a, a, a], (a, a), Z) is [Z, a]": _merge_overlapping,
    "the last id is lost when it is not part of a pair: the loop must also copy ids[-1]":
        _merge_dropping_last,
    "after a match the second id of the pair is kept too: skip both (i += 2), so "
    "merge([1, 2, 3], (1, 2), 9) is [9, 3]": _merge_without_skip,
    "the pairs are merged from the right: go left to right, so merge([a, a, a], (a, a), Z) is "
    "[Z, a], not [a, Z]": _merge_from_the_right,
}
MERGE_CASES = [([1, 2, 3, 1, 2], (1, 2), 9), ([A, A, A], (A, A), Z), ([A, A, A, A], (A, A), Z),
               ([A, B, C], (A, B), Z), ([C, A, B], (A, B), Z), ([A, B, A], (B, C), Z), ([A], (A, A), Z),
               ([], (A, B), Z)]


def check_merge(merge_fn) -> Check:
    """Check merge_fn(ids, pair, new_id) -> list: left to right, without overlap, input untouched."""
    with Check("merge") as check:
        results = []
        for ids, pair, new_id in MERGE_CASES:
            what = f"merge({ids}, {pair}, {new_id})"
            given = list(ids)
            got = check.call(what, merge_fn, given, pair, new_id)
            if given != ids:
                check.stop(f"{what} changed the list it was given: build and return a new list")
            if not isinstance(got, list):
                check.stop(f"{what} returned {type(got).__name__}: return a list of ids")
            results.append(((ids, pair, new_id), got))
        for (ids, pair, new_id), got in results:
            if got != merge(ids, pair, new_id):
                check.stop(f"merge({ids}, {pair}, {new_id}) gave {got}, expected "
                           f"{merge(ids, pair, new_id)}"
                           + likely_mistake(results, MERGE_MISTAKES, ((ids, pair, new_id), got)))
        check.ok("merges every occurrence, left to right: merge([a, a, a], (a, a), Z) == [Z, a]")
        check.ok("keeps the ids that are not part of the pair, at both ends, and leaves the input alone")
    return check


# --- exercise 3: encode with a list of merges ----------------------------------------------------------
ORDER_MERGES = {(B, C): 256, (A, B): 257}  # (b, c) was learned first, (a, b) is more frequent below
ORDER_TEXT = "ababc"
PRETOKEN_TEXT = "the cat sat on the mat, the end"


def _encode_variant(text, merges, *, order="rank", split=True, start="bytes"):
    """encode() with one deliberate change, to recognise a learner's mistake."""
    ids = []
    for piece in (split_text(text) if split else [text] if text else []):
        chunk = list(piece.encode("utf-8")) if start == "bytes" else [ord(c) for c in piece]
        while len(chunk) >= 2:
            counts = pair_counts(chunk)
            known = [p for p in counts if p in merges]
            if not known:
                break
            if order == "rank":
                pair = min(known, key=merges.get)
            else:  # the most frequent pair first (ties: the one learned first)
                pair = max(known, key=lambda p: (counts[p], -merges[p]))
            chunk = merge(chunk, pair, merges[pair])
        ids += chunk
    return ids


ENCODE_MISTAKES = {
    "merges are applied by frequency instead of rank: at each step merge the pair that was "
    "learned first (the smallest new id, min(pairs, key=lambda p: merges.get(p, inf))), however "
    "often it occurs": lambda text, merges: _encode_variant(text, merges, order="frequency"),
    "the pre-tokenizer is missing: split the text with regex.findall(GPT2_SPLIT_PATTERN, text) "
    "first and encode each piece on its own, so no merge crosses a space or punctuation":
        lambda text, merges: _encode_variant(text, merges, split=False),
    "these are characters, not bytes: start each piece from list(piece.encode('utf-8'))":
        lambda text, merges: _encode_variant(text, merges, start="characters"),
}


def encode_cases() -> list[tuple[str, str, dict]]:
    """(name, text, merges): the rank order, merges across spaces, Korean, nothing to merge."""
    spaced = train_bpe(PRETOKEN_TEXT * 3, 300, pattern=None, progress=False).merges
    korean = "대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다."
    return [
        ("merges in the order they were learned", ORDER_TEXT, ORDER_MERGES),
        ("merges learned across spaces", PRETOKEN_TEXT, spaced),
        ("Korean, 3 bytes per syllable", korean, train_bpe(korean, 320, progress=False).merges),
        ("no merges", "hi!", {}),
        ("an empty text", "", ORDER_MERGES),
    ]


def check_encode(encode_fn) -> Check:
    """Check encode_fn(text, merges) -> ids: pre-tokenizer, bytes, merges lowest new id first."""
    with Check("encode") as check:
        results, names = [], []
        for name, text, merges in encode_cases():
            what = f"encode({text[:20]!r}{'...' if len(text) > 20 else ''}, merges)"
            got = check.call(what, encode_fn, text, dict(merges))
            if not isinstance(got, list):
                check.stop(f"{what} returned {type(got).__name__}: return a list of ids")
            results.append(((text, merges), got))
            names.append((name, what))
        for (name, what), ((text, merges), got) in zip(names, results):
            expected = BPETokenizer(merges).encode(text)
            if got != expected:
                check.stop(f"{what} gave {got[:10]}, expected {expected[:10]}"
                           + likely_mistake(results, ENCODE_MISTAKES, ((text, merges), got)))
            check.ok(f"{name}: {expected[:8]}{' ...' if len(expected) > 8 else ''}")
    return check


# --- exercise 4: decode ----------------------------------------------------------------------------------
def _decode_token_by_token(ids, vocab):
    return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)


def _decode_ignoring(ids, vocab):
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="ignore")


DECODE_MISTAKES = {
    "each token is decoded on its own: one Hangul syllable is 3 bytes, often spread over several "
    "tokens, so join all the bytes first, b''.join(...), and decode once": _decode_token_by_token,
    "invalid bytes are dropped: GPT-2 shows each as '\ufffd' with errors='replace', so that no "
    "byte disappears without a trace": _decode_ignoring,
}


def decode_cases() -> list[tuple[str, list[int], dict]]:
    tok = train_bpe("헌법 헌법 대한민국 hello hello", 270, progress=False)
    vocab = dict(tok.vocab)
    text = "헌법 대한민국 hello"
    return [("ASCII", tok.encode("hello"), vocab),
            ("Korean, syllables split across tokens", tok.encode(text), vocab),
            ("a token cut out of a character", tok.encode("국")[:1], vocab),
            ("no ids", [], vocab)]


def check_decode(decode_fn) -> Check:
    """Check decode_fn(ids, vocab) -> str: bytes joined first, invalid bytes replaced."""
    with Check("decode") as check:
        results, names = [], []
        for name, ids, vocab in decode_cases():
            what = f"decode({ids[:6]}{' ...' if len(ids) > 6 else ''}, vocab)"
            got = check.call(what, decode_fn, list(ids), vocab, known={
                "can't decode": "the bytes are not valid UTF-8 here (a token cut out of a "
                                "character): decode with errors='replace', as GPT-2 does"})
            if isinstance(got, bytes):
                check.stop(f"{what} returned bytes: turn them into text with "
                           f".decode('utf-8', errors='replace')")
            results.append(((ids, vocab), got))
            names.append((name, what))
        for (name, what), ((ids, vocab), got) in zip(names, results):
            expected = b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
            if got != expected:
                check.stop(f"{what} gave {got!r}, expected {expected!r}"
                           + likely_mistake(results, DECODE_MISTAKES, ((ids, vocab), got)))
            check.ok(f"{name}: {expected!r}")
    return check
