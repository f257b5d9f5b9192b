"""environment.yml (conda, mybinder.org) must agree with pyproject.toml and constraints.txt."""

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

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


def test_cpu_pytorch_is_a_range_that_admits_the_pinned_version(conda_specs):
    assert "pytorch-cpu" in conda_specs, "use the CPU build: no multi-GB CUDA download"
    spec = SpecifierSet(conda_specs["pytorch-cpu"].removeprefix("pytorch-cpu"))
    # A range, as pyproject.toml's: an exact conda-forge version may not exist (see the comment).
    assert not any(s.operator in ("==", "===") for s in spec), "pin a range, not one version"
    pinned = re.search(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert pinned in spec
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    torch_req = next(Requirement(r) for r in pyproject["project"]["dependencies"]
                     if Requirement(r).name == "torch")
    assert spec == torch_req.specifier


def test_python_range_matches_the_makefile_check():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    supported = SpecifierSet(pyproject["project"]["requires-python"])
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    low, high = re.search(r"\((3, \d+)\) <= v <= \((3, \d+)\)", makefile).groups()
    assert f"{low.replace(', ', '.')}.0" in supported and f"{high.replace(', ', '.')}.0" in supported
    assert f"3.{int(high[3:]) + 1}.0" not in supported and f"3.{int(low[3:]) - 1}.0" not in supported


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
