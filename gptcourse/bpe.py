"""Byte-level byte-pair encoding (BPE): count pairs, merge the most frequent, repeat.

A text becomes UTF-8 bytes, so the base vocabulary is the 256 possible byte values and every
text can be encoded. Training learns *merges*: "the pair (a, b) becomes the new token n".
Encoding applies the merges in the order they were learned; decoding joins the tokens' bytes
and only then turns them back into text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral

import regex

from .bpe_inputs import (
    Pair,
    check_byte_ids,
    check_merges,
    check_pattern,
    check_special_token_names,
    check_special_tokens,
)
from .pretokenize import GPT2_SPLIT_PATTERN, split_text
from .progress import progress_bar
from .validate import ArgumentTypeError, InputError, require_flag

END_OF_TEXT = "<|endoftext|>"



# --- the two steps of training ------------------------------------------------------------------
def pair_counts(ids: Sequence[int], counts: dict[Pair, int] | None = None,
                weight: int = 1) -> dict[Pair, int]:
    """How often each pair of neighbours occurs in `ids` ("aaa" holds the pair (a, a) twice).

    Pass `counts` to add to an existing tally, and `weight` to count `ids` that many times.
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids` by `new_id`, left to right, without overlap.

    merge([a, a, a], (a, a), n) == [n, a]: once the first two are merged, the middle one is used.
    """
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2  # skip both halves of the pair
        else:
            out.append(ids[i])
            i += 1
    return out


def best_pair(counts: dict[Pair, int]) -> Pair:
    """The most frequent pair; ties go to the smallest pair (compared as a tuple of ids).

    The tie rule makes training deterministic: the same text always gives the same merges.
    """
    return min(counts, key=lambda pair: (-counts[pair], pair))


def train_bpe(text: str, vocab_size: int, pattern: str | Sequence[str] | None = GPT2_SPLIT_PATTERN,
              special_tokens: Iterable[str] = (), progress: bool = True) -> BPETokenizer:
    """Learn `vocab_size - 256` merges from `text` and return the tokenizer that applies them.

    Each step merges the most frequent pair (ties: the smallest pair). Pieces of the
    pre-tokenizer are counted once each with their frequency, so a frequent word costs no more
    than a rare one. Special tokens get the ids after the last merge.
    """
    if not isinstance(text, str):
        raise ArgumentTypeError(f"text must be a str, got {type(text).__name__}")
    if not text:
        raise InputError("text is empty: train on a corpus, e.g. load_text()")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, Integral):
        raise ArgumentTypeError(f"vocab_size must be an int, got {vocab_size!r}")
    if vocab_size < 256:
        raise InputError(f"vocab_size must be >= 256 (the 256 byte values), got {vocab_size}")
    pattern = check_pattern(pattern)
    special_tokens = check_special_token_names(special_tokens)
    require_flag("progress", progress)
    piece_freq: dict[str, int] = {}
    for piece in split_text(text, pattern):
        piece_freq[piece] = piece_freq.get(piece, 0) + 1
    words = [list(piece.encode("utf-8")) for piece in piece_freq]
    freqs = list(piece_freq.values())
    counts: dict[Pair, int] = {}
    where: dict[Pair, set[int]] = {}  # pair -> the words that contain it
    for w, (ids, freq) in enumerate(zip(words, freqs)):
        pair_counts(ids, counts, freq)
        for pair in zip(ids, ids[1:]):
            where.setdefault(pair, set()).add(w)
    merges: dict[Pair, int] = {}
    for new_id in progress_bar(range(256, vocab_size), desc="BPE merges", disable=not progress):
        if not counts:
            break  # every piece is a single token: nothing left to merge
        pair = best_pair(counts)
        merges[pair] = new_id
        for w in sorted(where.pop(pair)):
            old = words[w]
            # Take the word's pairs out of the tally, merge, put the new pairs back in.
            for p in zip(old, old[1:]):
                counts[p] -= freqs[w]
                if counts[p] == 0:
                    del counts[p]
            words[w] = merge(old, pair, new_id)
            pair_counts(words[w], counts, freqs[w])
            for p in zip(words[w], words[w][1:]):
                where.setdefault(p, set()).add(w)
    special = {token: len(merges) + 256 + i for i, token in enumerate(dict.fromkeys(special_tokens))}
    return BPETokenizer(merges, special_tokens=special, pattern=pattern)


# --- the tokenizer ---------------------------------------------------------------------------------
class BPETokenizer:
    """Encode text with a list of merges, and decode ids back to text.

    `merges` maps a pair of ids to the id it becomes; a smaller new id was learned earlier and
    is applied first. `byte_ids[b]` is the id of byte b (b itself unless given, as for GPT-2);
    None where the vocabulary has no token for that byte (SmolLM2 lacks 21 of them), so text
    holding that byte cannot be encoded and says so.
    """

    def __init__(self, merges: dict[Pair, int], special_tokens: dict[str, int] | None = None,
                 pattern: str | Sequence[str] | None = GPT2_SPLIT_PATTERN,
                 byte_ids: Sequence[int | None] | None = None):
        self.pattern = check_pattern(pattern)
        self.byte_ids = check_byte_ids(byte_ids)
        self.merges = check_merges(merges)
        self.special_tokens = check_special_tokens(special_tokens)
        # Every id names one token: a byte, a merge or a special token, never two of them.
        byte_of = {i: b for b, i in enumerate(self.byte_ids) if i is not None}
        pair_of = {new_id: pair for pair, new_id in self.merges.items()}
        for pair, new_id in self.merges.items():
            if new_id in byte_of:
                raise InputError(f"merge {pair} -> {new_id} reuses id {new_id}, already the id of "
                                 f"byte 0x{byte_of[new_id]:02x}: every merge needs an id of its own")
        for token, i in self.special_tokens.items():
            if i in byte_of or i in pair_of:
                owner = f"byte 0x{byte_of[i]:02x}" if i in byte_of else f"merge {pair_of[i]}"
                raise InputError(f"special token {token!r} has id {i}, already the id of "
                                 f"{owner}: give it an id of its own")
        if not (byte_of or pair_of or self.special_tokens):
            raise InputError("the vocabulary is empty: give byte_ids, merges or special tokens")
        self.vocab: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(self.byte_ids)
                                        if i is not None}
        # A merge's two parts must exist before it: bytes, or merges with smaller ids.
        for (a, b), new_id in sorted(self.merges.items(), key=lambda item: item[1]):
            if a not in self.vocab or b not in self.vocab:
                raise InputError(f"merge {(a, b)} -> {new_id} uses an id that no earlier merge "
                                 f"made: list merges in the order they were learned")
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        for token, i in self.special_tokens.items():
            self.vocab[i] = token.encode("utf-8")
        self._special_re = (regex.compile("|".join(regex.escape(t) for t in sorted(
            self.special_tokens, key=len, reverse=True))) if self.special_tokens else None)
        self._cache: dict[str, list[int]] = {}

    def clear_cache(self) -> None:
        """Forget the pieces encoded so far (only needed to time encoding from scratch)."""
        self._cache.clear()

    @property
    def n_vocab(self) -> int:
        """Number of ids: one more than the largest id (the same name as tiktoken's)."""
        return max(self.vocab) + 1

    @property
    def vocab_size(self) -> int:
        """The same number under the name the course's other tokenizers use."""
        return self.n_vocab

    @property
    def special_tokens_set(self) -> set[str]:
        """The special tokens' strings, under tiktoken's name (see tokenizers.Tokenizer)."""
        return set(self.special_tokens)

    def encode_piece(self, piece: bytes) -> list[int]:
        """Encode one piece of the pre-tokenizer: its bytes, then merges, lowest new id first."""
        if not isinstance(piece, (bytes, bytearray)):
            raise ArgumentTypeError(f"piece must be bytes, e.g. text.encode('utf-8'), got "
                                    f"{type(piece).__name__}")
        ids = [self.byte_ids[b] for b in piece]
        if None in ids:
            byte = piece[ids.index(None)]
            raise InputError(f"the vocabulary has no token for the byte 0x{byte:02x} (in "
                             f"{piece!r}), so this text cannot be encoded without losing it: "
                             f"remove that character from the text")
        while len(ids) >= 2:
            # The pair that was learned first among the neighbours present now.
            pair = min(zip(ids, ids[1:]), key=lambda p: self.merges.get(p, float("inf")))
            if pair not in self.merges:
                break  # no neighbours left that a merge joins
            ids = merge(ids, pair, self.merges[pair])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating special-token strings such as "<|endoftext|>" as plain text."""
        if not isinstance(text, str):
            raise ArgumentTypeError(f"text must be a str, got {type(text).__name__}; decode bytes first, "
                            f"e.g. data.decode('utf-8')")
        ids: list[int] = []
        cache = self._cache
        for piece in split_text(text, self.pattern):
            cached = cache.get(piece)
            if cached is None:
                try:
                    cached = self.encode_piece(piece.encode("utf-8"))
                except UnicodeEncodeError as exc:
                    raise InputError(f"text holds {piece[exc.start]!r}, a lone surrogate that "
                                     f"UTF-8 cannot store: remove it from the text") from exc
                if len(cache) < 100_000:  # remember words; a bound keeps memory in check
                    cache[piece] = cached
            ids.extend(cached)
        return ids

    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Encode text; special tokens listed in `allowed_special` (or "all") become their ids.

        Like tiktoken, any other special-token string in the text is an error, so that text
        from users cannot smuggle in an end-of-text marker by accident.
        """
        if not isinstance(text, str):
            raise ArgumentTypeError(f"text must be a str, got {type(text).__name__}")
        if isinstance(allowed_special, str) and allowed_special != "all":
            raise ArgumentTypeError(f"allowed_special must be a set of special tokens, e.g. "
                                    f"{{{allowed_special!r}}}, or the string 'all'; got "
                                    f"{allowed_special!r}")
        if allowed_special == "all":
            allowed = set(self.special_tokens)
        elif isinstance(allowed_special, (bytes, Mapping)) or not isinstance(allowed_special, Iterable):
            raise ArgumentTypeError(f"allowed_special must be a set of special tokens or the "
                                    f"string 'all', got {allowed_special!r}")
        else:
            listed = list(allowed_special)
            if not all(isinstance(token, str) for token in listed):
                raise ArgumentTypeError(f"allowed_special must hold special-token strings, got "
                                        f"{sorted(map(repr, listed))}")
            allowed = set(listed)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise InputError(f"allowed_special lists {sorted(unknown)!r}, which are not special "
                             f"tokens of this tokenizer: {sorted(self.special_tokens)!r}")
        if self._special_re is None:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for match in self._special_re.finditer(text):
            if match.group() not in allowed:
                raise InputError(
                    f"text contains the special token {match.group()!r} at character "
                    f"{match.start()}: pass allowed_special={{{match.group()!r}}} to encode it "
                    f"as one token, or use encode_ordinary(text) to encode it as plain text")
            ids += self.encode_ordinary(text[start:match.start()])
            ids.append(self.special_tokens[match.group()])
            start = match.end()
        return ids + self.encode_ordinary(text[start:])

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of a list of ids, joined."""
        if ids is None or isinstance(ids, (str, bytes, Mapping, set, frozenset)) or not (
                hasattr(ids, "tolist") or isinstance(ids, Iterable)):
            raise ArgumentTypeError(f"ids must be a list of token ids, got {ids!r}; encode text "
                                    f"with tokenizer.encode(text)")
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if not isinstance(ids, list):
            ids = [ids]  # a 0-d tensor is one id
        bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, Integral)
               or int(i) not in self.vocab]
        if bad:
            raise InputError(f"ids contain {len(bad)} value(s) that are not ids of this tokenizer "
                             f"(0..{self.n_vocab - 1}): {bad[:5]!r}")
        return b"".join(self.vocab[int(i)] for i in ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Join the ids' bytes first, then read them as UTF-8 (invalid bytes become "\ufffd").

        Joining first matters: one Hangul syllable is 3 bytes, often spread over several tokens.
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return (f"BPETokenizer(n_vocab={self.n_vocab}, merges={len(self.merges)}, "
                f"special_tokens={len(self.special_tokens)})")
