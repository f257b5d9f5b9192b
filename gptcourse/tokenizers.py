"""Tokenizers: characters <-> ids, and GPT-2's byte-pair encoding (BPE) through tiktoken.

Every tokenizer of the course offers one interface, `Tokenizer` below, under tiktoken's names:
tiktoken's GPT-2 Encoding is a class we cannot change, so ours speak its language instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from numbers import Integral
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from .download import data_dir
from .validate import ArgumentTypeError, InputError, require_instance

END_OF_TEXT = "<|endoftext|>"
# GPT-2's tokenizer files and their sha256 (as tiktoken checks them); the cache names each file
# by the sha1 of its URL.
GPT2_FILES = {
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe":
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json":
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


class TokenizerUnavailableError(RuntimeError):
    """GPT-2's tokenizer files are missing or corrupt and cannot be downloaded."""


@runtime_checkable
class Tokenizer(Protocol):
    """What code that takes any tokenizer may ask of it: CharTokenizer, BPETokenizer (chapter 8's
    and SmolLM2's) and tiktoken's GPT-2 Encoding all answer it, so no code asks which one it has.
    One with special tokens also takes encode(text, allowed_special={...}), as tiktoken does."""

    @property
    def n_vocab(self) -> int: ...  # ids run from 0 to n_vocab - 1

    @property
    def special_tokens_set(self) -> AbstractSet[str]: ...  # e.g. {"<|endoftext|>"}; characters: none

    def encode(self, text: str) -> list[int]: ...  # a special token's string in text is refused

    def encode_ordinary(self, text: str) -> list[int]: ...  # special tokens' strings are plain text

    def decode(self, ids: list[int]) -> str: ...

    def decode_bytes(self, ids: list[int]) -> bytes: ...  # bytes: one token may be part of a character


class CharTokenizer:
    """A character-level tokenizer: every distinct character of a text gets one id.

    The vocabulary is sorted, so the same text always gives the same ids.
    """

    def __init__(self, text: str):
        require_instance("text", text, str)
        if not text:
            raise InputError("text is empty: build the tokenizer from the corpus you will train on")
        self._set_vocab(sorted(set(text)))

    def _set_vocab(self, chars: list[str]) -> None:
        self.chars: list[str] = chars
        self.stoi: dict[str, int] = {ch: i for i, ch in enumerate(chars)}
        self.itos: dict[int, str] = dict(enumerate(chars))

    @classmethod
    def from_vocab(cls, chars: Iterable[str]) -> CharTokenizer:
        """Rebuild a tokenizer from its saved vocabulary `tok.chars` (for example from a checkpoint).

        The order is kept as given, so every character gets back exactly its saved id.
        """
        if chars is None or isinstance(chars, bytes) or not isinstance(chars, Iterable):
            raise ArgumentTypeError(f"chars must be the saved vocabulary, a list of characters "
                                    f"(tokenizer.chars), got {chars!r}")
        chars = list(chars)  # a string works too: one character per item
        if not chars:
            raise InputError("chars is empty: pass the saved vocabulary, tokenizer.chars")
        bad = [c for c in chars if not (isinstance(c, str) and len(c) == 1)]
        if bad:
            raise InputError(f"chars must hold single characters, got {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            repeated = sorted({c for c in chars if chars.count(c) > 1})
            raise InputError(f"chars lists these characters more than once: {repeated!r}")
        tokenizer = cls.__new__(cls)
        tokenizer._set_vocab(chars)
        return tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    # The Tokenizer interface: tiktoken's names for what a character tokenizer has or lacks.
    special_tokens_set: frozenset[str] = frozenset()  # every character is text

    @property
    def n_vocab(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Turn a string into a list of ids. Unknown characters raise ValueError."""
        require_instance("text", text, str)
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            raise InputError(
                f"text contains {len(unknown)} character(s) that are not in the vocabulary: "
                f"{unknown!r}. Build the tokenizer from a text that contains them, "
                f"or remove them from the input."
            )
        return [self.stoi[ch] for ch in text]

    def encode_ordinary(self, text: str) -> list[int]:
        """The same as encode: a character tokenizer has no special tokens."""
        return self.encode(text)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Turn a list (or 1-D tensor) of ids back into a string."""
        if ids is None or isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise ArgumentTypeError(f"ids must be a list or 1-D tensor of token ids, got {ids!r}; "
                                    f"encode text with tokenizer.encode(text)")
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise InputError(f"ids must be 1-D to decode, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        # Integral covers Python ints and NumPy integers; bool is an int but never an id.
        ids = [int(i) if isinstance(i, Integral) and not isinstance(i, bool) else i for i in ids]
        bad = [i for i in ids if type(i) is not int or i not in self.itos]
        if bad:
            raise InputError(
                f"ids contain {len(bad)} value(s) that are not integer ids in "
                f"0..{self.vocab_size - 1}: {bad[:5]!r}"
            )
        return "".join(self.itos[i] for i in ids)

    def decode_bytes(self, ids: Iterable[int] | torch.Tensor) -> bytes:
        """decode(ids) as UTF-8 bytes."""
        return self.decode(ids).encode("utf-8")

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def tiktoken_cache_dir() -> Path:
    """Where GPT-2's tokenizer files are cached: $TIKTOKEN_CACHE_DIR (or tiktoken's older
    $DATA_GYM_CACHE_DIR), else beside the course data, so `gptcourse data` and the notebooks share one."""
    chosen = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    return Path(chosen) if chosen else data_dir() / "tiktoken-cache"


@contextlib.contextmanager
def _tiktoken_reads_from(cache_dir: Path):
    """tiktoken finds its cache only through $TIKTOKEN_CACHE_DIR: point it at `cache_dir` while it
    loads, then put the environment back as it was, so no caller depends on a changed environment."""
    before = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    try:
        yield
    finally:
        if before is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = before


def gpt2_tokenizer():
    """GPT-2's BPE tokenizer (tiktoken "gpt2"), with a clear message when it cannot be loaded."""
    import tiktoken

    cache_dir = tiktoken_cache_dir()
    # tiktoken silently deletes a cached file whose sha256 is wrong: note which ones it will delete.
    corrupt = corrupt_gpt2_files(cache_dir)
    try:
        with _tiktoken_reads_from(cache_dir):
            return tiktoken.get_encoding("gpt2")  # loaded once; later calls reuse tiktoken's copy
    except Exception as exc:  # tiktoken raises several error types when offline
        if corrupt:
            names = ", ".join(str(path) for path in corrupt)
            raise TokenizerUnavailableError(
                f"GPT-2's tokenizer file {names} was corrupt (its sha256 did not match) and has been "
                f"removed. Online, it downloads again on the next use; offline, copy the file back "
                f"from a machine that has run `python -m gptcourse data` (its TIKTOKEN_CACHE_DIR). "
                f"The download failed with {type(exc).__name__}: {exc}"
            ) from exc
        raise TokenizerUnavailableError(
            "Could not load the GPT-2 tokenizer files. tiktoken downloads them once and caches "
            f"them in {cache_dir} ($TIKTOKEN_CACHE_DIR, else beside the course data). On a machine "
            "without internet, set TIKTOKEN_CACHE_DIR to a folder that already holds them (copy it "
            "from a machine that has run `python -m gptcourse data`)."
            f" Original error: {type(exc).__name__}: {exc}"
        ) from exc


def corrupt_gpt2_files(cache_dir: Path) -> list[Path]:
    """The cached GPT-2 tokenizer files whose sha256 is wrong (a flipped byte, a cut-short copy)."""
    corrupt = []
    for url, sha256 in GPT2_FILES.items():
        path = Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            corrupt.append(path)
    return corrupt


def _require_tokenizer(tokenizer) -> None:
    if not isinstance(tokenizer, Tokenizer):
        raise ArgumentTypeError(f"tokenizer must be a CharTokenizer or GPT-2's tokenizer "
                                f"(gpt2_tokenizer()), got {type(tokenizer).__name__} (a tokenizer "
                                f"offers encode, encode_ordinary, decode, decode_bytes, n_vocab and "
                                f"special_tokens_set)")


def text_to_token_ids(text: str, tokenizer: Tokenizer) -> torch.Tensor:
    """Encode text with any tokenizer and add a batch dimension: shape (1, T)."""
    require_instance("text", text, str)
    _require_tokenizer(tokenizer)
    if not text:
        raise InputError("text is empty: give at least one character to encode")
    if END_OF_TEXT in tokenizer.special_tokens_set:  # a prompt may mark where a text ends
        ids = tokenizer.encode(text, allowed_special={END_OF_TEXT})
    else:
        ids = tokenizer.encode_ordinary(text)  # no end-of-text token: the text is plain text
    return torch.tensor(ids, dtype=torch.long).unsqueeze(0)


def token_ids_to_text(ids: torch.Tensor, tokenizer: Tokenizer) -> str:
    """Decode a (1, T) or (T,) tensor of ids with any tokenizer."""
    _require_tokenizer(tokenizer)
    if ids is None or isinstance(ids, (str, bytes)):
        raise ArgumentTypeError(f"ids must be a tensor of token ids, got {ids!r}")
    ids = torch.as_tensor(ids)
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ArgumentTypeError(f"ids must hold integer token ids, got dtype {ids.dtype}; "
                                f"convert with ids.long() if the values are whole numbers")
    if ids.dim() == 2:
        if ids.size(0) != 1:
            raise InputError(f"ids holds a batch of {ids.size(0)} sequences; decode them one by one")
        ids = ids[0]
    if ids.dim() != 1:
        raise InputError(f"ids must have shape (1, T) or (T,), got {tuple(ids.shape)}")
    size = tokenizer.n_vocab
    if ids.numel() and (ids.min() < 0 or ids.max() >= size):
        bad = ids[(ids < 0) | (ids >= size)][:5].tolist()
        raise InputError(f"ids must be token ids in 0..{size - 1} (the tokenizer's vocabulary), got "
                         f"{bad}: were they made by a model with a larger vocab_size?")
    return tokenizer.decode(ids.tolist())
