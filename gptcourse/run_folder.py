"""The run folder (`--out`): checked before the first step, locked for the run's lifetime.

    with prepare_run_folder("runs/poems", checkpoint_bytes=estimate) as run:
        ...train, saving run.checkpoint every N steps...

`prepare_run_folder` creates the folder, writes and removes a probe file, compares the free
space with a checkpoint's size, takes the lock `OUT/run.lock` (the owner's process id), and
removes temporary files that a run killed mid-save left behind. Under torchrun only rank 0
calls it. A lock whose process no longer exists (a crashed or killed run) is taken over.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

LOCK_NAME = "run.lock"
CHECKPOINT_NAME = "ckpt.pt"
# Saving writes a new checkpoint next to the old one before replacing it: room for two.
SPACE_FACTOR = 2


class RunFolderError(RuntimeError):
    """The run folder cannot be used (not writable, full, or in use by another run)."""


def describe_os_error(exc: BaseException) -> str:
    """One plain phrase for a failed write: "the disk is full", "permission denied", ..."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return "the disk is full (no space left on the device)"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied (this user may not write there)"
    if code == errno.EROFS:
        return "the file system is read-only"
    if code in (errno.ENOTDIR, errno.EEXIST):
        return "a part of the path is a file, not a folder"
    text = getattr(exc, "strerror", None) or (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, but belongs to another user
    return True


def _lock_owner(lock: Path) -> int | None:
    """The pid written in the lock file, or None if it cannot be read (being written, or garbage)."""
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class RunFolder:
    """A checked, locked run folder; use it as a context manager (the lock goes on exit)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = path / LOCK_NAME
        self.checkpoint = path / CHECKPOINT_NAME
        self.removed_temp_files: list[Path] = []
        self._locked = False

    def acquire(self) -> None:
        """Take the lock, or raise RunFolderError naming the process that holds it."""
        for _ in range(3):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _lock_owner(self.lock)
                if owner is not None and owner != os.getpid() and _pid_alive(owner):
                    raise RunFolderError(
                        f"{self.path} is in use by another run (process {owner} holds {self.lock}): "
                        f"wait for it to finish, stop it (kill {owner}), or choose another --out"
                    ) from None
                # The owner is gone (a crashed or killed run): the lock is stale, take it over.
                self.lock.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()}\n")
            self._locked = True
            return
        raise RunFolderError(f"could not take the lock {self.lock}: another run keeps recreating it")

    def release(self) -> None:
        """Remove the lock if this process still owns it."""
        if self._locked and _lock_owner(self.lock) == os.getpid():
            self.lock.unlink(missing_ok=True)
        self._locked = False

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete `ckpt.pt*.tmp` files left by a run killed mid-save (call with the lock held)."""
        for tmp in sorted(self.path.glob(CHECKPOINT_NAME + "*.tmp")):
            tmp.unlink(missing_ok=True)
            self.removed_temp_files.append(tmp)
        return self.removed_temp_files

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def check_writable(path: Path, checkpoint_bytes: int = 0) -> None:
    """Create `path`, write and remove a probe file, and compare free space with a checkpoint."""
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--out {path} is a file, not a folder: choose a folder name "
                             f"(it is created if needed)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the folder --out {path}: {describe_os_error(exc)}; "
                             f"choose another --out") from None
    probe = path / f".write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"gptcourse checks that this folder is writable\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise RunFolderError(f"cannot write into --out {path}: {describe_os_error(exc)}; "
                             f"choose another --out or fix the folder's permissions") from None
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(path).free
    needed = SPACE_FACTOR * checkpoint_bytes
    if needed > free:
        raise RunFolderError(
            f"--out {path} has {free / 1e6:,.1f} MB free, but saving a checkpoint of about "
            f"{checkpoint_bytes / 1e6:,.1f} MB needs {needed / 1e6:,.1f} MB (the new file is written "
            f"before the old one is replaced): free some space or choose another --out")


def prepare_run_folder(out: str | Path, checkpoint_bytes: int = 0) -> RunFolder:
    """Check `out` (created, writable, room for a checkpoint), lock it and clean stale temp files.

    Returns a locked RunFolder; use it in a `with` block so the lock is released at the end.
    Raises RunFolderError with a one-line explanation and fix.
    """
    folder = RunFolder(Path(out))
    check_writable(folder.path, checkpoint_bytes)
    folder.acquire()
    try:
        folder.remove_stale_temp_files()
    except OSError:
        folder.release()
        raise
    return folder
