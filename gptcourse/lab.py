"""`make lab`: open the course in JupyterLab, in a working copy that belongs to the learner.

The committed notebooks are what `make test` checks, so a learner never works in them. On first
use this copies notebooks/, exercises/ and solutions/ into workspace/ (ignored by git) and starts
JupyterLab there. Later runs add new or updated course notebooks, but never overwrite a notebook
the learner has changed: a `git pull` of course updates cannot lose anyone's work.

    python -m gptcourse.lab [JupyterLab options]      # what `make lab LAB_ARGS="..."` runs
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

COURSE_FOLDERS = ("notebooks", "exercises", "solutions")
WORKSPACE = "workspace"
WORKSPACE_ENV = "GPTCOURSE_WORKSPACE"  # another folder for the working copies, if set
# What each workspace notebook looked like when the course last copied it in: a notebook whose
# bytes still match was not touched by the learner, so a newer course version may replace it.
MANIFEST = ".course-copies.json"


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


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_manifest(workspace: Path) -> dict[str, str]:
    try:
        data = json.loads((workspace / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: then every existing copy counts as the learner's
    return data if isinstance(data, dict) else {}


def _write_atomically(path: Path, data: bytes) -> None:
    # A temp file renamed into place: an interrupted run never leaves half a notebook.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def sync_workspace(course_root: Path, workspace: Path | None = None) -> SyncReport:
    """Bring the course's notebooks into the learner's workspace without losing their edits."""
    course_root = Path(course_root)
    workspace = Path(workspace) if workspace is not None else course_root / WORKSPACE
    manifest = _read_manifest(workspace)
    report = SyncReport()
    for folder in COURSE_FOLDERS:
        for source in sorted((course_root / folder).glob("*.ipynb")):
            name = f"{folder}/{source.name}"
            target = workspace / name
            course_digest = _digest(source)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_atomically(target, source.read_bytes())
                report.copied.append(name)
            elif manifest.get(name) == course_digest:
                continue  # the course has not changed since we copied it
            elif _digest(target) in (manifest.get(name), course_digest):
                _write_atomically(target, source.read_bytes())  # untouched by the learner
                report.updated.append(name)
            else:
                report.kept.append(name)
                continue  # keep the old digest: the learner's copy is still "theirs"
            manifest[name] = course_digest
    workspace.mkdir(parents=True, exist_ok=True)
    _write_atomically(workspace / MANIFEST,
                      (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    return report


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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    course_root = Path(__file__).resolve().parents[1]
    if not all((course_root / folder).is_dir() for folder in COURSE_FOLDERS):
        print(f"gptcourse.lab: {course_root} has no notebooks/, exercises/ and solutions/; "
              f"run `make lab` from a clone of the course", file=sys.stderr)
        return 2
    workspace = Path(os.environ.get(WORKSPACE_ENV) or course_root / WORKSPACE).expanduser()
    for line in sync_workspace(course_root, workspace).lines():
        print(f"gptcourse.lab: {line}")
    print(f"gptcourse.lab: you work in {workspace}, your own copy of the course; "
          f"the committed notebooks stay as they are for `make test`")
    command = lab_command(workspace, args)
    if os.environ.get("GPTCOURSE_LAB_DRY_RUN"):
        print(" ".join(command))
        return 0
    os.execv(command[0], command)  # JupyterLab replaces this process (Ctrl+C stops it as usual)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
