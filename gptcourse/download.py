"""Safe downloads: a cache folder, checked files (sha256, or a check of the file's own), atomic writes."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .atomic import write_atomically
from .progress import progress_bar

DATA_DIR_ENV = "GPTCOURSE_DATA_DIR"


def data_dir() -> Path:
    """The folder downloads are cached in: $GPTCOURSE_DATA_DIR, else ~/.cache/gptcourse."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "gptcourse"


def sha256_of(path: str | Path) -> str:
    """The hex sha256 digest of a file, read in chunks so large files fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class DownloadError(RuntimeError):
    """A file could not be fetched or did not match its checksum."""


def verify(path: Path, sha256: str) -> None:
    """Raise DownloadError if `path` does not have the expected sha256."""
    actual = sha256_of(path)
    if actual != sha256:
        raise DownloadError(
            f"{path} is corrupt or incomplete: its sha256 is {actual}, expected {sha256}. "
            f"Delete it and download it again."
        )


def _stream_to(url: str, handle: BinaryIO, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with progress_bar(total=total, unit="B", unit_scale=True, desc=Path(url).name, leave=False) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                handle.write(chunk)
                bar.update(len(chunk))


def download(url: str, destination: Path, sha256: str | None = None, *,
             check: Callable[[Path], None] | None = None, timeout: float = 60.0) -> Path:
    """Download `url` to `destination`, check it, and only then put it in place (atomic.py).

    The checks: the sha256, where known, and `check(path)`, which raises ValueError on a bad
    file (for files without a published digest). An interrupted or bad download saves nothing.
    """
    if sha256 is None and check is None:
        raise ValueError("download needs sha256= or check=: an unchecked download could be anything")
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"Could not create {destination}: {exc}") from exc

    def check_download(part: Path) -> None:
        if sha256 is not None and (actual := sha256_of(part)) != sha256:
            raise DownloadError(
                f"the file downloaded from {url} has sha256 {actual}, expected {sha256} "
                f"(the download was cut short or the file changed); nothing was saved"
            )
        if check is not None:
            try:
                check(part)
            except ValueError as exc:
                raise DownloadError(f"the file downloaded from {url} is unusable ({exc}); "
                                    f"nothing was saved") from None

    try:
        write_atomically(destination, lambda handle: _stream_to(url, handle, timeout), check_download)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # OSError covers URLError/HTTPError and timeouts; HTTPException covers a connection
        # that breaks mid-file (IncompleteRead); ValueError a malformed URL.
        raise DownloadError(f"Could not download {url}: {type(exc).__name__}: {exc}") from exc
    return destination


def fetch(url: str, relative_path: str, sha256: str, *, download_ok: bool = True) -> Path:
    """Return the cached, verified copy of a file, downloading it on first use.

    A cached file that fails its checksum is never used: it is downloaded again,
    or, with `download_ok=False`, reported with the steps to fix it.
    """
    path = data_dir() / relative_path
    if path.is_file():
        actual = sha256_of(path)
        if actual == sha256:
            return path
        problem = f"{path} exists but its sha256 is {actual}, expected {sha256} (corrupt or truncated)"
    else:
        problem = f"{path} is missing"
    if not download_ok:
        raise DownloadError(_fix_message(problem, url, path))
    try:
        return download(url, path, sha256)
    except DownloadError as exc:
        # One error with everything in it: the chained traceback would only repeat it.
        raise DownloadError(
            _fix_message(f"{problem}, and downloading it failed: {exc}", url, path)
        ) from None


def _fix_message(problem: str, url: str, path: Path) -> str:
    return (
        f"{problem}.\n"
        f"Looked in the data folder {data_dir()} (set ${DATA_DIR_ENV} to use another).\n"
        f"To fix it: connect to the internet and run `python -m gptcourse data`, "
        f"or download {url} yourself and save it as {path}, "
        f"or point ${DATA_DIR_ENV} at a folder that already holds {path.relative_to(data_dir())}."
    )
