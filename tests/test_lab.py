"""`make lab`: the learner's working copy, the JupyterLab command line, and a real server start."""

import errno
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tool_scripts import TOOLS, load_tool

from gptcourse import atomic

lab = load_tool("lab")
MANIFEST, lab_command, sync_workspace = lab.MANIFEST, lab.lab_command, lab.sync_workspace
ROOT = Path(__file__).resolve().parents[1]


def make_course(root: Path, chapters: dict[str, str]) -> Path:
    """A fake course: {"notebooks/01.ipynb": "text", ...} written under root."""
    for name, text in chapters.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    for folder in ("notebooks", "exercises", "solutions"):
        (root / folder).mkdir(exist_ok=True)
    return root


def test_first_sync_copies_every_course_notebook(tmp_path):
    course = make_course(tmp_path / "course", {"notebooks/01.ipynb": "a", "exercises/ch01.ipynb": "b",
                                               "solutions/ch01.ipynb": "c"})
    work = tmp_path / "work"
    report = sync_workspace(course, work)
    assert sorted(report.copied) == ["exercises/ch01.ipynb", "notebooks/01.ipynb", "solutions/ch01.ipynb"]
    assert (work / "notebooks/01.ipynb").read_text() == "a"
    assert (work / "exercises/ch01.ipynb").read_text() == "b"
    again = sync_workspace(course, work)
    assert again.copied == again.updated == again.kept == []


def test_learner_edits_survive_a_course_update(tmp_path):
    course = make_course(tmp_path / "course", {"notebooks/01.ipynb": "v1", "notebooks/02.ipynb": "v1"})
    work = tmp_path / "work"
    sync_workspace(course, work)
    (work / "notebooks/01.ipynb").write_text("my answers")     # the learner saves their work
    (course / "notebooks/01.ipynb").write_text("v2")           # a git pull changes both chapters
    (course / "notebooks/02.ipynb").write_text("v2")
    (course / "notebooks/03.ipynb").write_text("new")          # and adds one
    report = sync_workspace(course, work)
    assert report.kept == ["notebooks/01.ipynb"]
    assert report.updated == ["notebooks/02.ipynb"]
    assert report.copied == ["notebooks/03.ipynb"]
    assert (work / "notebooks/01.ipynb").read_text() == "my answers"
    assert (work / "notebooks/02.ipynb").read_text() == "v2"
    assert any("kept your edited" in line for line in report.lines())
    # Still the learner's on the next run: it is never overwritten later either.
    assert sync_workspace(course, work).kept == ["notebooks/01.ipynb"]
    assert (work / "notebooks/01.ipynb").read_text() == "my answers"


def test_a_damaged_manifest_never_costs_the_learner_their_work(tmp_path):
    course = make_course(tmp_path / "course", {"notebooks/01.ipynb": "v1"})
    work = tmp_path / "work"
    sync_workspace(course, work)
    (work / "notebooks/01.ipynb").write_text("my answers")
    (work / MANIFEST).write_text("{not json")
    (course / "notebooks/01.ipynb").write_text("v2")
    assert sync_workspace(course, work).kept == ["notebooks/01.ipynb"]
    assert (work / "notebooks/01.ipynb").read_text() == "my answers"


def run_lab(monkeypatch, capsys, course: Path, workspace) -> tuple[int, str]:
    """`python tools/lab.py` on a fake course, stopped before JupyterLab starts."""
    monkeypatch.setattr(lab, "COURSE_ROOT", course)
    monkeypatch.setattr(lab, "start_jupyterlab", lambda command: None)
    if workspace is None:
        monkeypatch.delenv(lab.WORKSPACE_ENV, raising=False)
    else:
        monkeypatch.setenv(lab.WORKSPACE_ENV, str(workspace))
    code = lab.main([])
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_workspace_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    course = make_course(tmp_path / "course", {"notebooks/01.ipynb": "v1"})
    (tmp_path / "ws").write_text("my shopping list")
    code, err = run_lab(monkeypatch, capsys, course, tmp_path / "ws")
    assert code == 1 and "ws is a file, not a folder: move the file away" in one_line(err)
    assert (tmp_path / "ws").read_text() == "my shopping list"


@pytest.mark.parametrize("where", ["", "notebooks", "solutions/sub"])
def test_workspace_that_is_the_course_itself_is_refused(tmp_path, monkeypatch, capsys, where):
    course = make_course(tmp_path / "course", {"notebooks/01.ipynb": "v1"})
    code, err = run_lab(monkeypatch, capsys, course, course / where)
    assert code == 1 and "is the course's own folder" in one_line(err)
    assert sorted(p.name for p in course.rglob("*")) == ["01.ipynb", "exercises", "notebooks",
                                                         "solutions"]


def test_manifest_that_is_a_folder_is_one_line(tmp_path, monkeypatch, capsys):
    course = make_course(tmp_path / "course", {"notebooks/01.ipynb": "v1"})
    (tmp_path / "ws" / MANIFEST).mkdir(parents=True)
    code, err = run_lab(monkeypatch, capsys, course, tmp_path / "ws")
    assert code == 1 and f"{MANIFEST} is a folder" in one_line(err) and "remove it" in err


@pytest.mark.parametrize("content", ["[" * 100_000, '{"notebooks/01.ipynb": 5}', "[1, 2]"])
def test_a_strange_manifest_counts_as_damaged(tmp_path, content):
    course = make_course(tmp_path / "course", {"notebooks/01.ipynb": "v1"})
    work = tmp_path / "work"
    sync_workspace(course, work)
    (work / "notebooks/01.ipynb").write_text("my answers")
    (work / MANIFEST).write_text(content)  # deeply nested JSON used to raise RecursionError
    (course / "notebooks/01.ipynb").write_text("v2")
    assert sync_workspace(course, work).kept == ["notebooks/01.ipynb"]
    assert (work / "notebooks/01.ipynb").read_text() == "my answers"


def test_a_disk_that_fills_while_copying_leaves_no_temp_file(tmp_path, monkeypatch, capsys):
    course = make_course(tmp_path / "course", {"notebooks/01.ipynb": "v1", "notebooks/02.ipynb": "v1",
                                               "notebooks/03.ipynb": "new"})
    work = tmp_path / "ws"
    sync_workspace(course, work)
    (work / "notebooks/03.ipynb").unlink()
    (work / "notebooks/01.ipynb").write_text("my answers")
    (course / "notebooks/01.ipynb").write_text("v2")
    (course / "notebooks/02.ipynb").write_text("v2")
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])  # half of it fits, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    code, err = run_lab(monkeypatch, capsys, course, work)
    assert code == 1 and "the disk is full" in one_line(err) and "Your own notebooks are unchanged" in err
    assert sorted(p.name for p in work.rglob("*")) == [MANIFEST, "01.ipynb", "02.ipynb", "notebooks"]
    assert (work / "notebooks/01.ipynb").read_text() == "my answers"  # never lost
    assert (work / "notebooks/02.ipynb").read_text() == "v1"  # the old copy, whole
    monkeypatch.setattr(atomic.os, "fdopen", real_fdopen)  # space again: the update goes through
    assert sync_workspace(course, work).updated == ["notebooks/02.ipynb"]
    assert (work / "notebooks/01.ipynb").read_text() == "my answers"


def test_a_read_only_workspace_is_one_line(tmp_path, monkeypatch, capsys):
    course = make_course(tmp_path / "course", {"notebooks/01.ipynb": "v1"})

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "ws"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)  # as root, chmod would not stop us
    code, err = run_lab(monkeypatch, capsys, course, tmp_path / "ws")
    assert code == 1 and "the file system is read-only" in one_line(err)


def test_a_course_root_without_notebooks_is_named(tmp_path, monkeypatch, capsys):
    course = make_course(tmp_path / "course", {"exercises/ch01.ipynb": "b"})
    (course / "notebooks").rmdir()
    code, err = run_lab(monkeypatch, capsys, course, tmp_path / "ws")
    assert code == 2 and "has no notebooks/: this is not a whole clone" in one_line(err)


def test_a_first_run_copies_the_course_then_starts_jupyterlab_there(tmp_path, monkeypatch, capsys):
    course = make_course(tmp_path / "course", {"notebooks/01.ipynb": "v1"})
    started = []
    monkeypatch.setattr(lab, "COURSE_ROOT", course)
    monkeypatch.setattr(lab, "start_jupyterlab", started.append)
    monkeypatch.delenv(lab.WORKSPACE_ENV, raising=False)
    assert lab.main(["--no-browser"]) == 0
    assert (course / "workspace/notebooks/01.ipynb").read_text() == "v1"
    assert "lab: copied 1 notebook(s) into your workspace" in capsys.readouterr().out
    [command] = started
    assert f"--ServerApp.root_dir={course / 'workspace'}" in command
    assert command[-1] == "--no-browser"


def test_lab_command_adds_allow_root_only_for_root(tmp_path):
    as_root = lab_command(tmp_path, ["--port", "8899", "--no-browser"], as_root=True)
    as_user = lab_command(tmp_path, [], as_root=False)
    assert "--allow-root" in as_root and "--allow-root" not in as_user
    assert as_root[-2:] == ["--port", "8899", "--no-browser"][-2:] and "8899" in as_root
    assert f"--ServerApp.root_dir={tmp_path}" in as_user
    assert "--LabApp.default_url=/lab/tree/notebooks" in as_user


def test_make_lab_passes_lab_args_through():
    result = subprocess.run(["make", "-n", "lab", "LAB_ARGS=--port 8899 --no-browser"], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    assert "tools/lab.py --port 8899 --no-browser" in result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str, token: str):
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_jupyterlab_serves_chapters_exercises_and_solutions(tmp_path):
    """Start the real server the way `make lab` does, on loopback, and ask it for each folder."""
    pytest.importorskip("jupyterlab")
    port, token = _free_port(), "gptcourse-test"
    env = dict(os.environ, GPTCOURSE_WORKSPACE=str(tmp_path / "workspace"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"))
    server = subprocess.Popen(
        [sys.executable, str(TOOLS / "lab.py"), "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                listing = _get_json(f"{base}/api/contents", token)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("JupyterLab did not start (as this user) within 90 s") from None
                time.sleep(0.5)
        assert {"notebooks", "exercises", "solutions"} <= {item["name"] for item in listing["content"]}
        for folder in ("notebooks", "exercises", "solutions"):
            names = {item["name"] for item in _get_json(f"{base}/api/contents/{folder}", token)["content"]}
            assert {p.name for p in (ROOT / folder).glob("*.ipynb")} <= names, folder
        specs = _get_json(f"{base}/api/kernelspecs", token)["kernelspecs"]
        chapter = json.loads((ROOT / "notebooks/01_data.ipynb").read_text(encoding="utf-8"))
        wanted = chapter["metadata"]["kernelspec"]
        # The notebook names a kernel the server has, with the same display name: no dialog, no change.
        assert wanted["name"] in specs
        assert specs[wanted["name"]]["spec"]["display_name"] == wanted["display_name"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (tmp_path / "workspace/exercises/ch01_data.ipynb").is_file()


def test_a_workspace_under_a_file_or_in_a_link_loop_is_one_line(tmp_path, monkeypatch, capsys):
    course = make_course(tmp_path / "course", {"notebooks/01.ipynb": "v1"})
    (tmp_path / "file").write_text("x")
    code, err = run_lab(monkeypatch, capsys, course, tmp_path / "file" / "ws")
    assert code == 1 and "a part of the path is a file" in one_line(err)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    code, err = run_lab(monkeypatch, capsys, course, tmp_path / "loop" / "ws")
    assert code == 1 and one_line(err).startswith("lab: error:")
    code, err = run_lab(monkeypatch, capsys, course, "~no-such-user-here/ws")
    assert code == 1 and "cannot be used" in one_line(err)
