"""Reading a safetensors file's header: the name, dtype, shape and place of every tensor.

A .safetensors file is 8 bytes (little-endian) giving the header's length, the header (JSON:
{name: {"dtype", "shape", "data_offsets"}}, plus an optional "__metadata__"), then the tensors'
bytes. Reading the header alone checks a file of gigabytes in a moment: a file cut short is
found by comparing its length with the last tensor's end. The course's safetensors files are
OpenAI's GPT-2 weights, so the fix named is how to download those again.
"""

from __future__ import annotations

import json
from pathlib import Path

_REFETCH = ("delete it and download it again (for OpenAI's weights: python -m gptcourse.pretrained "
            "SIZE, e.g. 124M)")


def read_safetensors_header(path: str | Path) -> dict[str, dict]:
    """The header of a .safetensors file: {name: {"dtype", "shape", "data_offsets"}}, checked."""
    path = Path(path)
    with open(path, "rb") as handle:
        size_bytes = handle.read(8)
        header_len = int.from_bytes(size_bytes, "little") if len(size_bytes) == 8 else -1
        n_bytes = path.stat().st_size
        if header_len <= 0 or 8 + header_len > n_bytes:
            raise ValueError(f"{path} is not a safetensors file, or it is cut short: {_REFETCH}")
        try:
            header = json.loads(handle.read(header_len))
        except ValueError as exc:
            raise ValueError(f"{path} has a broken safetensors header ({exc}): {_REFETCH}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} has a broken safetensors header (a JSON {type(header).__name__}, "
                         f"not an object of tensors): {_REFETCH}")
    header.pop("__metadata__", None)
    for name, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and isinstance(info.get("shape"), list)):
            raise ValueError(f"{path} has a broken safetensors header (tensor {name!r} has no valid "
                             f"'shape' and 'data_offsets'): {_REFETCH}")
    end = max((info["data_offsets"][1] for info in header.values()), default=0)
    if 8 + header_len + end != n_bytes:
        raise ValueError(f"{path} has {n_bytes:,} bytes but its header describes "
                         f"{8 + header_len + end:,}: the file is incomplete; {_REFETCH}")
    return header
