"""environment.yml (conda, mybinder.org) must agree with pyproject.toml and constraints.txt."""

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
# pip names whose conda-forge package is called differently
CONDA_NAMES = {"torch": {"pytorch", "pytorch-cpu"}}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def conda_specs(env) -> dict[str, str]:
    """conda package name -> its full spec, e.g. 'pytorch-cpu' -> 'pytorch-cpu=2.13.0'."""
    specs = [d for d in env["dependencies"] if isinstance(d, str)]
    return {normalize(re.match(r"[A-Za-z0-9_.\-]+", s).group()): s for s in specs}


@pytest.fixture(scope="module")
def pip_lines(env) -> list[str]:
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one `- pip:` section"
    return sections[0]


def runtime_dependencies() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [normalize(Requirement(r).name) for r in pyproject["project"]["dependencies"]]


def test_conda_forge_only(env):
    assert env["channels"] == ["conda-forge"]


def test_python_pinned(conda_specs):
    assert conda_specs["python"] == "python=3.11"


def test_cpu_pytorch_matches_constraints(conda_specs):
    assert "pytorch-cpu" in conda_specs, "use the CPU build: no multi-GB CUDA download"
    pinned = re.search(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert conda_specs["pytorch-cpu"] == f"pytorch-cpu={pinned}"


@pytest.mark.parametrize("name", runtime_dependencies())
def test_names_every_runtime_dependency(name, conda_specs, pip_lines):
    conda_names = CONDA_NAMES.get(name, {name})
    pip_names = {normalize(Requirement(line).name) for line in pip_lines if not line.startswith("-")}
    assert conda_names & conda_specs.keys() or name in pip_names, (
        f"{name} (a dependency in pyproject.toml) is missing from environment.yml"
    )


def test_pip_installs_the_package_editable_with_dev_extra(conda_specs, pip_lines):
    assert "pip" in conda_specs
    assert "-e .[dev]" in pip_lines
