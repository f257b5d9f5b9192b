"""Smoke tests for the scripts in benchmarks/: each one starts, and the summary lines they print
come out of tiny runs. (Their figures are speeds: measured by running them, never asserted here.)"""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # as `python benchmarks/<name>` has it: their shared _paired.py


def load_benchmark(name: str):
    """benchmarks/<name> as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{Path(name).stem}", BENCHMARKS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(name: str, args: list[str], monkeypatch, module=None) -> None:
    """Run benchmarks/<name>'s main() in this process, as `python benchmarks/<name> *args` would."""
    monkeypatch.setattr(sys, "argv", [name, *args])
    (module or load_benchmark(name)).main()


@pytest.mark.parametrize("name", sorted(p.name for p in BENCHMARKS.glob("[!_]*.py")))
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
                        "--rounds", "2", "--both"], monkeypatch)
    summary = capsys.readouterr().out.split("best of 2 rounds")[1]
    assert "explicit attention, LayerNorm and GELU" in summary and "fast kernels" in summary
    assert summary.count("MFU") == 2


def test_attention_cpu_checks_both_ways_and_names_the_models_choice(monkeypatch, capsys):
    run_main("attention_cpu.py", ["--lengths", "4", "160", "--tokens", "8", "--heads", "2",
                                  "--head-dim", "4", "--rounds", "1", "--repeats", "1"], monkeypatch)
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["4"], ["160"])]
    assert [(row[0], row[1], row[-1]) for row in rows] == [("4", "2", "batched"), ("160", "1", "fused")]


# A stand-in with the interface of nanoGPT's model.py that the benchmark uses (nanoGPT itself is
# not part of the course), built from the course's own model.
FAKE_NANOGPT = """
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptcourse.config import GPTConfig as CourseConfig
from gptcourse.model import GPTModel


@dataclass
class GPTConfig:
    block_size: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float
    bias: bool


class GPT(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.model = GPTModel(CourseConfig(vocab_size=c.vocab_size, context_length=c.block_size,
                                           emb_dim=c.n_embd, n_heads=c.n_head, n_layers=c.n_layer,
                                           drop_rate=c.dropout))

    def forward(self, x, y):
        logits = self.model(x)
        return logits, F.cross_entropy(logits.flatten(0, 1), y.flatten())

    def configure_optimizers(self, weight_decay, lr, betas, device_type):
        return torch.optim.AdamW(self.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
"""


def test_train_step_vs_nanogpt_prints_best_and_paired_ratios(tmp_path, monkeypatch, capsys):
    (tmp_path / "model.py").write_text(FAKE_NANOGPT)
    benchmark = load_benchmark("train_step_vs_nanogpt.py")
    text = "".join(chr(ord("A") + i % 60) for i in range(4000))  # 60 symbols: no data file needed
    monkeypatch.setattr(benchmark, "load_text", lambda name: text)
    monkeypatch.delitem(sys.modules, "nanogpt_model", raising=False)  # the benchmark registers it
    run_main("train_step_vs_nanogpt.py", ["--nanogpt", str(tmp_path), "--steps", "1", "--rounds", "2"],
             monkeypatch, benchmark)
    out = capsys.readouterr().out
    for threads in ("1 thread(s):", "2 thread(s):"):  # both thread counts in one run, by default
        part = out.split(threads)[1].split("thread(s):")[0]
        assert part.count("round ") >= 2 and "best round: course" in part and "matmul floor" in part
        assert "median of the 2 rounds' own ratios to nanoGPT: course " in part


def test_paired_ratio_compares_each_round_with_its_own_partner():
    paired_ratio = load_benchmark("_paired.py").paired_ratio
    # ours ran 2x, 1x and 0.5x as fast as theirs round by round: the median is 1x, even though
    # our best round (1 s) against their best (2 s) would say 2x.
    assert paired_ratio([1.0, 2.0, 4.0], [2.0, 2.0, 2.0]) == 1.0
    assert paired_ratio([1.0, 1.0], [3.0, 5.0]) == 4.0  # an even count: the mean of the middle two
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])  # rounds must come in pairs


def test_decode_smollm2_compares_identical_tokens(monkeypatch, capsys):
    run_main("decode_smollm2.py", ["--new-tokens", "3", "--rounds", "1", "--threads", "1"], monkeypatch)
    out = capsys.readouterr().out
    assert "1 thread(s): ours" in out and "identical" in out
    assert "median of 1 paired rounds" in out and "weight-reading floor" in out


def test_kv_cache_prints_the_paired_ratios_for_each_thread_count(monkeypatch, capsys):
    run_main("kv_cache.py", ["--new-tokens", "2", "--prompt-tokens", "2", "--rounds", "1",
                             "--threads", "1", "2", "--no-uncached", "--no-low-precision"], monkeypatch)
    out = capsys.readouterr().out
    for threads in (1, 2):
        assert f"\n{threads} thread(s): ours " in out
    assert out.count("ours / transformers:      ") == 2 and out.count("(median of 1 paired rounds)") == 2
    assert out.count("reference / transformers: ") == 2 and out.count("ours at ") == 2
    assert out.count("(identical 2 tokens)") == 2
