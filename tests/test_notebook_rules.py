"""The rules that keep the stored notebooks valid on any machine (design.md, "Notebook rules")."""

import json
import os
import re
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path

import pytest

from gptcourse.progress import FINAL_ONLY_ENV, FinalStateBar, progress_bar

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.relative_to(ROOT).as_posix() for folder in ("notebooks", "solutions", "exercises")
                   for p in (ROOT / folder).glob("*.ipynb"))
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def code_cells(name: str) -> list[str]:
    notebook = json.loads((ROOT / name).read_text(encoding="utf-8"))
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_names_the_kernel_jupyterlab_has(name):
    # The same name and display name as ipykernel's own spec: JupyterLab opens the notebook
    # without a "Select Kernel" dialog and without marking it modified.
    notebook = json.loads((ROOT / name).read_text(encoding="utf-8"))
    assert notebook["metadata"]["kernelspec"] == KERNELSPEC


def test_kernelspec_matches_the_installed_ipykernel():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(KERNELSPEC["name"])
    assert spec.display_name == KERNELSPEC["display_name"]


TIMED_ASSERT = re.compile(r"^\s*assert\b.*\b(elapsed|seconds|secs|duration|time|t_\w+)\b.*[<>]", re.M)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_assertion_on_elapsed_time(name):
    # A slow laptop is not a wrong answer: print times, never assert on them.
    offending = [m.group(0).strip() for src in code_cells(name) for m in TIMED_ASSERT.finditer(src)]
    assert offending == []


def test_test_kernels_run_on_another_numeric_path_than_make_execute():
    # conftest.py sets it for the whole run, so the notebook kernels nbval starts inherit it.
    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    assert capability, "tests/conftest.py should set ATEN_CPU_CAPABILITY before torch starts"
    probe = subprocess.run([sys.executable, "-c",
                            "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip().lower() == capability.lower()
    # make execute stores outputs on the native path: it removes the variable.
    dry_run = subprocess.run(["make", "-n", "execute", "NB=notebooks/01_data.ipynb"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert "env -u ATEN_CPU_CAPABILITY" in dry_run and f"{FINAL_ONLY_ENV}=1" in dry_run


def test_final_state_bar_prints_one_line_at_the_end(capsys):
    bar = FinalStateBar(range(5), desc="training")
    for step in bar:
        if step == 2:
            assert capsys.readouterr().out == ""  # silent while it runs
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and "100%" in line and "5/5" in line
    # The stored line is masked by nbval's sanitiser, like a live bar's text.
    config = ConfigParser()
    config.read(ROOT / "tests/nbval_sanitize.cfg")
    assert re.fullmatch(config["tqdm progress bars"]["regex"], line.strip())


def test_disabled_final_state_bar_prints_nothing(capsys):
    for _ in FinalStateBar(range(3), disable=True):
        pass
    assert capsys.readouterr().out == ""


def test_progress_bar_follows_the_environment(monkeypatch):
    monkeypatch.setenv(FINAL_ONLY_ENV, "1")
    assert isinstance(progress_bar(range(1)), FinalStateBar)
    monkeypatch.setenv(FINAL_ONLY_ENV, "0")
    assert not isinstance(progress_bar(range(1)), FinalStateBar)
