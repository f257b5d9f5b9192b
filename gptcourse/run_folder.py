"""The run folder (`--out`): checked before the first step, locked for the run's lifetime.

    with prepare_run_folder("runs/poems", checkpoint_bytes=estimate) as run:
        ...train, saving run.checkpoint every N steps...

`prepare_run_folder` creates the folder, writes and removes a probe file, compares the free
space with a checkpoint's size, takes the lock `OUT/run.lock` (the owner's process id, its start
time and a run id), and removes temporary files that a run killed mid-save left behind. Under
torchrun only rank 0 calls it. A lock whose process no longer exists (a crashed or killed run),
or whose process id now names a process that started later, is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

from .processes import MAX_PID, pid_alive, process_start
from .validate import ArgumentTypeError, CourseWarning, require_int

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


# A lock file that cannot be read (empty, or garbage) may belong to a run that is writing it at
# this moment: it counts as held for this long after its last change, then as left behind.
LOCK_GRACE_S = 10.0


class RunFolderWarning(CourseWarning):
    """Something about the run folder worth a line, though the run itself is fine."""


@dataclass(frozen=True)
class LockRecord:
    """What a lock file says: the owner's process id, its start time and the run's own id."""

    pid: int
    start: str | None = None   # None: not recorded (an older lock, or a system that cannot tell)
    run_id: str | None = None  # None: an older lock that holds only the process id

    def line(self) -> str:
        return f"{self.pid} {self.start or '-'} {self.run_id or '-'}\n"


def _read_lock(lock: Path) -> LockRecord | None:
    """The record in a lock file, or None if it cannot be read (being written, empty, garbage)."""
    try:
        parts = lock.read_text(encoding="ascii").split()
        pid = int(parts[0])
    except (OSError, ValueError, IndexError):
        return None
    if not 0 < pid <= MAX_PID or len(parts) > 3:
        return None
    start, run_id = (parts[1:] + ["-", "-"])[:2]
    return LockRecord(pid, None if start == "-" else start, None if run_id == "-" else run_id)


def _lock_owner(lock: Path) -> int | None:
    """The pid written in the lock file, or None if it cannot be read (being written, or garbage)."""
    record = _read_lock(lock)
    return record.pid if record else None


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_dev, a.st_size, a.st_mtime_ns) == (b.st_ino, b.st_dev, b.st_size,
                                                              b.st_mtime_ns)


class RunFolder:
    """A checked, locked run folder; use it as a context manager (the lock goes on exit)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = path / LOCK_NAME
        self.checkpoint = path / CHECKPOINT_NAME
        self.removed_temp_files: list[Path] = []
        self.run_id = uuid.uuid4().hex[:16]
        self._locked = False

    def acquire(self) -> None:
        """Take the lock, or raise RunFolderError naming the process that holds it.

        The lock file appears with its whole record in it (written to a temporary file first,
        then linked into place), so another run never sees it half-written.
        """
        mine = LockRecord(os.getpid(), process_start(os.getpid()), self.run_id)
        give_up = time.monotonic() + LOCK_GRACE_S + 2
        for _ in range(1000):
            if self._create(mine.line()):
                self._locked = True
                return
            try:
                seen = os.lstat(self.lock)
            except FileNotFoundError:
                continue  # removed in the meantime: try again
            except OSError as exc:
                raise RunFolderError(f"cannot read the lock {self.lock}: "
                                     f"{describe_os_error(exc)}") from None
            if not stat.S_ISREG(seen.st_mode):
                raise RunFolderError(
                    f"{self.lock} is a folder (or another kind of file), not a lock file: if no "
                    f"run uses {self.path}, remove it (rmdir {self.lock}), or choose another --out")
            record = _read_lock(self.lock)
            if record is None:
                # Empty or unreadable: maybe a run that is writing it right now. Held for a while.
                if time.time() - seen.st_mtime < LOCK_GRACE_S:
                    if time.monotonic() > give_up:
                        raise RunFolderError(
                            f"{self.lock} is unreadable and was changed moments ago, as if another "
                            f"run were starting in {self.path}: try again in a few seconds, or "
                            f"choose another --out")
                    time.sleep(0.1)
                    continue
            elif record.pid != os.getpid() and pid_alive(record.pid) and not _reused(record):
                raise RunFolderError(
                    f"{self.path} is in use by another run (process {record.pid} holds {self.lock}): "
                    f"wait for it to finish, stop it (kill {record.pid}), or choose another --out")
            # The owner is gone (a crashed or killed run, or its pid now names another
            # process), or the file was left unreadable long ago: the lock is stale.
            self._break_stale(seen)
        raise RunFolderError(f"could not take the lock {self.lock}: another run keeps recreating it")

    def _create(self, line: str) -> bool:
        """Create the lock file holding `line`; False if a lock file already exists."""
        tmp = self.path / f"{LOCK_NAME}.{self.run_id}.tmp"
        try:
            with open(tmp, "w", encoding="ascii") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, self.lock)  # appears whole, or fails if a lock is already there
                return True
            except FileExistsError:
                return False
            except OSError:
                pass  # a file system without hard links: exclusive create, then write
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(line)  # others wait LOCK_GRACE_S for an empty lock: time enough
            return True
        except OSError as exc:
            raise RunFolderError(f"cannot create the lock {self.lock}: "
                                 f"{describe_os_error(exc)}; choose another --out") from None
        finally:
            with contextlib.suppress(OSError):  # cleaning up must not hide the real error
                tmp.unlink(missing_ok=True)

    def _break_stale(self, seen: os.stat_result) -> None:
        """Remove the stale lock `seen`, unless another run replaced it in the meantime."""
        aside = self.path / f"{LOCK_NAME}.{self.run_id}.stale"
        try:
            os.rename(self.lock, aside)  # atomic: of two runs that both found it stale, one wins
        except FileNotFoundError:
            return  # the other run took it away first
        except OSError as exc:
            raise RunFolderError(f"cannot remove the stale lock {self.lock}: "
                                 f"{describe_os_error(exc)}") from None
        try:
            if not _same_file(os.lstat(aside), seen):
                # Another run broke the stale lock and took its own between our look and the
                # rename: what we moved is that run's lock. Put it back.
                try:
                    os.link(aside, self.lock)
                except FileExistsError:
                    pass
                except OSError:
                    os.replace(aside, self.lock)
        finally:
            with contextlib.suppress(OSError):
                aside.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if this run still owns it; never raises (a warning if it cannot)."""
        if not self._locked:
            return
        self._locked = False
        try:
            record = _read_lock(self.lock)
            if record is not None and record.run_id == self.run_id:
                self.lock.unlink()
        except OSError as exc:
            warnings.warn(f"could not remove the lock {self.lock} ({describe_os_error(exc)}); "
                          f"the next run into {self.path} takes it over, as this process will "
                          f"have ended", RunFolderWarning, stacklevel=2)

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


def _reused(record: LockRecord) -> bool:
    """True if the lock's process id now names another process (the run's process ended)."""
    if record.start is None:
        return False  # not recorded: a live process with that id counts as the owner
    now = process_start(record.pid)
    return now is not None and now != record.start


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
        with contextlib.suppress(OSError):
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
    if not isinstance(out, (str, os.PathLike)) or str(out) == "":
        raise ArgumentTypeError(f"out must be the path of a folder for the run (a str or Path), "
                                f"got {out!r}")
    if "\x00" in str(out):
        raise RunFolderError(f"--out {str(out)!r} holds a NUL character, which no file name "
                             f"may: choose another --out")
    checkpoint_bytes = require_int("checkpoint_bytes", checkpoint_bytes, low=0)
    folder = RunFolder(Path(out))
    check_writable(folder.path, checkpoint_bytes)
    folder.acquire()
    try:
        folder.remove_stale_temp_files()
    except OSError as exc:
        folder.release()
        raise RunFolderError(f"cannot remove a temporary file left in --out {folder.path}: "
                             f"{describe_os_error(exc)}; remove it by hand or choose another "
                             f"--out") from None
    return folder
