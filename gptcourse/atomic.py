"""Writing a file so that a crash, a full disk or a kill never leaves half of it behind.

The bytes go to a temp file beside the target, are forced to disk (fsync), and only then is the
temp file renamed over the target: a rename within one folder is atomic, so readers see the old
file or the new one, never a mix. Whatever fails, the temp file is removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch


def write_atomically(path: Path, write: Callable[[BinaryIO], None],
                     check: Callable[[Path], None] | None = None) -> None:
    """Call `write(handle)` on a temp file beside `path`, then `check(temp path)`, then put the
    file in place of `path`. Raises what writing or checking raised; `path` is then unchanged."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename makes it visible
        if check is not None:
            check(Path(tmp_name))      # a download's checksum: a bad file never gets the name
        os.chmod(tmp_name, 0o644)      # mkstemp makes it owner-only; these are normal files
        os.replace(tmp_name, path)     # atomic: readers see the old file or the new one
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):  # cleaning up must not hide the real error
                Path(tmp_name).unlink(missing_ok=True)


def torch_save_atomically(payload: dict, path: Path) -> None:
    """torch.save(payload) to `path` through write_atomically (torch reports a full disk as a
    RuntimeError from its zip writer)."""
    write_atomically(path, lambda handle: torch.save(payload, handle))
