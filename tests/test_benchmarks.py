"""Smoke tests for the scripts in benchmarks/: each one starts, and the summary lines they print
come out of tiny runs. (Their figures are speeds: measured by running them, never asserted here.)"""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_main(name: str, args: list[str], monkeypatch) -> None:
    """Run benchmarks/<name>'s main() in this process, as `python benchmarks/<name> *args` would."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{Path(name).stem}", BENCHMARKS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [name, *args])
    module.main()


@pytest.mark.parametrize("name", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_every_benchmark_starts_and_explains_itself(name, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(name, ["--help"], monkeypatch)
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_time_to_quality_refuses_a_check_interval_below_one(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main("time_to_quality.py", ["--check-every", "0"], monkeypatch)
    assert exit_info.value.code == 2
    assert "--check-every must be at least 1" in capsys.readouterr().err


def test_mfu_prints_the_best_of_its_rounds(monkeypatch, capsys):
    run_main("mfu.py", ["--preset", "cpu-small", "--batch", "2", "--steps", "1", "--warmup", "0",
                        "--rounds", "2", "--fused-both"], monkeypatch)
    summary = capsys.readouterr().out.split("best of 2 rounds")[1]
    assert "explicit LayerNorm/GELU" in summary and "fused LayerNorm/GELU" in summary
    assert summary.count("MFU") == 2


def test_attention_cpu_checks_both_ways_and_names_the_models_choice(monkeypatch, capsys):
    run_main("attention_cpu.py", ["--lengths", "4", "160", "--tokens", "8", "--heads", "2",
                                  "--head-dim", "4", "--rounds", "1", "--repeats", "1"], monkeypatch)
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["4"], ["160"])]
    assert [(row[0], row[1], row[-1]) for row in rows] == [("4", "2", "batched"), ("160", "1", "fused")]
