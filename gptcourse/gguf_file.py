"""Reading a GGUF file: its header, metadata and tensor table, and dequantising its weights.

GGUF is llama.cpp's one-file format for a model. In order, the file holds:

1. a header: the magic bytes b"GGUF", a version, the number of tensors and of metadata entries;
2. the metadata: key -> value pairs (the model's sizes, its tokenizer, its chat template);
3. the tensor table: for each tensor its name, shape, storage type and where its bytes start;
4. the tensors' bytes, each starting on a multiple of the alignment (32 unless the metadata says).

Everything is little-endian. Quantised types store blocks of 32 values: Q4_1 keeps a scale d and
a minimum m (two float16) and 32 four-bit integers q, so each value is d * q + m (4.5 bits per
value in all); Q8_0 keeps a scale d and 32 signed bytes q, so each value is d * q.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# Metadata value types: number -> struct format (8 is a string, 9 an array; both handled below).
VALUE_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9

# Tensor storage types this module reads: number -> (name, values per block, bytes per block).
F32, F16, Q4_1, Q8_0 = 0, 1, 3, 8
TENSOR_TYPES = {F32: ("F32", 1, 4), F16: ("F16", 1, 2), Q4_1: ("Q4_1", 32, 20), Q8_0: ("Q8_0", 32, 34)}


class GGUFError(ValueError):
    """A file that is not a GGUF file, is cut short, or uses a type this module cannot read."""


@dataclass(frozen=True)
class TensorInfo:
    """One row of the tensor table. `shape` is in PyTorch's order (GGUF lists it reversed)."""

    name: str
    shape: tuple[int, ...]
    type: int
    offset: int  # where the tensor's bytes start, counted from the start of the file

    @property
    def type_name(self) -> str:
        return TENSOR_TYPES[self.type][0] if self.type in TENSOR_TYPES else f"type {self.type}"

    @property
    def n_values(self) -> int:
        n = 1
        for size in self.shape:
            n *= size
        return n

    @property
    def n_bytes(self) -> int:
        """Bytes on disk: whole blocks of values, each block with its own scale (and minimum)."""
        _, per_block, block_bytes = TENSOR_TYPES[self.type]
        return self.n_values // per_block * block_bytes


@dataclass
class GGUFFile:
    """What `read_gguf` found: the version, the metadata, and the tensor table by name."""

    path: Path
    version: int
    metadata: dict[str, object]
    tensors: dict[str, TensorInfo]

    def raw(self, name: str) -> torch.Tensor:
        """The tensor's bytes as stored (uint8), read from the file."""
        info = self._info(name)
        with open(self.path, "rb") as f:
            f.seek(info.offset)
            data = f.read(info.n_bytes)
        if len(data) != info.n_bytes:
            raise GGUFError(f"{self.path} ends inside tensor {name!r}: the file is cut short; "
                            f"install or download it again")
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor dequantised to float32, in PyTorch's shape."""
        info = self._info(name)
        return dequantize(self.raw(name), info.type).reshape(info.shape)

    def _info(self, name: str) -> TensorInfo:
        if name not in self.tensors:
            raise KeyError(f"{self.path.name} has no tensor {name!r}; it has e.g. "
                           f"{list(self.tensors)[:4]}")
        info = self.tensors[name]
        if info.type not in TENSOR_TYPES:
            raise GGUFError(f"tensor {name!r} is stored as {info.type_name}, which this course "
                            f"does not read (it reads {[t[0] for t in TENSOR_TYPES.values()]})")
        return info


class _Reader:
    """Little-endian values read one after another from an open file."""

    def __init__(self, f: BinaryIO, path: Path):
        self.f, self.path = f, path

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise GGUFError(f"{self.path} ends early, inside its header: the file is cut short; "
                            f"install or download it again")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        length = self.take("<Q")  # a string is its length in bytes (uint64), then UTF-8 bytes
        data = self.f.read(length)
        if len(data) != length:
            raise GGUFError(f"{self.path} ends early, inside a string: the file is cut short")
        return data.decode("utf-8", errors="replace")

    def value(self, value_type: int):
        if value_type == STRING:
            return self.string()
        if value_type == ARRAY:  # an array: the items' type, their count, then the items
            item_type, count = self.take("<I"), self.take("<Q")
            return [self.value(item_type) for _ in range(count)]
        if value_type not in VALUE_FORMATS:
            raise GGUFError(f"{self.path} holds a metadata value of unknown type {value_type}: "
                            f"is it a GGUF file of a newer version?")
        return self.take(VALUE_FORMATS[value_type])


def read_gguf(path: str | Path) -> GGUFFile:
    """Read a GGUF file's header, metadata and tensor table (not the tensors' bytes)."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or Path naming a .gguf file, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise GGUFError(f"{path} is not a GGUF file: it does not start with the bytes b'GGUF'")
        r = _Reader(f, path)
        version = r.take("<I")
        if version not in (2, 3):
            raise GGUFError(f"{path} is GGUF version {version}; this course reads versions 2 and 3")
        n_tensors, n_metadata = r.take("<Q"), r.take("<Q")
        metadata = {}
        for _ in range(n_metadata):
            key = r.string()
            metadata[key] = r.value(r.take("<I"))
        table = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.take("<I")
            dims = [r.take("<Q") for _ in range(n_dims)]
            table.append((name, tuple(reversed(dims)), r.take("<I"), r.take("<Q")))
        # The tensors' bytes start at the next multiple of the alignment after the table.
        alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        start = -(-f.tell() // alignment) * alignment
    tensors = {name: TensorInfo(name, shape, kind, start + offset)
               for name, shape, kind, offset in table}
    return GGUFFile(path, version, metadata, tensors)


def dequantize_q4_1(raw: torch.Tensor) -> torch.Tensor:
    """Q4_1 bytes -> float32 values. Each 20-byte block: d, m (float16), then 16 bytes of 4-bit q.

    Byte j of a block holds value j in its low four bits and value j + 16 in its high four bits.
    """
    blocks = raw.reshape(-1, 20)
    d = blocks[:, 0:2].contiguous().view(torch.float16).float()  # (n_blocks, 1)
    m = blocks[:, 2:4].contiguous().view(torch.float16).float()
    packed = blocks[:, 4:]                                       # (n_blocks, 16)
    q = torch.cat([packed & 0x0F, packed >> 4], dim=1).float()   # (n_blocks, 32): 0 .. 15
    return (d * q + m).reshape(-1)


def dequantize_q8_0(raw: torch.Tensor) -> torch.Tensor:
    """Q8_0 bytes -> float32 values. Each 34-byte block: d (float16), then 32 signed bytes q."""
    blocks = raw.reshape(-1, 34)
    d = blocks[:, 0:2].contiguous().view(torch.float16).float()  # (n_blocks, 1)
    q = blocks[:, 2:].contiguous().view(torch.int8).float()      # (n_blocks, 32): -128 .. 127
    return (d * q).reshape(-1)


def dequantize(raw: torch.Tensor, tensor_type: int) -> torch.Tensor:
    """Stored bytes of any type this module reads -> float32 values."""
    if tensor_type == F32:
        return raw.view(torch.float32).clone()
    if tensor_type == F16:
        return raw.view(torch.float16).float()
    if tensor_type == Q4_1:
        return dequantize_q4_1(raw)
    if tensor_type == Q8_0:
        return dequantize_q8_0(raw)
    raise GGUFError(f"tensor type {tensor_type} is not one this course reads "
                    f"({[t[0] for t in TENSOR_TYPES.values()]})")
