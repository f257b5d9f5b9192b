"""The pre-tokenizer: cut text into the pieces that BPE merges inside of, never across.

GPT-2 cuts text into contractions, words with an optional leading space, numbers, runs of other
symbols, and whitespace; merges then stay inside those pieces, so "dog." and "dog!" share the
token for "dog". SmolLM2 (chapter 9) cuts in two stages: every digit alone, then GPT-2's pattern.
"""

from __future__ import annotations

from collections.abc import Sequence

import regex

from .bpe_inputs import check_pattern
from .validate import ArgumentTypeError

# GPT-2's pre-tokenizer: contractions, words with an optional leading space, numbers, runs of
# other symbols, and whitespace. Merges never cross the boundaries between these pieces.
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


def split_text(text: str, pattern: str | Sequence[str] | None = GPT2_SPLIT_PATTERN) -> list[str]:
    """Cut `text` into the pieces that BPE merges inside of (the whole text if pattern is None).

    Text between two matches of the pattern becomes a piece of its own: a pattern that does not
    cover every character never loses any (the same rule as Hugging Face's pre-tokenizers).
    A tuple of patterns splits in stages: each pattern cuts the pieces the one before it made.
    SmolLM2 (chapter 9) first puts every digit in a piece of its own, then uses GPT-2's pattern.
    """
    if not isinstance(text, str):
        raise ArgumentTypeError(f"text must be a str, got {type(text).__name__}")
    if pattern is None:
        return [text] if text else []
    stages = [check_pattern(pattern)] if isinstance(pattern, str) else check_pattern(pattern)
    pieces = [text] if text else []
    for stage in stages:
        compiled = regex.compile(stage)  # the regex module keeps compiled patterns in a cache
        pieces = [part for piece in pieces for part in _split_once(compiled, piece)]
    return pieces


def _split_once(compiled: regex.Pattern, text: str) -> list[str]:
    """The matches of `compiled` in `text`, with the text between them kept as pieces too."""
    if not compiled.groups:  # findall returns whole matches: the fast path
        pieces = compiled.findall(text)
        if sum(map(len, pieces)) == len(text):
            return [piece for piece in pieces if piece]  # the matches cover every character
    pieces = []
    end = 0  # how far the pieces so far reach
    for match in compiled.finditer(text):
        if match.start() > end:
            pieces.append(text[end:match.start()])  # not matched: kept, never dropped
        if match.end() > match.start():
            pieces.append(match.group())  # the whole match, even if the pattern has groups
        end = max(end, match.end())
    if end < len(text):
        pieces.append(text[end:])
    return pieces
