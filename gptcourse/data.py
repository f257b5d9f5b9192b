"""The corpus and how a model sees it: text -> ids -> splits -> (input, target) batches."""

from __future__ import annotations

import codecs
import unicodedata
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .download import fetch
from .validate import (
    ArgumentTypeError,
    CourseWarning,
    InputError,
    require_device,
    require_flag,
    require_generator,
    require_positive_int,
)

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY_SHAKESPEARE_PATH = "tinyshakespeare/input.txt"
# The Constitution of the Republic of Korea (public domain), from the KoNLPy project's corpus.
KOREAN_CONSTITUTION_URL = (
    "https://raw.githubusercontent.com/konlpy/konlpy/master/konlpy/data/corpus/kolaw/constitution.txt"
)
KOREAN_CONSTITUTION_SHA256 = "69377a88c0e577b37b1373f4496147e995209d5139a993633a8a2776bc0e2ca8"
KOREAN_CONSTITUTION_PATH = "korean/constitution.txt"
# Encodings to suggest when a file is not UTF-8, most likely first (Korean Windows: cp949).
LIKELY_ENCODINGS = ["cp949", "euc-kr", "shift_jis", "gb18030", "big5", "cp1252"]


def tiny_shakespeare_path(download_ok: bool = True) -> Path:
    """The verified local copy of Tiny Shakespeare, downloaded into the data folder on first use."""
    return fetch(TINY_SHAKESPEARE_URL, TINY_SHAKESPEARE_PATH, TINY_SHAKESPEARE_SHA256,
                 download_ok=download_ok)


def korean_constitution_path(download_ok: bool = True) -> Path:
    """The verified local copy of the Korean corpus, downloaded into the data folder on first use."""
    return fetch(KOREAN_CONSTITUTION_URL, KOREAN_CONSTITUTION_PATH, KOREAN_CONSTITUTION_SHA256,
                 download_ok=download_ok)


CORPORA = {"tinyshakespeare": tiny_shakespeare_path, "korean-constitution": korean_constitution_path}


def load_text(source: str | Path = "tinyshakespeare", encoding: str = "utf-8") -> str:
    """Load a corpus: "tinyshakespeare" (the default), "korean-constitution", or the path of a
    text file in `encoding` (UTF-8 unless given, e.g. encoding="cp949" for Korean Windows files)."""
    if not isinstance(source, (str, Path)):
        raise ArgumentTypeError(f"source must be {' or '.join(map(repr, CORPORA))} or the path of "
                                f"a text file, got {source!r}")
    codec = _codec_name(encoding)
    if str(source) in CORPORA:
        path = CORPORA[str(source)]()
    else:
        path = Path(source).expanduser()
        try:
            path.stat()
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte in it...
            raise InputError(f"cannot use {str(source)[:80]!r} as a corpus file: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise CorpusNotFoundError(
                f"corpus file {path} {what}: pass {' or '.join(map(repr, CORPORA))} "
                f"or the path of a UTF-8 text file"
            )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the corpus file {path}: "
                         f"{exc.strerror or type(exc).__name__}") from None
    mark = _byte_order_mark(data)
    if mark is not None and not codec.startswith(mark):
        # A byte-order mark says which encoding the file is in; another one would misread it.
        raise InputError(f"{path} starts with the byte-order mark of {mark.upper()}, so it is "
                         f"{mark.upper()} text, not {_label(codec, encoding)}: pass encoding='{mark}' "
                         f"(--encoding {mark}), or save it as UTF-8")
    # utf-8-sig also reads UTF-8 files that start with a byte-order mark (some editors add one).
    try:
        text = data.decode("utf-8-sig" if codec == "utf-8" else codec)
    except UnicodeDecodeError as exc:
        raise InputError(_decode_error(path, data, codec, exc, encoding)) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as reading in text mode does
    if not text:
        raise InputError(f"{path} is empty: a corpus needs at least some text")
    if not codec.startswith("utf-8") and _has_multibyte_utf8(data):
        # Text in another encoding is almost never valid UTF-8 by chance (in cp949, most Hangul
        # starts with a byte UTF-8 never starts a character with); latin-1 reads any bytes.
        warnings.warn(f"{path} was read as {encoding}, but its bytes are valid UTF-8 with "
                      f"characters such as {_sample(data)}: it is probably UTF-8, which "
                      f"{encoding} reads as other characters. Leave out encoding= (--encoding) "
                      f"to read it as UTF-8, or ignore this if {encoding} is right.",
                      EncodingMismatchWarning, stacklevel=2)
    return text


class CorpusNotFoundError(FileNotFoundError, InputError):
    """The corpus file named by a path does not exist (or is a folder)."""


class EncodingMismatchWarning(CourseWarning):
    """A text file was read in the encoding asked for, but its bytes suggest another one."""


# Byte-order marks, longest first: UTF-32's little-endian mark begins with UTF-16's.
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]


def _byte_order_mark(data: bytes) -> str | None:
    """The encoding whose byte-order mark `data` starts with ("utf-16", ...), or None."""
    return next((name for bom, name in _BOMS if data.startswith(bom)), None)


def _label(codec: str, asked: str) -> str:
    return "UTF-8" if codec.startswith("utf-8") else asked


def _codec_name(encoding: str) -> str:
    """Python's own name for a text encoding ("UTF8" -> "utf-8"); an InputError if it has none."""
    problem = None
    if not isinstance(encoding, str):
        problem = "is not an encoding name"
    else:
        try:
            name = codecs.lookup(encoding).name
            "a".encode(name)  # rot13, base64, zlib...: codecs Python knows, but not text encodings
        except LookupError as exc:
            problem = ("is not an encoding Python knows" if "unknown" in str(exc)
                       else "is not a text encoding (it turns text into other text or bytes)")
        except UnicodeError:
            problem = "is not a text encoding"
    if problem:
        raise InputError(f"encoding {encoding!r} {problem}: use a name such as 'utf-8' or "
                         f"'cp949'") from None
    return name


def _has_multibyte_utf8(data: bytes) -> bool:
    """True if `data` is valid UTF-8 and holds characters of more than one byte."""
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _sample(data: bytes) -> str:
    """The first few different non-ASCII characters of UTF-8 `data`, for a message."""
    found = dict.fromkeys(c for c in data.decode("utf-8") if ord(c) > 127)
    return ", ".join(repr(c) for c in list(found)[:3])


def _plausible(data: bytes, encoding: str) -> bool:
    """True if `encoding` reads `data` as text: no error, the same bytes back, no control codes."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        return False
    if text.encode(encoding) != data:
        return False
    return not any(unicodedata.category(c) == "Cc" and c not in "\t\n\r\f\v" for c in text)


def _decode_error(path: Path, data: bytes, codec: str, exc: UnicodeDecodeError,
                  asked: str) -> str:
    """Say at which byte `data` stops being `codec`, and which encodings read it plausibly."""
    where = f" at byte offset {exc.start} (byte 0x{data[exc.start]:02x})"
    candidates = list(LIKELY_ENCODINGS) if codec == "utf-8" else ["utf-8", *LIKELY_ENCODINGS]
    if b"\x00" in data:  # text in one-byte encodings has no NUL bytes; UTF-16 is full of them
        # ASCII in UTF-16 is the character's byte and a NUL: NULs at odd offsets mean little-endian.
        odd = data[1::2].count(0) >= data[0::2].count(0)
        candidates = ["utf-16-le" if odd else "utf-16-be"] + candidates
    fits = [name for name in candidates if name != codec and _plausible(data, name)]
    if fits:
        korean = " (files from Korean Windows are often cp949)" if "cp949" in fits else ""
        hint = (f"It reads as text in {', '.join(fits)}{korean}. Pass the file's encoding, e.g. "
                f"load_text(path, encoding='{fits[0]}') or --encoding {fits[0]}, or save it as "
                f"UTF-8.")
    else:
        hint = (f"None of the usual encodings ({', '.join(LIKELY_ENCODINGS)}) reads it as text "
                f"either: find out the file's encoding (a text editor shows it) and pass it "
                f"with encoding= or --encoding, or save the file as UTF-8.")
    label = "UTF-8" if codec == "utf-8" else asked
    return f"{path} is not {label} text: decoding failed{where}. {hint}"


def train_val_split(data, train_fraction: float = 0.9):
    """Split a sequence (ids or text) in two: the first part to train on, the rest to validate."""
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise ArgumentTypeError(f"data must be a sequence to split (a tensor or list of ids, or a "
                                f"string), got {type(data).__name__}")
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, (int, float)):
        raise ArgumentTypeError(f"train_fraction must be a number such as 0.9, got {train_fraction!r}")
    if not 0.0 < train_fraction < 1.0:
        raise InputError(f"train_fraction must be between 0 and 1 (exclusive), got {train_fraction}")
    n = int(train_fraction * len(data))
    if n == 0 or n == len(data):
        raise InputError(
            f"data of length {len(data)} is too short to split at train_fraction={train_fraction}: "
            f"one of the two parts would be empty. Use more data."
        )
    return data[:n], data[n:]


def _as_id_tensor(data, name: str = "data") -> torch.Tensor:
    if isinstance(data, str):
        raise ArgumentTypeError(f"{name} is text: encode it into token ids first, e.g. "
                        f"torch.tensor(tokenizer.encode(text))")
    if not isinstance(data, torch.Tensor):
        try:
            data = torch.as_tensor(data)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ArgumentTypeError(f"{name} must be a 1-D tensor or list of token ids ({exc})") from exc
        if data.numel() == 0:
            data = data.long()  # an empty list becomes a float tensor; the length check below explains
    if data.dim() != 1:
        raise InputError(f"{name} must be a 1-D sequence of token ids, got shape {tuple(data.shape)}")
    if data.is_floating_point() or data.is_complex() or data.dtype == torch.bool:
        raise ArgumentTypeError(f"{name} must hold integer token ids, got dtype {data.dtype}")
    return data.long()


def get_batch(
    data: torch.Tensor,
    block_size: int,
    batch_size: int,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random training windows: x is `block_size` ids, y is the same window shifted by one.

    Returns two (batch_size, block_size) tensors on `device`.
    """
    return batch_sampler(data, block_size, batch_size, device, generator)()


def batch_sampler(
    data: torch.Tensor,
    block_size: int,
    batch_size: int,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """Check the arguments of get_batch once; return draw() -> (x, y), one get_batch per call.

    A training loop calls this once before its first step, so that no step checks them again.
    """
    data = _as_id_tensor(data)
    block_size = require_positive_int("block_size", block_size)
    batch_size = require_positive_int("batch_size", batch_size)
    device = require_device("device", device)
    require_generator("generator", generator)
    if len(data) < block_size + 1:
        raise InputError(
            f"data has {len(data)} tokens, too short for block_size={block_size}: a window needs "
            f"block_size + 1 = {block_size + 1} tokens. Use a smaller block_size or more text."
        )
    offsets = torch.arange(block_size)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        # The last start that still leaves room for the shifted target is len - block_size - 1.
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        # One index tensor (batch_size, block_size) gathers every window at once: far faster than a loop.
        positions = starts.unsqueeze(1) + offsets
        x, y = data[positions], data[positions + 1]
        return x.to(device), y.to(device)

    return draw


class SlidingWindowDataset(Dataset):
    """Every window of `context_length` ids, taken every `stride` ids, paired with its next-id targets.

    stride == context_length gives non-overlapping windows; a smaller stride overlaps them.
    """

    def __init__(self, token_ids, context_length: int, stride: int):
        ids = _as_id_tensor(token_ids, "token_ids")
        context_length = require_positive_int("context_length", context_length)
        stride = require_positive_int("stride", stride)
        if len(ids) < context_length + 1:
            raise InputError(
                f"token_ids has {len(ids)} ids, too short for context_length={context_length}: "
                f"one window needs {context_length + 1}"
            )
        self.ids = ids
        self.context_length = context_length
        self.starts = range(0, len(ids) - context_length, stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.starts[index]
        window = self.ids[start : start + self.context_length + 1]
        return window[:-1], window[1:]


def create_dataloader(
    token_ids,
    context_length: int,
    stride: int,
    batch_size: int = 4,
    shuffle: bool = True,
    drop_last: bool = True,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader over a SlidingWindowDataset (seed `generator` for a repeatable shuffle)."""
    dataset = SlidingWindowDataset(token_ids, context_length, stride)
    batch_size = require_positive_int("batch_size", batch_size)
    require_flag("drop_last", drop_last)
    require_generator("generator", generator)
    if drop_last and batch_size > len(dataset):
        raise InputError(f"batch_size={batch_size} is larger than the {len(dataset)} window(s) of "
                         f"this data, so drop_last=True would leave no batch at all: use "
                         f"batch_size <= {len(dataset)}, a smaller stride, or more text")
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      generator=generator)
