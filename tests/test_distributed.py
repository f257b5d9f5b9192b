"""Tests for training under torchrun (DDP, gloo on the CPU): the same command on 2 processes trains
the same model as on 1, with and without gradient accumulation; checkpoints move between process
counts; a killed rank stops the job with a message naming it, and --resume goes on from there."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_cli import CORPUS, ROOT, SLOW_RUN

from gptcourse import distributed
from gptcourse.checkpoint import load_checkpoint
from gptcourse.cli import main
from gptcourse.train import TrainSettings, train

TINY = ["--n-layers", "1", "--emb-dim", "16", "--n-heads", "2", "--context-length", "16",
        "--batch-size", "8", "--eval-interval", "5", "--eval-iters", "2", "--max-iters", "12",
        "--warmup-iters", "2", "--checkpoint-every", "4", "--no-progress", "--sample-tokens", "0",
        "--device", "cpu"]
RUN_FLAGS = ["--no-progress", "--sample-tokens", "0", "--device", "cpu"]  # the ones --resume takes
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
       "GPTCOURSE_DIST_TIMEOUT": "60"}
# The machine running the tests may be busy: bounds that are generous but keep a hang finite.
RUN_TIMEOUT_S = 180


def command(processes: int, *args, step_delay: float = 0.0) -> list[str]:
    """`gptcourse ARGS` in one plain process, or under torchrun with `processes` processes; with a
    step_delay, each step that many seconds slower (through tests/slow_run.py)."""
    program = ["-m", "gptcourse"] if not step_delay else [str(SLOW_RUN), str(step_delay)]
    if processes == 1:
        return [sys.executable, *program, *map(str, args)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", *program, *map(str, args)]


def run(processes: int, *args) -> subprocess.CompletedProcess:
    result = subprocess.run(command(processes, *args), env=ENV, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys()
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, atol=1e-4, rtol=0, msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """The corpus file, and the checkpoint of the run in one plain process, without torchrun."""
    folder = tmp_path_factory.mktemp("runs")
    corpus = folder / "speech.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    run(1, "train", "--corpus", corpus, "--out", folder / "one", *TINY)
    return corpus, load_checkpoint(folder / "one")


def test_two_processes_with_grad_accum_train_the_same_model_as_one(reference, tmp_path):
    corpus, one_process = reference
    out = tmp_path / "two"
    result = run(2, "train", "--corpus", corpus, "--out", out, *TINY, "--grad-accum", "2")
    two = load_checkpoint(out)
    assert two["step"] == one_process["step"] == 12
    assert_same_weights(one_process, two)
    assert two["history"]["step"] == one_process["history"]["step"]
    torch.testing.assert_close(torch.tensor(two["history"]["batch_loss"]),
                               torch.tensor(one_process["history"]["batch_loss"]), atol=1e-4, rtol=0)
    # Only rank 0 prints and writes: one summary line, one file, no temporary files left.
    assert result.stdout.count("Step 12: train loss") == 1, result.stdout
    assert result.stdout.count("Model:") == 1
    assert [p.name for p in out.iterdir()] == ["ckpt.pt"]


def _child_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def _worker_pid(launcher: int, rank: int) -> int | None:
    """The pid of torchrun's worker with this RANK (read from /proc)."""
    for pid in _child_pids(launcher):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    return None


def saved_step(out: Path) -> int:
    try:
        return load_checkpoint(out)["step"]
    except Exception:  # not there yet (the rename makes it appear whole)
        return -1


def kill_after_first_checkpoint(processes: int, out: Path, *args, after_step: int = 0
                                ) -> tuple[int, str]:
    """Start a slowed-down run, SIGKILL one process (rank 1 under torchrun) once a checkpoint after
    `after_step` is written, and return the launcher's exit code and its output."""
    flags = RUN_FLAGS if "--resume" in args else TINY
    # Each step lasts 0.2 s longer, so the kill lands mid-run.
    launcher = subprocess.Popen(command(processes, "train", "--out", out, *args, *flags, step_delay=0.2),
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while saved_step(out) <= after_step:
            assert launcher.poll() is None, launcher.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        victim = launcher.pid if processes == 1 else _worker_pid(launcher.pid, rank=1)
        assert victim is not None, "no worker with RANK=1 found"
        os.kill(victim, signal.SIGKILL)
        printed, _ = launcher.communicate(timeout=RUN_TIMEOUT_S)  # bounded: the job must end
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
    return launcher.returncode, printed


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the worker through /proc")
def test_killed_rank_stops_the_job_and_runs_resume_across_process_counts(reference, tmp_path):
    """1 process, killed; resumed on 2 (no accumulation), rank 1 killed; resumed on 1: the weights
    end as the uninterrupted run's."""
    corpus, one_process = reference
    out = tmp_path / "killed"
    returncode, _ = kill_after_first_checkpoint(1, out, "--corpus", corpus)
    assert returncode == -signal.SIGKILL
    first_stop = load_checkpoint(out)["step"]
    assert first_stop in (4, 8)
    returncode, printed = kill_after_first_checkpoint(2, out, "--resume", after_step=first_stop)
    assert printed.count(f"Resuming {out / 'ckpt.pt'} at step {first_stop} of 12") == 1, printed
    # torchrun's failure report names the rank that died and how. (Its "root cause" is rank 1, or
    # rank 0 when rank 0 noticed the lost peer and exited within the same second; rank 1 is listed.)
    assert returncode != 0
    assert "rank      : 1 (local_rank: 1)" in printed, printed
    assert "Signal 9 (SIGKILL)" in printed, printed
    second_stop = load_checkpoint(out)["step"]
    assert first_stop < second_stop < 12
    result = run(1, "train", "--out", out, "--resume", *RUN_FLAGS)
    assert f"at step {second_stop} of 12" in result.stdout
    resumed = load_checkpoint(out)
    assert resumed["step"] == 12
    assert resumed["history"]["step"] == one_process["history"]["step"]
    assert_same_weights(one_process, resumed)


def test_batch_must_divide_among_processes_and_micro_batches(tmp_path, capsys):
    # In one process: 8 windows do not split into 3 micro-batches, and the error says so.
    corpus = tmp_path / "speech.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "odd"), *TINY,
                 "--grad-accum", "3"]) == 1
    assert ("batch_size (8) must be divisible by processes x grad_accum (1 x 3 = 3)"
            in capsys.readouterr().err)


def test_without_torchrun_nothing_is_distributed(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_torchrun()
    assert distributed.setup(torch.device("cpu")) == torch.device("cpu")
    assert (distributed.rank(), distributed.world_size(), distributed.is_distributed()) == (0, 1, False)
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model, torch.device("cpu")) is model
    value = torch.tensor(3.0)
    assert distributed.mean_over_processes(value) is value
    distributed.barrier()
    distributed.teardown()


def test_grad_accum_in_one_process_takes_the_same_steps():
    # In-process, no torchrun: 4 micro-batches of 2 give the step of one batch of 8.
    data = torch.arange(300) % 7
    settings = TrainSettings(max_iters=5, batch_size=8, block_size=8, warmup_iters=1,
                             eval_interval=5, eval_iters=1)
    weights = []
    for grad_accum in (1, 4):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Embedding(7, 8), torch.nn.Linear(8, 7))
        train(model, data, data, settings, progress=False, grad_accum=grad_accum)
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_a_lost_peer_gets_a_one_line_message(monkeypatch):
    lost = RuntimeError("[/src/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                        "[127.0.0.1]:6020. This is typically caused by a remote worker crashing.")
    assert distributed.peer_failure_message(lost) is None  # not distributed: not our business
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    message = distributed.peer_failure_message(lost)
    assert message.startswith("rank 0 lost contact with another process of this job "
                              "(Connection closed by peer [127.0.0.1]:6020): ")
    assert message.endswith("the same command with --resume.")
    assert distributed.peer_failure_message(RuntimeError("mat1 and mat2 shapes differ")) is None


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf", "-inf", "nan", "1e400", "1e300", ""])
def test_timeout_must_be_positive_seconds(monkeypatch, value):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match="GPTCOURSE_DIST_TIMEOUT must be a number of seconds > 0"):
        distributed.timeout()
    assert distributed._timeout_text() == "the time"  # the peer-failure message still works


def test_a_locked_run_folder_refuses_a_torchrun_job(reference, tmp_path):
    # The run folder's checks hold under torchrun too: rank 0 finds the live lock and the job ends.
    corpus, _ = reference
    out = tmp_path / "busy"
    out.mkdir()
    (out / "run.lock").write_text(f"{os.getpid()}\n")  # this test process is alive: a live owner
    result = subprocess.run(command(2, "train", "--corpus", corpus, "--out", out, *TINY), env=ENV,
                            capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode != 0
    assert f"process {os.getpid()} holds" in result.stdout + result.stderr
    assert not (out / "ckpt.pt").exists()


def test_a_bad_timeout_is_one_line_from_every_rank(reference, tmp_path):
    """GPTCOURSE_DIST_TIMEOUT=inf used to overflow inside timedelta: a traceback from each rank."""
    corpus, _ = reference
    result = subprocess.run(command(2, "train", "--corpus", corpus, "--out", tmp_path / "run", *TINY),
                            env={**ENV, "GPTCOURSE_DIST_TIMEOUT": "inf"}, capture_output=True,
                            text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode != 0
    said = "gptcourse train: error: GPTCOURSE_DIST_TIMEOUT must be a number of seconds > 0"
    assert result.stderr.count(said) == 2, result.stderr  # one line from each of the 2 ranks
    # torchrun's launcher reports the failed job with a traceback of its own; no rank has one.
    assert str(ROOT / "gptcourse") not in result.stderr and "OverflowError" not in result.stderr
