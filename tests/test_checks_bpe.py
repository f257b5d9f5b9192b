"""The chapter 8 BPE checkers: the reference passes, a stub fails, and every mistake a checker
claims to diagnose is planted, the way a learner would write it, and named."""

import pytest
import regex
from checker_results import has

from gptcourse.bpe import GPT2_SPLIT_PATTERN, BPETokenizer, merge, pair_counts
from gptcourse.checks.bpe import check_decode, check_encode, check_merge, check_pair_counts


def stub(*args):
    raise NotImplementedError


# --- pair counts -----------------------------------------------------------------------------------------
def counts_loop(ids, mistake=None):
    """A learner's pair_counts, with one mistake switched on by name."""
    counts = {}
    if mistake == "in twos":
        for i in range(0, len(ids) - 1, 2):
            pair = (ids[i], ids[i + 1])
            counts[pair] = counts.get(pair, 0) + 1
        return counts
    if mistake == "no overlap":
        i = 0
        while i < len(ids) - 1:
            pair = (ids[i], ids[i + 1])
            counts[pair] = counts.get(pair, 0) + 1
            i += 2 if ids[i] == ids[i + 1] else 1
        return counts
    stop = len(ids) - 2 if mistake == "missing last" else len(ids) - 1
    for i in range(stop):
        pair = (ids[i], ids[i + 1])
        counts[pair] = 1 if mistake == "once" else counts.get(pair, 0) + 1
    return counts


def test_pair_counts_reference_and_plain_version_pass():
    assert check_pair_counts(pair_counts).passed
    assert check_pair_counts(counts_loop).passed
    from collections import Counter
    assert check_pair_counts(lambda ids: Counter(zip(ids, ids[1:]))).passed


def test_pair_counts_stub_fails():
    result = check_pair_counts(stub)
    assert not result.passed and has(result, "not written yet")


@pytest.mark.parametrize("mistake, words", [
    ("once", "every pair is counted once"),
    ("no overlap", "overlapping pairs are counted once"),
    ("missing last", "the last pair is missing"),
    ("in twos", "only the pairs at even positions are counted"),
])
def test_pair_counts_mistakes(mistake, words):
    result = check_pair_counts(lambda ids: counts_loop(ids, mistake))
    assert not result.passed and has(result, words)


def test_pair_counts_wrong_types():
    assert has(check_pair_counts(lambda ids: list(zip(ids, ids[1:]))), "return a dict")
    assert has(check_pair_counts(lambda ids: {f"{a},{b}": 1 for a, b in zip(ids, ids[1:])}),
               "use tuples (a, b) as keys")


# --- merge -----------------------------------------------------------------------------------------------
def merge_loop(ids, pair, new_id, mistake=None):
    """A learner's merge, with one mistake switched on by name."""
    if mistake == "in place":
        ids[:] = merge(ids, pair, new_id)
        return ids
    if mistake == "overlap twice":
        return _collapse(ids, pair, new_id)
    out, i = [], 0
    end = len(ids) - 1 if mistake == "drop last" else len(ids)
    while i < end:
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 1 if mistake == "no skip" else 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _collapse(ids, pair, new_id):
    """Mark every start of the pair, then drop the id after each mark: [a, a, a] gives [Z, Z]."""
    starts = [i for i in range(len(ids) - 1) if ids[i] == pair[0] and ids[i + 1] == pair[1]]
    out = []
    for i, x in enumerate(ids):
        if i in starts:
            out.append(new_id)
        elif i - 1 not in starts:
            out.append(x)
    return out


def test_merge_reference_and_plain_version_pass():
    assert check_merge(merge).passed
    assert check_merge(merge_loop).passed


def test_merge_stub_fails():
    result = check_merge(stub)
    assert not result.passed and has(result, "not written yet")


@pytest.mark.parametrize("mistake, words", [
    ("overlap twice", "overlapping pairs are merged twice"),
    ("drop last", "the last id is lost"),
    ("no skip", "the second id of the pair is kept too"),
    ("in place", "changed the list it was given"),
])
def test_merge_mistakes(mistake, words):
    result = check_merge(lambda ids, pair, new_id: merge_loop(ids, pair, new_id, mistake))
    assert not result.passed and has(result, words)


def test_merge_from_the_right():
    def from_right(ids, pair, new_id):
        out, i = [], len(ids) - 1
        while i >= 0:
            if i >= 1 and (ids[i - 1], ids[i]) == pair:
                out.insert(0, new_id)
                i -= 2
            else:
                out.insert(0, ids[i])
                i -= 1
        return out
    assert has(check_merge(from_right), "the pairs are merged from the right")


# --- encode ----------------------------------------------------------------------------------------------
def encode_loop(text, merges, mistake=None):
    """A learner's encode, with one mistake switched on by name."""
    pieces = [text] if mistake == "no pre-tokenizer" else regex.findall(GPT2_SPLIT_PATTERN, text)
    ids = []
    for piece in pieces:
        chunk = [ord(c) for c in piece] if mistake == "characters" else list(piece.encode("utf-8"))
        while len(chunk) >= 2:
            counts = pair_counts(chunk)
            if mistake == "frequency":
                pair = max(counts, key=counts.get)  # the most frequent pair, not the first learned
            else:
                pair = min(counts, key=lambda p: merges.get(p, float("inf")))
            if pair not in merges:
                break
            chunk = merge(chunk, pair, merges[pair])
        ids.extend(chunk)
    return [] if not text and mistake == "no pre-tokenizer" else ids


def in_merge_order(text, merges):
    """Also right: apply each merge in the order learned, over the whole piece."""
    ids = []
    for piece in regex.findall(GPT2_SPLIT_PATTERN, text):
        chunk = list(piece.encode("utf-8"))
        for pair, new_id in sorted(merges.items(), key=lambda item: item[1]):
            chunk = merge(chunk, pair, new_id)
        ids += chunk
    return ids


def test_encode_reference_and_plain_versions_pass():
    assert check_encode(lambda text, merges: BPETokenizer(merges).encode(text)).passed
    assert check_encode(encode_loop).passed
    assert check_encode(in_merge_order).passed


def test_encode_stub_fails():
    result = check_encode(stub)
    assert not result.passed and has(result, "not written yet")


@pytest.mark.parametrize("mistake, words", [
    ("frequency", "merges are applied by frequency instead of rank"),
    ("no pre-tokenizer", "the pre-tokenizer is missing"),
    ("characters", "these are characters, not bytes"),
])
def test_encode_mistakes(mistake, words):
    result = check_encode(lambda text, merges: encode_loop(text, merges, mistake))
    assert not result.passed and has(result, words)


def test_encode_returns_bytes():
    assert has(check_encode(lambda text, merges: text.encode()), "return a list of ids")


# --- decode ----------------------------------------------------------------------------------------------
def decode_join(ids, vocab, mistake=None):
    """A learner's decode, with one mistake switched on by name."""
    if mistake == "token by token":
        return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)
    data = b"".join(vocab[i] for i in ids)
    if mistake == "bytes":
        return data
    errors = {"strict": "strict", "ignore": "ignore"}.get(mistake, "replace")
    return data.decode("utf-8", errors=errors)


def test_decode_plain_version_passes():
    assert check_decode(decode_join).passed


def test_decode_stub_fails():
    result = check_decode(stub)
    assert not result.passed and has(result, "not written yet")


@pytest.mark.parametrize("mistake, words", [
    ("token by token", "each token is decoded on its own"),
    ("strict", "decode with errors='replace'"),
    ("ignore", "invalid bytes are dropped"),
    ("bytes", "returned bytes"),
])
def test_decode_mistakes(mistake, words):
    result = check_decode(lambda ids, vocab: decode_join(ids, vocab, mistake))
    assert not result.passed and has(result, words)
