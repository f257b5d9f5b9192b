"""Safe downloads: a cache folder, sha256 checks, and atomic writes (temp file + rename)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.request
from pathlib import Path

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


def _stream_to(url: str, handle, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with progress_bar(total=total, unit="B", unit_scale=True, desc=Path(url).name, leave=False) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                handle.write(chunk)
                bar.update(len(chunk))


def download(url: str, destination: Path, sha256: str, timeout: float = 60.0) -> Path:
    """Download `url` to `destination`, verify its sha256, and only then move it into place.

    The file is written to a temporary name in the same folder and renamed at the end,
    so an interrupted or corrupt download never leaves a half-written file behind.
    """
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=destination.name,
                                        suffix=".part")
    except OSError as exc:
        raise DownloadError(f"Could not create {destination}: {exc}") from exc
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            _stream_to(url, handle, timeout)
        actual = sha256_of(tmp_path)
        if actual != sha256:
            raise DownloadError(
                f"the file downloaded from {url} has sha256 {actual}, expected {sha256} "
                f"(the download was cut short or the file changed); nothing was saved"
            )
        # mkstemp makes the file readable by its owner only; a cached copy should be
        # readable by everyone, like any other downloaded file.
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, destination)  # atomic on the same file system
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # OSError covers URLError/HTTPError and timeouts; HTTPException covers a connection
        # that breaks mid-file (IncompleteRead); ValueError a malformed URL.
        raise DownloadError(f"Could not download {url}: {type(exc).__name__}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):  # cleaning up must not hide the real error
            tmp_path.unlink(missing_ok=True)  # after a successful rename there is nothing to remove
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
