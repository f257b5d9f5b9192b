"""The exercise generator, and the committed exercise notebooks it produces."""

import json
from pathlib import Path

import pytest
from tool_scripts import load_tool

exercises = load_tool("exercises")
STUB_MESSAGE, SolutionFormatError = exercises.STUB_MESSAGE, exercises.SolutionFormatError
generate, main, render = exercises.generate, exercises.main, exercises.render
make_exercise, out_of_date = exercises.make_exercise, exercises.out_of_date
strip_solution = exercises.strip_solution

ROOT = Path(__file__).resolve().parents[1]
STUB = f'raise NotImplementedError("{STUB_MESSAGE}")'

SOLUTION_CELL = """\
def add_one(x):
    \"\"\"Add one.\"\"\"
    # BEGIN SOLUTION
    # HINT: one line is enough
    y = x + 1
    return y
    # END SOLUTION

print(add_one(1))"""


def notebook(*sources: str) -> dict:
    cells = [{"cell_type": "markdown", "id": "intro", "metadata": {}, "source": ["# Title\n"]}]
    for i, source in enumerate(sources):
        cells.append({
            "cell_type": "code", "id": f"c{i}", "execution_count": i + 1,
            "metadata": {"execution": {"iopub.status.idle": "2024-01-01"}},
            "outputs": [{"name": "stdout", "output_type": "stream", "text": ["2\n"]}],
            "source": source.splitlines(keepends=True),
        })
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


# --- strip_solution -----------------------------------------------------------------------------
def test_strip_solution_keeps_indentation_and_hints():
    assert strip_solution(SOLUTION_CELL) == (
        "def add_one(x):\n"
        '    """Add one."""\n'
        "    # HINT: one line is enough\n"
        f"    {STUB}\n"
        "\n"
        "print(add_one(1))"
    )


def test_strip_solution_several_regions_and_top_level():
    source = "# BEGIN SOLUTION\na = 1\n# END SOLUTION\nclass A:\n    def f(self):\n        # BEGIN SOLUTION\n        return 2\n        # END SOLUTION\n"
    assert strip_solution(source) == f"{STUB}\nclass A:\n    def f(self):\n        {STUB}"


def test_code_without_markers_is_unchanged():
    assert strip_solution("x = 1\nprint(x)") == "x = 1\nprint(x)"


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("# BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n# END SOLUTION", "line 2: END SOLUTION without a BEGIN"),
        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "line 2: BEGIN SOLUTION inside"),
        ("#BEGIN SOLUTION\nx = 1\n# END SOLUTION", "looks like a marker"),
        ("# begin solution\nx = 1\n# END SOLUTION", "looks like a marker"),
    ],
)
def test_unbalanced_or_misspelt_markers_raise(source, match):
    with pytest.raises(SolutionFormatError, match=match):
        strip_solution(source, where="nb.ipynb, cell 3")


# --- make_exercise ------------------------------------------------------------------------------
def test_make_exercise_clears_outputs_and_counts():
    solution = notebook(SOLUTION_CELL, "print(1)")
    exercise = make_exercise(solution)
    code = [c for c in exercise["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert all("execution" not in c["metadata"] for c in code)
    assert STUB in "".join(code[0]["source"])
    assert "y = x + 1" not in "".join(code[0]["source"])
    assert exercise["cells"][0] == solution["cells"][0]  # markdown untouched
    assert solution["cells"][1]["outputs"]  # the input notebook is not changed


def test_make_exercise_names_the_cell_in_errors():
    with pytest.raises(SolutionFormatError, match=r"ch99\.ipynb, cell 2"):
        make_exercise(notebook("x = 1", "# BEGIN SOLUTION\n"), "ch99.ipynb")


def test_generate_check_and_main(tmp_path, capsys):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    (solutions / "ch99_demo.ipynb").write_text(render(notebook(SOLUTION_CELL)))
    assert out_of_date(solutions, exercises) == ["ch99_demo.ipynb: missing from " + str(exercises)]
    assert main(["--solutions", str(solutions), "--exercises", str(exercises)]) == 0
    assert out_of_date(solutions, exercises) == []
    assert main(["--check", "--solutions", str(solutions), "--exercises", str(exercises)]) == 0
    (exercises / "ch99_demo.ipynb").write_text("{}")
    (exercises / "ch98_orphan.ipynb").write_text("{}")
    assert out_of_date(solutions, exercises) == [
        f"ch99_demo.ipynb: differs from what {solutions / 'ch99_demo.ipynb'} generates",
        f"ch98_orphan.ipynb: has no solution notebook in {solutions}",
    ]
    assert main(["--check", "--solutions", str(solutions), "--exercises", str(exercises)]) == 1
    assert "run `make exercises` to regenerate" in capsys.readouterr().out


# --- the committed notebooks --------------------------------------------------------------------
def test_committed_exercises_are_up_to_date(tmp_path):
    # Regenerating into a fresh folder must give byte-identical files to the committed ones.
    fresh = generate(ROOT / "solutions", tmp_path)
    assert fresh, "no solution notebooks found"
    for path in fresh:
        committed = ROOT / "exercises" / path.name
        assert committed.exists(), f"{path.name}: run `make exercises`"
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{path.name} is stale: run `make exercises`"
        )
    assert out_of_date(ROOT / "solutions", ROOT / "exercises") == []


EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))


@pytest.mark.parametrize("path", EXERCISES, ids=[p.name for p in EXERCISES])
def test_exercise_notebooks_are_clean(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    text = "".join("".join(c["source"]) for c in nb["cells"])
    assert "NotImplementedError" in text, "an exercise needs at least one stub"
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
