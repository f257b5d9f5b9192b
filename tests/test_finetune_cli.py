"""`gptcourse finetune`: LoRA on a small stand-in for SmolLM2 (its real tokenizer), full fine-tuning
of a tiny course GPT, resuming bit for bit, and the one-line errors a user sees."""

from __future__ import annotations

import contextlib
import copy
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptcourse import finetune_run, smollm2
from gptcourse.adapter import load_adapter, read_adapter
from gptcourse.chat import IM_END
from gptcourse.checkpoint import load_model, save_checkpoint
from gptcourse.cli import build_parser, main
from gptcourse.config import GPTConfig
from gptcourse.finetune import instruction_loader, response_loss
from gptcourse.finetune_run import batch_for_step, fit_to_window, read_state
from gptcourse.instruct import (
    alpaca_prompt,
    load_instruction_data,
    split_entries,
    tokenize_alpaca,
    tokenize_chat,
)
from gptcourse.llama import LlamaConfig, LlamaModel
from gptcourse.model import GPTModel
from gptcourse.processes import process_start
from gptcourse.run_folder import LockRecord
from gptcourse.tokenizers import CharTokenizer

LORA = ["--steps", "4", "--eval-every", "2", "--val-entries", "8", "--batch-size", "4",
        "--lr", "0.02", "--no-progress", "--device", "cpu"]
FULL = ["--full", "--steps", "4", "--eval-every", "2", "--val-entries", "8", "--batch-size", "4",
        "--lr", "0.01", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def splits():
    return split_entries(load_instruction_data(), hold_out_checkable=True)


@pytest.fixture(scope="module")
def tiny_base():
    """A small random Llama with SmolLM2's real tokenizer, in place of the 135M model."""
    torch.manual_seed(0)
    return LlamaModel(LlamaConfig(context_length=256, emb_dim=16, n_heads=2, n_kv_heads=1, n_layers=2,
                                  hidden_dim=32)).eval(), smollm2.smollm2_tokenizer()


def put_in_place(monkeypatch, tiny_base) -> None:
    base, tokenizer = tiny_base
    # Each load is a fresh copy, as each load_smollm2() is: LoRA changes the model it is put in.
    monkeypatch.setattr(smollm2, "load_smollm2", lambda: (copy.deepcopy(base), tokenizer))


@pytest.fixture
def tiny_smollm2(monkeypatch, tiny_base):
    put_in_place(monkeypatch, tiny_base)
    return tiny_base


@pytest.fixture(scope="module")
def lora_run(tiny_base, tmp_path_factory):
    """A finished 4-step LoRA run (run folder, printed output), trained once for the tests that read it."""
    out = tmp_path_factory.mktemp("lora") / "run"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(printed):
        put_in_place(monkeypatch, tiny_base)
        assert finetune(out, *LORA) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def lora_run_of_6_steps(tiny_base, tmp_path_factory):
    """The same run, 6 steps without a stop: what resumed runs must match exactly."""
    out = tmp_path_factory.mktemp("lora") / "whole"
    with pytest.MonkeyPatch.context() as monkeypatch:
        put_in_place(monkeypatch, tiny_base)
        assert finetune(out, *LORA, "--steps", "6") == 0
    return read_state(out / "state.pt")


@pytest.fixture
def lora_run_copy(lora_run, tmp_path):
    return Path(shutil.copytree(lora_run[0], tmp_path / "run"))


def no_digits_tokenizer(entries) -> CharTokenizer:
    """A character tokenizer for the Alpaca layout and the data, except the digits."""
    text = "".join(alpaca_prompt(e) + e["output"] for e in entries) + "\n"
    return CharTokenizer("".join(sorted(set(text) - set("0123456789"))))


@pytest.fixture
def gpt_checkpoint(tmp_path, splits):
    """A tiny course GPT (dropout on, so resuming must restore the random state) saved as gptcourse train does."""
    tokenizer = no_digits_tokenizer(splits.train + splits.val + splits.test)
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=96, emb_dim=16,
                               n_heads=2, n_layers=1, drop_rate=0.1))
    return save_checkpoint(tmp_path / "base" / "ckpt.pt", model, tokenizer=tokenizer)


def finetune(out, *flags) -> int:
    return main(["finetune", "--out", str(out), *flags])


def val_loss(model, pairs, pad_id, max_length) -> float:
    return response_loss(model, instruction_loader(pairs, 4, pad_id, max_length=max_length))


def test_lora_lowers_the_loss_and_chat_loads_its_adapter(lora_run, tiny_smollm2, splits, capsys):
    out, printed = lora_run
    base, tokenizer = tiny_smollm2
    h = read_state(out / "state.pt")["history"]
    assert h["step"] == [1, 2, 3, 4] and h["val_step"] == [0, 2, 4]
    assert h["val"][-1] < h["val"][0]
    # The reported losses, computed again from the saved adapter on a fresh model.
    im_end = tokenizer.special_tokens[IM_END]
    pairs = [tokenize_chat(e, tokenizer, system="Answer briefly.") for e in splits.val[:8]]
    assert val_loss(base, pairs, im_end, 256) == pytest.approx(h["val"][0], abs=1e-6)
    tuned = load_adapter(out / "adapter.pt", copy.deepcopy(base))
    assert val_loss(tuned, pairs, im_end, 256) == pytest.approx(h["val"][-1], abs=1e-6)
    assert read_adapter(out / "adapter.pt")["extra"]["system"] == "Answer briefly."
    assert printed.rstrip().endswith(f"gptcourse chat --adapter {out / 'adapter.pt'}")
    from gptcourse.chat_cli import cmd_chat

    args = build_parser().parse_args(["chat", "--max-tokens", "3", "--adapter", str(out / "adapter.pt"),
                                      "--system", "Answer briefly."])
    lines = ["Hi"]

    def read(prompt: str) -> str:
        if not lines:
            raise EOFError  # Ctrl-D: the chat ends
        return lines.pop()

    assert cmd_chat(args, read=read) == 0
    assert "with the adapter" in capsys.readouterr().out


def test_full_finetuning_drops_what_the_tokenizer_cannot_write(gpt_checkpoint, splits, tmp_path, capsys):
    assert finetune(tmp_path / "run", *FULL, "--checkpoint", str(gpt_checkpoint)) == 0
    out = capsys.readouterr().out
    used = splits.train + splits.val
    with_digits = sum(any(ch.isdigit() for ch in "".join(e.values())) for e in used)
    assert 0 < with_digits < len(used)
    assert f"Dropped {with_digits} of {len(used)} training and validation entries" in out
    h = read_state(tmp_path / "run" / "state.pt")["history"]
    assert h["val"][-1] < h["val"][0]
    # `gptcourse sample` reads the result, and its weights give the reported validation loss.
    model, tokenizer, _ = load_model(tmp_path / "run" / "ckpt.pt")
    end = tokenizer.encode("\n")[0]
    val = [e for e in splits.val if not any(ch.isdigit() for ch in "".join(e.values()))][:8]
    pairs = [fit_to_window(*tokenize_alpaca(e, tokenizer, end_id=end), 96) for e in val]
    assert val_loss(model, pairs, end, 96) == pytest.approx(h["val"][-1], abs=1e-6)
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--tokens", "5", "--prompt", "Name"]) == 0
    # The printed command gives bash the Alpaca prompt whole, its final newline included.
    quoted = out.split("--prompt ", 1)[1].strip()
    typed = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, text=True).stdout
    assert typed == alpaca_prompt({"instruction": "Name a primary color.", "input": "", "output": "-"})


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_an_interrupted_run_resumes_exactly_as_if_it_had_not_stopped(mode, request, tmp_path, monkeypatch,
                                                                     capsys):
    flags = [*LORA, "--steps", "6"]
    if mode == "lora":
        request.getfixturevalue("tiny_smollm2")
        whole = request.getfixturevalue("lora_run_of_6_steps")
    else:
        flags = [*FULL, "--steps", "6", "--checkpoint", str(request.getfixturevalue("gpt_checkpoint"))]
        assert finetune(tmp_path / "whole", *flags) == 0
        whole = read_state(tmp_path / "whole" / "state.pt")
    real, calls = finetune_run.masked_loss, []

    def interrupted_at_the_fourth_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C in step 4, after the save at step 2
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune_run, "masked_loss", interrupted_at_the_fourth_step)
    out = tmp_path / "stopped"
    assert finetune(out, *flags) == 130
    assert "the state saved at step 2 is kept" in capsys.readouterr().err
    monkeypatch.setattr(finetune_run, "masked_loss", real)
    # What a killed run leaves: its lock (a process that no longer exists) and a half-written save.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / "run.lock").write_text(LockRecord(dead.pid, None, "killed").line())
    (out / "state.pt12345.tmp").write_bytes(b"half a state")
    assert finetune(out, *flags) == 0
    said = capsys.readouterr().out
    assert "Removed state.pt12345.tmp" in said and f"Resuming {out} at step 2 of 6." in said
    resumed = read_state(out / "state.pt")
    assert resumed["history"] == whole["history"]
    for name, tensor in whole["trainable"].items():
        assert torch.equal(resumed["trainable"][name], tensor), name
    assert not (out / "run.lock").exists()


def test_a_finished_run_says_so_and_a_larger_steps_extends_it(lora_run_copy, lora_run_of_6_steps,
                                                              tiny_smollm2, capsys):
    assert finetune(lora_run_copy, *LORA) == 0
    assert "has finished its 4 steps" in capsys.readouterr().out
    assert finetune(lora_run_copy, "--steps", "6", "--no-progress") == 0  # other flags: the run's own
    extended = read_state(lora_run_copy / "state.pt")
    assert extended["history"] == lora_run_of_6_steps["history"]
    assert finetune(lora_run_copy, "--steps", "3") == 1
    assert "--steps 3 is fewer than the 6 steps" in capsys.readouterr().err


def test_a_flag_that_would_change_the_run_is_refused(lora_run_copy, tiny_smollm2, capsys):
    assert finetune(lora_run_copy, "--lr", "0.05", "--steps", "8") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds a run made with --lr 0.02; --lr 0.05 would change it" in err
    assert finetune(lora_run_copy, "--full", "--checkpoint", str(lora_run_copy / "state.pt")) == 1
    assert "holds a run made with LoRA, no --checkpoint; --full, --checkpoint" in capsys.readouterr().err


def test_a_second_run_in_the_same_folder_is_refused(tiny_smollm2, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "run.lock").write_text(LockRecord(other.pid, process_start(other.pid), "other").line())
        assert finetune(out, *LORA) == 1
        assert f"is in use by another run (process {other.pid}" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()
    assert not (out / "state.pt").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:1000]), "could not be read"),
    (lambda p: torch.save({"weights": torch.zeros(2)}, p), "is not a gptcourse fine-tuning state"),
    (lambda p: torch.save({**torch.load(p, weights_only=True), "step": 3}, p),
     "is damaged: its contents do not match the checksum"),
])
def test_a_damaged_state_file_is_one_line_naming_it(damage, message, lora_run_copy, tiny_smollm2, capsys):
    damage(lora_run_copy / "state.pt")
    assert finetune(lora_run_copy, *LORA, "--steps", "6") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(lora_run_copy / "state.pt") in err and message in err
    assert "--force" in err


def test_force_starts_again_over_a_damaged_state(lora_run_copy, tiny_smollm2, capsys):
    (lora_run_copy / "state.pt").write_bytes(b"not a state")
    assert finetune(lora_run_copy, *LORA, "--steps", "1", "--force") == 0
    assert read_state(lora_run_copy / "state.pt")["step"] == 1


def test_a_damaged_adapter_is_one_line_in_chat(lora_run_copy, tiny_smollm2, capsys):
    adapter = lora_run_copy / "adapter.pt"
    adapter.write_bytes(adapter.read_bytes()[:500])
    assert main(["chat", "--adapter", str(adapter)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{adapter} could not be read as an adapter" in err


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps must be a positive int, got 0"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "-0.001"], "--lr must be a positive number"),
    (["--lora-r", "0"], "--lora-r must be a positive int"),
    (["--lora-r", "1000"], "--lora-r: r=1000 is larger than the layer"),
    (["--targets", "W_query", "W_nope"], "--targets: no nn.Linear layer of the model is named 'W_nope'"),
    (["--checkpoint", "no/such/run", "--full"], "--checkpoint no/such/run: no checkpoint there"),
    (["--full"], "--full fine-tunes a model from `gptcourse train`: give its --checkpoint"),
    (["--full", "--checkpoint", "CKPT", "--system", "Hi"], "--system goes with LoRA"),
    (["--checkpoint", "CKPT"], "--checkpoint goes with --full"),
    (["--full", "--checkpoint", "CKPT", "--max-length", "500"], "--max-length 500 is longer than the model's context"),
    (["--device", "tpu"], "--device"),
])
def test_bad_flags_are_one_line_before_any_heavy_work(flags, message, gpt_checkpoint, tmp_path,
                                                      monkeypatch, capsys):
    def heavy():
        raise AssertionError("SmolLM2 was loaded before the flags were checked")

    monkeypatch.setattr(smollm2, "load_smollm2", heavy)
    flags = [str(gpt_checkpoint) if f == "CKPT" else f for f in flags]
    assert finetune(tmp_path / "run", *flags) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("gptcourse finetune: error: ") and "\n" not in err
    assert message in err


def test_a_character_tokenizer_without_the_alpaca_layout_is_refused(tmp_path, capsys):
    tokenizer = CharTokenizer("to be or not to be\n")
    model = GPTModel(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=32, emb_dim=16,
                               n_heads=2, n_layers=1))
    path = save_checkpoint(tmp_path / "shakespeare" / "ckpt.pt", model, tokenizer=tokenizer)
    assert finetune(tmp_path / "run", *FULL, "--checkpoint", str(path)) == 1
    err = capsys.readouterr().err
    assert "which the Alpaca prompt needs, so no entry can be encoded" in err and "'#" in err


def test_every_epoch_sees_every_entry_once_and_long_prompts_keep_their_end():
    for epoch in range(3):
        rows = [i for step in range(epoch * 4, epoch * 4 + 4) for i in batch_for_step(step, 10, 3, 7)]
        assert sorted(rows) == list(range(10))
    assert batch_for_step(0, 10, 3, 7) != batch_for_step(4, 10, 3, 7)
    prompt, response = list(range(100, 120)), [1, 2, 3]
    assert fit_to_window(prompt, response, 30) == (prompt, response)
    kept, same = fit_to_window(prompt, response, 10)
    assert kept == prompt[-8:] and same == response and len(kept) + len(same) - 1 == 10
    kept, _ = fit_to_window(prompt, list(range(50)), 10)
    assert kept == prompt[-5:]  # a long answer leaves half the window to the prompt
