"""Tests for the run folder: checked before the first step, locked, cleaned of stale temp files.

Tests run as root, where chmod does not stop writes; an unwritable folder is simulated by a
failing probe write, and a folder that cannot be created by a path under a regular file.
"""

import errno
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from gptcourse import run_folder
from gptcourse.run_folder import LOCK_NAME, RunFolderError, prepare_run_folder

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """A process id that no running process has (a killed run's)."""
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_a_fresh_folder_is_created_locked_and_unlocked(tmp_path):
    out = tmp_path / "runs" / "new"
    with prepare_run_folder(out, checkpoint_bytes=1000) as folder:
        assert (out / LOCK_NAME).read_text().split() == [str(os.getpid())]
        assert folder.checkpoint == out / "ckpt.pt"
    assert list(out.iterdir()) == []  # lock released, probe file removed


def test_out_naming_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder")
    with pytest.raises(RunFolderError, match="--out .*notes.txt is a file, not a folder: choose a folder"):
        prepare_run_folder(tmp_path / "notes.txt")


def test_folder_that_cannot_be_created_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder")
    with pytest.raises(RunFolderError, match="cannot create the folder --out .*run: a part of the "
                                             "path is a file, not a folder; choose another --out"):
        prepare_run_folder(tmp_path / "notes.txt" / "run")


@pytest.mark.parametrize("code, reason", [(errno.EACCES, "permission denied"),
                                          (errno.EROFS, "the file system is read-only"),
                                          (errno.ENOSPC, "the disk is full")])
def test_unwritable_folder_is_refused_before_training(tmp_path, monkeypatch, code, reason):
    def refuse(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(run_folder.os, "fsync", refuse)  # the probe write fails as it would there
    with pytest.raises(RunFolderError, match=f"cannot write into --out .*: {reason}"):
        prepare_run_folder(tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == []  # no probe file left


def test_too_little_free_space_is_refused(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5 * 10**5, 5 * 10**5))
    with pytest.raises(RunFolderError, match=r"has 0.5 MB free, but saving a checkpoint of about "
                                             r"1.0 MB needs 2.0 MB .*free some space or choose another --out"):
        prepare_run_folder(tmp_path / "run", checkpoint_bytes=10**6)
    with prepare_run_folder(tmp_path / "run", checkpoint_bytes=10**5):
        pass  # room for two checkpoints of that size


def test_a_second_process_holding_the_lock_is_named(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gptcourse.run_folder import prepare_run_folder; "
                               "f = prepare_run_folder(sys.argv[1]); print('locked', flush=True); time.sleep(60)",
         str(out)], env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=f"in use by another run \\(process {holder.pid} holds "
                                                 f".*run.lock\\): wait for it to finish, stop it "
                                                 f"\\(kill {holder.pid}\\), or choose another --out"):
            prepare_run_folder(out)
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()
    # Killed without clean-up, it left its lock behind: the next run takes it over.
    assert (out / LOCK_NAME).read_text().split() == [str(holder.pid)]
    with prepare_run_folder(out):
        assert (out / LOCK_NAME).read_text().split() == [str(os.getpid())]


@pytest.mark.parametrize("content", [f"{dead_pid()}\n", "", "garbage"])
def test_a_stale_lock_is_taken_over(tmp_path, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(content)
    with prepare_run_folder(out):
        assert (out / LOCK_NAME).read_text().split() == [str(os.getpid())]
    assert not (out / LOCK_NAME).exists()


def test_stale_temp_files_of_a_killed_save_are_removed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(b"the last good checkpoint")
    (out / "ckpt.ptx8k2.tmp").write_bytes(b"half a checkpoint")
    (out / "notes.tmp").write_bytes(b"not ours")
    with prepare_run_folder(out) as folder:
        assert [p.name for p in folder.removed_temp_files] == ["ckpt.ptx8k2.tmp"]
    assert sorted(p.name for p in out.iterdir()) == ["ckpt.pt", "notes.tmp"]
