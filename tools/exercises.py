"""Generate exercise notebooks from solution notebooks.

In a solution notebook, the code a learner should write sits between a `# BEGIN SOLUTION`
line and an `# END SOLUTION` line. The exercise version replaces that region with a stub
that raises NotImplementedError (keeping any `# HINT:` lines as comments), and clears all
outputs, so the learner starts from a clean notebook.

    python tools/exercises.py            # solutions/*.ipynb -> exercises/*.ipynb (make exercises)
    python tools/exercises.py --check    # exit 1 if exercises/ is out of date (make test runs it)

A script of the clone, not a module of the installed package: it reads and writes the clone's
own notebook folders, whichever folder it is run from.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
HINT = "# HINT:"
STUB_MESSAGE = "Your turn: write this part, then run the check cell below."
COURSE_ROOT = Path(__file__).resolve().parents[1]  # the clone this script lives in


class SolutionFormatError(ValueError):
    """A solution cell has unbalanced or nested BEGIN/END SOLUTION markers."""


def strip_solution(source: str, where: str = "cell") -> str:
    """Replace every BEGIN/END SOLUTION region of one code cell with a stub."""
    out: list[str] = []
    inside = False
    indent = ""
    hints: list[str] = []
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if _looks_like_marker(stripped) and stripped not in (BEGIN, END):
            # A misspelt marker would leak the solution into the exercise.
            raise SolutionFormatError(
                f"{where}, line {number}: {stripped!r} looks like a marker; "
                f"write it exactly as {BEGIN!r} or {END!r} on its own line"
            )
        if stripped == BEGIN:
            if inside:
                raise SolutionFormatError(f"{where}, line {number}: BEGIN SOLUTION inside another solution region")
            inside, indent, hints = True, line[: len(line) - len(line.lstrip())], []
        elif stripped == END:
            if not inside:
                raise SolutionFormatError(f"{where}, line {number}: END SOLUTION without a BEGIN SOLUTION")
            out.extend(indent + hint for hint in hints)
            out.append(f'{indent}raise NotImplementedError("{STUB_MESSAGE}")')
            inside = False
        elif inside:
            if stripped.startswith(HINT):
                hints.append(stripped)
        else:
            out.append(line)
    if inside:
        raise SolutionFormatError(f"{where}: BEGIN SOLUTION is never closed by END SOLUTION")
    return "\n".join(out)


def _looks_like_marker(stripped: str) -> bool:
    words = " ".join(stripped.lstrip("#").split()).upper()
    return stripped.startswith("#") and words in ("BEGIN SOLUTION", "END SOLUTION")


def _source_text(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def make_exercise(notebook: dict, name: str = "notebook") -> dict:
    """Return the exercise version of a solution notebook (the input is not changed)."""
    exercise = copy.deepcopy(notebook)
    for index, cell in enumerate(exercise.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        text = strip_solution(_source_text(cell), where=f"{name}, cell {index}")
        cell["source"] = text.splitlines(keepends=True)
        cell["outputs"] = []
        cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    return exercise


def render(notebook: dict) -> str:
    """Serialise a notebook the way Jupyter does (one-space indent, trailing newline)."""
    return json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def generate(solutions_dir: Path, exercises_dir: Path) -> list[Path]:
    """Write exercises_dir/<name>.ipynb for every solutions_dir/<name>.ipynb. Returns the paths."""
    exercises_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for solution in sorted(Path(solutions_dir).glob("*.ipynb")):
        notebook = json.loads(solution.read_text(encoding="utf-8"))
        target = exercises_dir / solution.name
        target.write_text(render(make_exercise(notebook, solution.name)), encoding="utf-8")
        written.append(target)
    return written


def out_of_date(solutions_dir: Path, exercises_dir: Path) -> list[str]:
    """Names of exercise notebooks that are missing, stale, or have no solution notebook."""
    problems = []
    expected = {}
    for solution in sorted(Path(solutions_dir).glob("*.ipynb")):
        notebook = json.loads(solution.read_text(encoding="utf-8"))
        expected[solution.name] = render(make_exercise(notebook, solution.name))
    for name, text in expected.items():
        target = Path(exercises_dir) / name
        if not target.exists():
            problems.append(f"{name}: missing from {exercises_dir}")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"{name}: differs from what {solutions_dir / name} generates")
    for extra in sorted(Path(exercises_dir).glob("*.ipynb")):
        if extra.name not in expected:
            problems.append(f"{extra.name}: has no solution notebook in {solutions_dir}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/exercises.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solutions", type=Path, default=COURSE_ROOT / "solutions")
    parser.add_argument("--exercises", type=Path, default=COURSE_ROOT / "exercises")
    parser.add_argument("--check", action="store_true", help="only report whether exercises/ is up to date")
    args = parser.parse_args(argv)
    if args.check:
        problems = out_of_date(args.solutions, args.exercises)
        for problem in problems:
            print(problem)
        print("exercises are up to date" if not problems else "run `make exercises` to regenerate")
        return 1 if problems else 0
    for path in generate(args.solutions, args.exercises):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
