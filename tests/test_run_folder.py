"""Tests for the run folder: checked before the first step, locked, cleaned of stale temp files.

Tests run as root, where chmod does not stop writes; an unwritable folder is simulated by a
failing probe write, and a folder that cannot be created by a path under a regular file.
"""

import errno
import os
import subprocess
import sys
import threading
import time
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
        # The owner's pid, when it started (tells a reused pid apart) and this run's own id.
        assert (out / LOCK_NAME).read_text().split() == [
            str(os.getpid()), run_folder.process_start(os.getpid()), folder.run_id]
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
    assert (out / LOCK_NAME).read_text().split()[0] == str(holder.pid)
    with prepare_run_folder(out):
        assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())


@pytest.mark.parametrize("content", [f"{dead_pid()}\n", f"{dead_pid()} 12345 abc\n", "",
                                     "garbage", "99999999999999999999999\n", "-5\n"])
def test_a_stale_lock_is_taken_over(tmp_path, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(content)
    long_ago = time.time() - run_folder.LOCK_GRACE_S - 60
    os.utime(out / LOCK_NAME, (long_ago, long_ago))  # an unreadable lock counts once it is old
    with prepare_run_folder(out):
        assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert not (out / LOCK_NAME).exists()


def test_an_empty_lock_of_a_run_starting_now_is_not_taken(tmp_path, monkeypatch):
    """The race: run A has created the lock but not yet written its pid when run B looks.

    B used to read the empty lock as stale and take it, and both ran into one folder. Now B
    waits: once A's pid is in the file, B refuses, naming A.
    """
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text("")  # A, between its exclusive create and its write
    a_pid = os.getppid()  # a live process that is not this one stands in for run A
    record = f"{a_pid} {run_folder.process_start(a_pid)} a-run\n"
    writer = threading.Timer(0.5, (out / LOCK_NAME).write_text, [record])
    writer.start()
    try:
        with pytest.raises(RunFolderError, match=f"in use by another run \\(process {a_pid} "):
            prepare_run_folder(out)
    finally:
        writer.join()
    assert (out / LOCK_NAME).read_text() == record  # A's lock is untouched
    # A lock that stays empty is held for the grace period, then counts as left behind.
    monkeypatch.setattr(run_folder, "LOCK_GRACE_S", 0.5)
    (out / LOCK_NAME).write_text("")
    started = time.monotonic()
    with prepare_run_folder(out):
        assert time.monotonic() - started >= 0.3
        assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())


def test_a_lock_of_a_live_run_is_refused_and_a_reused_pid_is_not(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    other = os.getppid()  # alive, and not this process
    (out / LOCK_NAME).write_text(f"{other} {run_folder.process_start(other)} a-run\n")
    with pytest.raises(RunFolderError, match=f"process {other} holds"):
        prepare_run_folder(out)
    # The same pid with another start time: the run ended and its pid went to a new process
    # (pid reuse). That process is not a training run: the lock must not hold forever.
    (out / LOCK_NAME).write_text(f"{other} 1 a-run\n")
    if run_folder.process_start(other) is None:
        pytest.skip("this system does not tell when a process started")
    with prepare_run_folder(out):
        assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())


def test_the_lock_appears_with_its_record_already_in_it(tmp_path, monkeypatch):
    seen = []
    real_link = os.link

    def spy(source, target):
        seen.append(Path(source).read_text())  # what the lock holds at the moment it appears
        return real_link(source, target)

    monkeypatch.setattr(run_folder.os, "link", spy)
    with prepare_run_folder(tmp_path / "run") as folder:
        assert seen == [(tmp_path / "run" / LOCK_NAME).read_text()]
        assert seen[0].split()[0] == str(os.getpid()) and seen[0].split()[2] == folder.run_id
    assert list((tmp_path / "run").iterdir()) == []  # no temporary file left

    def no_links(source, target):
        raise OSError(errno.EPERM, "hard links not supported here")

    monkeypatch.setattr(run_folder.os, "link", no_links)  # e.g. some network file systems
    with prepare_run_folder(tmp_path / "run") as folder:
        assert (tmp_path / "run" / LOCK_NAME).read_text().split()[2] == folder.run_id
    assert list((tmp_path / "run").iterdir()) == []


def test_processes_racing_for_one_folder_get_one_lock(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{dead_pid()}\n")  # a stale lock they all try to take over
    go = tmp_path / "go"
    code = ("import os, sys, time\n"
            "from gptcourse.run_folder import RunFolderError, prepare_run_folder\n"
            "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
            "try:\n    f = prepare_run_folder(sys.argv[1]); print('locked', flush=True)\n"
            "except RunFolderError: print('refused', flush=True)\n"
            "time.sleep(3)\n")
    racers = [subprocess.Popen([sys.executable, "-c", code, str(out), str(go)], text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE)
              for _ in range(6)]
    try:
        time.sleep(2)  # let them all start and wait
        go.write_text("")
        results = [racer.stdout.readline().strip() for racer in racers]
    finally:
        for racer in racers:
            racer.kill()
            racer.wait(timeout=30)
            racer.stdout.close()
    assert sorted(results) == ["locked"] + ["refused"] * 5


def test_a_lock_that_is_a_folder_is_named_and_kept(tmp_path):
    out = tmp_path / "run"
    (out / LOCK_NAME).mkdir(parents=True)
    with pytest.raises(RunFolderError, match="run.lock is a folder .*not a lock file: if no run "
                                             "uses .*remove it"):
        prepare_run_folder(out)
    assert (out / LOCK_NAME).is_dir()


@pytest.mark.parametrize("out", [None, 5, ""])
def test_out_that_is_not_a_path_is_refused(out):
    with pytest.raises(TypeError, match="out must be the path of a folder"):
        prepare_run_folder(out)


def test_releasing_in_a_folder_that_became_read_only_warns_in_one_line(tmp_path, monkeypatch):
    """The save error of a folder that became read-only must not turn into a traceback."""
    out = tmp_path / "run"

    def read_only(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system")

    with pytest.raises(RuntimeError, match="the save failed"):  # the run's own error comes out
        with pytest.warns(run_folder.RunFolderWarning, match=r"could not remove the lock .*\(the "
                                                             r"file system is read-only\); the next"):
            with prepare_run_folder(out):
                monkeypatch.setattr(Path, "unlink", read_only)
                raise RuntimeError("the save failed")
    monkeypatch.undo()
    with prepare_run_folder(out):  # the lock left behind names this process: taken over
        pass


def test_stale_temp_files_of_a_killed_save_are_removed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(b"the last good checkpoint")
    (out / "ckpt.ptx8k2.tmp").write_bytes(b"half a checkpoint")
    (out / "notes.tmp").write_bytes(b"not ours")
    with prepare_run_folder(out) as folder:
        assert [p.name for p in folder.removed_temp_files] == ["ckpt.ptx8k2.tmp"]
    assert sorted(p.name for p in out.iterdir()) == ["ckpt.pt", "notes.tmp"]


def test_out_with_a_nul_character_is_refused(tmp_path):
    with pytest.raises(RunFolderError, match="NUL character"):
        prepare_run_folder(str(tmp_path / "a\x00b"))
