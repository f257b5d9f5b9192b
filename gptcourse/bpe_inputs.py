"""Checking what a BPE tokenizer is built from, before it is built: one clear error per mistake.

A pre-tokenizer pattern, special-token names, the ids of the 256 bytes, the merges, the special
tokens: each is checked for its type and its values (ids unique, in range, no two merges making
one id), so that a wrong vocabulary fails here instead of decoding to the wrong text later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Integral

import regex

from .validate import ArgumentTypeError, InputError

Pair = tuple[int, int]


def check_pattern(pattern, name: str = "pattern") -> str | tuple[str, ...] | None:
    """`pattern` as split_text takes it (None, a regex, or a tuple of them), or a clear error."""
    if pattern is None:
        return None
    stages = (pattern,) if isinstance(pattern, str) else pattern
    if isinstance(pattern, (bytes, bytearray)) or not isinstance(stages, (list, tuple)) or not stages:
        raise ArgumentTypeError(f"{name} must be None, a regular expression (a str) or a tuple "
                                f"of them, got {pattern!r}")
    for stage in stages:
        if not isinstance(stage, str):
            raise ArgumentTypeError(f"{name} must be None, a regular expression (a str) or a "
                                    f"tuple of them; it holds {stage!r}")
        try:
            regex.compile(stage)
        except regex.error as exc:
            raise InputError(f"{name} {stage!r} is not a valid regular expression ({exc})") from None
    return pattern if isinstance(pattern, str) else tuple(pattern)


def check_special_token_names(tokens, name: str = "special_tokens") -> list[str]:
    """Special-token strings: each a non-empty str, listed once."""
    if isinstance(tokens, (str, bytes)):
        raise ArgumentTypeError(f"{name} must be a list of strings, e.g. [{tokens!r}], got the "
                                f"single string {tokens!r} (it would make every character a "
                                f"special token)")
    try:
        tokens = list(tokens)
    except TypeError:
        raise ArgumentTypeError(f"{name} must be a list of strings, got {tokens!r}") from None
    for token in tokens:
        if not isinstance(token, str):
            raise ArgumentTypeError(f"{name} must hold strings, got {token!r}")
        if not token:
            raise InputError(f"{name} holds the empty string \"\": a special token needs at "
                             f"least one character (the empty one would match between every "
                             f"two characters)")
    return tokens


# --- ids, merges, special tokens ------------------------------------------------------
MAX_ID = 2**31 - 1  # ids index an embedding table: anything larger is a mistake, not a vocabulary


def is_id(value) -> bool:
    if type(value) is int:  # the common case, checked first: a vocabulary has ~50,000 ids
        return 0 <= value <= MAX_ID
    return isinstance(value, Integral) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def check_byte_ids(byte_ids) -> list[int | None]:
    if byte_ids is None:
        return list(range(256))
    if isinstance(byte_ids, (str, bytes, dict)) or not isinstance(byte_ids, Iterable):
        raise ArgumentTypeError(f"byte_ids must be a list of 256 ids (None for a byte without a "
                                f"token), got {type(byte_ids).__name__}")
    byte_ids = list(byte_ids)
    bad = [i for i in byte_ids if i is not None and not is_id(i)]
    if bad:
        raise InputError(f"byte_ids must hold ids, ints from 0 to {MAX_ID} (or None), got {bad[0]!r}")
    byte_ids = [None if i is None else int(i) for i in byte_ids]
    present = [i for i in byte_ids if i is not None]
    if len(byte_ids) != 256 or len(set(present)) != len(present):
        raise InputError("byte_ids must give 256 entries, one for each byte value, with "
                         "different ids (None for a byte the vocabulary has no token for)")
    return byte_ids


def check_merges(merges) -> dict[Pair, int]:
    if not isinstance(merges, Mapping):
        raise ArgumentTypeError(f"merges must be a dict {{(id_a, id_b): new_id}} in the order "
                                f"they were learned, got {type(merges).__name__}")
    checked: dict[Pair, int] = {}
    used: dict[int, Pair] = {}
    for pair, new_id in merges.items():
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(map(is_id, pair))):
            raise InputError(f"merges must map a pair of ids (id_a, id_b) to a new id; "
                             f"got the key {pair!r}")
        if not is_id(new_id):
            raise InputError(f"merge {pair} -> {new_id!r}: the new id must be an int from 0 "
                             f"to {MAX_ID}")
        pair, new_id = (int(pair[0]), int(pair[1])), int(new_id)
        if new_id in used:
            raise InputError(f"merges {used[new_id]} and {pair} both make id {new_id}: every "
                             f"merge needs an id of its own")
        used[new_id] = pair
        checked[pair] = new_id
    return checked


def check_special_tokens(special_tokens) -> dict[str, int]:
    if special_tokens is None:
        return {}
    if not isinstance(special_tokens, Mapping):
        raise ArgumentTypeError(f"special_tokens must be a dict {{token: id}}, e.g. "
                                f"{{'<|endoftext|>': 50256}}, got {special_tokens!r}")
    check_special_token_names(list(special_tokens))
    seen: dict[int, str] = {}
    for token, i in special_tokens.items():
        if not is_id(i):
            raise InputError(f"special token {token!r} has id {i!r}: an id is an int from 0 "
                             f"to {MAX_ID}")
        if int(i) in seen:
            raise InputError(f"special tokens {seen[int(i)]!r} and {token!r} both have id {i}: "
                             f"each needs an id of its own")
        seen[int(i)] = token
    return {token: int(i) for token, i in special_tokens.items()}
