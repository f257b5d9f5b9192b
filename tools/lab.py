"""`make lab`: open the course in JupyterLab, in a working copy that belongs to the learner.

The committed notebooks are what `make test` checks, so a learner never works in them. On first
use this copies notebooks/, exercises/ and solutions/ into workspace/ (ignored by git) and starts
JupyterLab there. Later runs add new or updated course notebooks, but never overwrite a notebook
the learner has changed: a `git pull` of course updates cannot lose anyone's work.

    python tools/lab.py [JupyterLab options]      # what `make lab LAB_ARGS="..."` runs

It is a script in the clone's tools/ folder, not a module of the installed package: what it
copies are the clone's own notebooks.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gptcourse.atomic import write_atomically
from gptcourse.run_folder import describe_os_error

PROG = "lab"  # how its messages begin
COURSE_FOLDERS = ("notebooks", "exercises", "solutions")
WORKSPACE = "workspace"
WORKSPACE_ENV = "GPTCOURSE_WORKSPACE"  # another folder for the working copies, if set
# What each workspace notebook looked like when the course last copied it in: a notebook whose
# bytes still match was not touched by the learner, so a newer course version may replace it.
MANIFEST = ".course-copies.json"
COURSE_ROOT = Path(__file__).resolve().parents[1]  # the clone this script lives in


@dataclass
class SyncReport:
    """What `sync_workspace` did, as paths relative to the workspace."""

    copied: list[str] = field(default_factory=list)    # new to the workspace
    updated: list[str] = field(default_factory=list)   # the course changed it, the learner had not
    kept: list[str] = field(default_factory=list)      # both changed it: the learner's copy stays

    def lines(self) -> list[str]:
        out = []
        if self.copied:
            out.append(f"copied {len(self.copied)} notebook(s) into your workspace")
        if self.updated:
            out.append(f"updated {len(self.updated)} notebook(s) you had not changed: "
                       + ", ".join(self.updated))
        for name in self.kept:
            out.append(f"kept your edited {WORKSPACE}/{name}; the course has a newer version in "
                       f"{name} (compare them, or delete your copy to get the new one next time)")
        return out


class LabError(Exception):
    """The workspace cannot be prepared; the message says what happened and what to do."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_manifest(workspace: Path) -> dict[str, str]:
    path = workspace / MANIFEST
    if path.exists() and not path.is_file():
        raise LabError(f"{path} is a folder, not the course's record of its copies: remove it "
                       f"(your notebooks are elsewhere and stay as they are), then run again")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}  # missing or damaged: then every existing copy counts as the learner's
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _write_bytes(path: Path, data: bytes) -> None:
    """A failed write (a full disk, a kill) leaves neither half a notebook nor a temp file."""
    write_atomically(path, lambda handle: handle.write(data))


def _failed(exc: OSError, workspace: Path, report: SyncReport) -> LabError:
    where = exc.filename or workspace
    done = (f" ({len(report.copied) + len(report.updated)} notebook(s) were brought in before "
            f"it)" if report.copied or report.updated else "")
    return LabError(f"could not bring the course's notebooks into {workspace}: {where}: "
                    f"{describe_os_error(exc)}{done}. Your own notebooks are unchanged. Free some "
                    f"space or fix the folder's permissions and run again, or set {WORKSPACE_ENV} "
                    f"to another folder")


def check_workspace(course_root: Path, workspace: Path) -> None:
    """Refuse a workspace that is a file, or that is the course's own folders (one line each)."""
    course_root, workspace = Path(course_root), Path(workspace)
    try:
        if workspace.exists() and not workspace.is_dir():
            raise LabError(f"the workspace {workspace} is a file, not a folder: move the file "
                           f"away, or set {WORKSPACE_ENV} to another folder")
        resolved, root = workspace.resolve(), course_root.resolve()
    except (OSError, RuntimeError) as exc:  # no permission to look, a loop of symbolic links
        raise LabError(f"cannot use the workspace {workspace} ({exc}): set {WORKSPACE_ENV} to "
                       f"another folder") from None
    committed = [root] + [root / folder for folder in COURSE_FOLDERS]
    if any(resolved == place or place in resolved.parents for place in committed[1:]) or \
            resolved == root:
        raise LabError(f"the workspace {workspace} is the course's own folder, whose notebooks "
                       f"`make test` checks: set {WORKSPACE_ENV} to a folder of its own (or "
                       f"unset it to use {root / WORKSPACE})")


def sync_workspace(course_root: Path, workspace: Path | None = None) -> SyncReport:
    """Bring the course's notebooks into the learner's workspace without losing their edits.

    Raises LabError (one line: what happened, what to do) if the workspace cannot be written;
    a learner's edited notebook is never replaced, whatever fails.
    """
    course_root = Path(course_root)
    workspace = Path(workspace) if workspace is not None else course_root / WORKSPACE
    check_workspace(course_root, workspace)
    manifest = _read_manifest(workspace)
    report = SyncReport()
    failure = None
    try:
        for folder in COURSE_FOLDERS:
            for source in sorted((course_root / folder).glob("*.ipynb")):
                name = f"{folder}/{source.name}"
                _sync_one(source, workspace / name, name, manifest, report)
    except OSError as exc:
        failure = exc
    if report.copied or report.updated or not (workspace / MANIFEST).exists():
        # Record what was copied, even after a failure: those copies are the course's, not yours.
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        try:
            workspace.mkdir(parents=True, exist_ok=True)
            _write_bytes(workspace / MANIFEST, text.encode("utf-8"))
        except OSError as exc:
            failure = failure or exc
    if failure is not None:
        raise _failed(failure, workspace, report)
    return report


def _sync_one(source: Path, target: Path, name: str, manifest: dict[str, str],
              report: SyncReport) -> None:
    course_digest = _digest(source)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_bytes(target, source.read_bytes())
        report.copied.append(name)
    elif manifest.get(name) == course_digest:
        return  # the course has not changed since we copied it
    elif target.is_file() and _digest(target) in (manifest.get(name), course_digest):
        _write_bytes(target, source.read_bytes())  # untouched by the learner
        report.updated.append(name)
    else:
        report.kept.append(name)
        return  # keep the old digest: the learner's copy is still "theirs"
    manifest[name] = course_digest


def is_root() -> bool:
    """True when running as the root user (containers, devcontainers, WSL often do)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def lab_command(workspace: Path, extra_args: list[str], as_root: bool | None = None) -> list[str]:
    """The `jupyter lab` command line: the workspace as the server root, chapters shown first."""
    command = [
        sys.executable, "-m", "jupyter", "lab",
        f"--ServerApp.root_dir={workspace}",
        # Open the file browser on the chapters; exercises/ and solutions/ sit beside them.
        "--LabApp.default_url=/lab/tree/notebooks",
    ]
    if is_root() if as_root is None else as_root:
        # JupyterLab refuses to start as root unless told that this is intended.
        command.append("--allow-root")
    return command + list(extra_args)


def start_jupyterlab(command: list[str]) -> None:
    """Replace this process with JupyterLab (Ctrl+C then stops it as usual). The tests swap this
    function for one that records the command, so no test option ships with the tool."""
    os.execv(command[0], command)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    course_root = COURSE_ROOT
    missing = [f"{folder}/" for folder in COURSE_FOLDERS if not (course_root / folder).is_dir()]
    if missing:
        print(f"{PROG}: {course_root} has no {', '.join(missing)}: this is not a whole clone of "
              f"the course; run `make lab` from a clone (git clone, then make lab)",
              file=sys.stderr)
        return 2
    try:
        workspace = Path(os.environ.get(WORKSPACE_ENV) or course_root / WORKSPACE).expanduser()
    except RuntimeError as exc:  # "~someone" who has no home folder here
        print(f"{PROG}: error: {WORKSPACE_ENV} cannot be used ({exc}): set it to a folder path",
              file=sys.stderr)
        return 1
    try:
        report = sync_workspace(course_root, workspace)
    except LabError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(f"{PROG}: {line}")
    print(f"{PROG}: you work in {workspace}, your own copy of the course; "
          f"the committed notebooks stay as they are for `make test`")
    start_jupyterlab(lab_command(workspace, args))
    return 0  # reached only when the tests have swapped start_jupyterlab


if __name__ == "__main__":
    sys.exit(main())
