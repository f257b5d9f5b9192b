"""The corpus and how a model sees it: text -> ids -> splits -> (input, target) batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .download import fetch
from .text_files import codec_name, decode_text
from .validate import (
    ArgumentTypeError,
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
    codec_name(encoding)  # a wrong name fails before the file is read
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
    return decode_text(path, data, encoding)


class CorpusNotFoundError(FileNotFoundError, InputError):
    """The corpus file named by a path does not exist (or is a folder)."""


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
