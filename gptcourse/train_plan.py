"""What `gptcourse train` will train, decided before anything trains: a new run or a resumed one.

`plan_run` turns the command's choices into a frozen `TrainPlan`: the model's config, the
training settings, the tokenizer, the text and its splits, and, for --resume, the saved
checkpoint. A choice that cannot work is refused here with the flag to change, before a folder
is made or a model is built. gptcourse/train_cli.py reads the flags and runs the plan.

    plan = plan_run("runs/mine", corpus="my_poems.txt", settings_changes={"max_iters": 2000})
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import (
    CheckpointError,
    check_checkpoint_fits,
    config_of,
    load_checkpoint,
    tokenizer_from_vocab,
)
from .config import GPTConfig, get_config
from .data import load_text, train_val_split
from .run_folder import CHECKPOINT_NAME
from .tokenizers import CharTokenizer, Tokenizer, gpt2_tokenizer
from .train import TrainSettings
from .validate import InputError

# A new run takes these when a flag is left out; a resumed run keeps its own.
RUN_DEFAULTS = {"corpus": "tinyshakespeare", "encoding": "utf-8", "tokenizer": "char", "preset": "cpu-small"}
DEFAULT_SETTINGS = TrainSettings()
# What --resume may change: how long and where the run goes on, never what it learns from.
RESUME_MAY_CHANGE = "--max-iters, --device, --grad-accum, --checkpoint-every and --compile/--no-compile"


@dataclass(frozen=True)
class TrainPlan:
    """Everything a run of `gptcourse train` trains with, decided (and checked) before it starts."""

    config: GPTConfig
    settings: TrainSettings
    tokenizer: Tokenizer
    text: str  # the corpus (its first words suggest a prompt at the end)
    train_ids: torch.Tensor
    val_ids: torch.Tensor
    run_info: dict  # corpus, encoding, tokenizer, preset: saved in the checkpoint, read by --resume
    checkpoint: dict | None = None  # the saved run that --resume continues; None for a new run
    notes: tuple[str, ...] = ()  # what the plan changed that the user should be told

    @property
    def resuming(self) -> bool:
        return self.checkpoint is not None


def flag_name(field_name: str) -> str:
    """The command-line flag of a field or choice: drop_rate -> --drop-rate."""
    return "--" + field_name.replace("_", "-")


@contextlib.contextmanager
def flag_errors():
    """Report the ValueError of a check on the flags' values as an InputError: the command line
    prints those as one line, since the fix is in the flags, not in the course's code."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise InputError(str(exc)) from exc


def plan_run(out: str | Path, *, resume: bool = False, force: bool = False, corpus: str | None = None,
             encoding: str | None = None, tokenizer: str | None = None, preset: str | None = None,
             model_changes: Mapping[str, object] | None = None,
             settings_changes: Mapping[str, object] | None = None) -> TrainPlan:
    """Plan a new run into the folder `out`, or with resume=True the continuation of the run saved there.

    Each argument is a flag of `gptcourse train`; None, or a field left out of `model_changes`
    (GPTConfig fields) and `settings_changes` (TrainSettings fields), means "not given"."""
    ckpt_path = Path(out) / CHECKPOINT_NAME
    choices = {name: value for name, value in (("corpus", corpus), ("encoding", encoding),
                                               ("tokenizer", tokenizer), ("preset", preset))
               if value is not None}
    model_changes, settings_changes = dict(model_changes or {}), dict(settings_changes or {})
    if resume:
        return _resumed_run(ckpt_path, choices, model_changes, settings_changes)
    if ckpt_path.exists() and not force:
        raise InputError(f"{ckpt_path} already holds a run: add --resume to continue it, "
                         f"--force to start again from scratch, or choose another --out")
    return _new_run(choices, model_changes, settings_changes)


def _new_run(choices: dict, model_changes: dict, settings_changes: dict) -> TrainPlan:
    run_info = {**RUN_DEFAULTS, **choices}
    tokenizer, text = load_tokenizer_and_text(run_info["corpus"], run_info["tokenizer"],
                                              encoding=run_info["encoding"])
    with flag_errors():
        config = get_config(run_info["preset"], vocab_size=tokenizer.n_vocab, **model_changes)
    max_iters = settings_changes.get("max_iters")
    if (max_iters is not None and "warmup_iters" not in settings_changes
            and max_iters < DEFAULT_SETTINGS.warmup_iters):
        settings_changes["warmup_iters"] = max_iters // 10  # a short run gets a short warm-up
    with flag_errors():
        settings = TrainSettings(**settings_changes)
    return _with_data(config, settings, tokenizer, text, run_info)


def _resumed_run(ckpt_path: Path, choices: dict, model_changes: dict, settings_changes: dict) -> TrainPlan:
    ckpt = load_checkpoint(ckpt_path)
    run_info = _resumable(ckpt, ckpt_path)
    max_iters = settings_changes.pop("max_iters", None)
    changed = [*choices, *model_changes, *settings_changes]
    if changed:
        raise InputError(f"--resume continues the saved run with its own data and settings; drop "
                         f"{', '.join(flag_name(name) for name in changed)} "
                         f"(only {RESUME_MAY_CHANGE} may change)")
    config = config_of(ckpt)
    check_checkpoint_fits(ckpt, config)  # before GPTModel(config) allocates what the config claims
    try:
        settings = TrainSettings(**ckpt["settings"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt_path} holds training settings this gptcourse cannot "
                              f"use ({exc}): start a new run with --force") from None
    done = int(ckpt.get("step", 0))
    notes = []
    if max_iters is not None and max_iters <= done:
        raise InputError(f"--max-iters {max_iters} is not more than the {done} steps this run "
                         f"has done: pass a larger --max-iters to train further")
    if max_iters is not None and max_iters != settings.max_iters:
        change = "Extending" if max_iters > settings.max_iters else "Shortening"
        notes.append(f"{change} the run from {settings.max_iters} to {max_iters} steps "
                     f"(the learning-rate schedule stretches to the new end).")
        with flag_errors():
            settings = settings.replace(max_iters=max_iters)
    tokenizer, text = load_tokenizer_and_text(run_info["corpus"], run_info["tokenizer"],
                                              encoding=run_info.get("encoding", "utf-8"),
                                              saved_vocab=ckpt.get("tokenizer"))
    return _with_data(config, settings, tokenizer, text, run_info, ckpt, tuple(notes))


def _resumable(ckpt: dict, path: Path) -> dict:
    """The run's corpus and tokenizer, or a CheckpointError if `gptcourse train` cannot resume it."""
    if not isinstance(ckpt.get("settings"), dict) or "optimizer" not in ckpt:
        raise CheckpointError(f"{path} holds only a model, not a training state: it can be sampled "
                              f"from (gptcourse sample --checkpoint {path}), but not resumed")
    run_info = ckpt.get("extra") or {}
    if not {"corpus", "tokenizer"} <= run_info.keys():
        raise CheckpointError(f"{path} was not saved by `gptcourse train`, so --resume does not know "
                              f"its corpus: continue it from Python (restore_state), or start a new "
                              f"run with --force")
    return run_info


def load_tokenizer_and_text(corpus: str, kind: str, encoding: str = "utf-8", saved_vocab=None
                            ) -> tuple[Tokenizer, str]:
    """The corpus's text and its tokenizer: GPT-2's ("gpt2"), or characters ("char"): the saved
    vocabulary of a resumed run, else one built from the text."""
    text = load_text(corpus, encoding=encoding)
    if kind == "gpt2":
        return gpt2_tokenizer(), text
    if saved_vocab is not None:
        return tokenizer_from_vocab(saved_vocab), text
    return CharTokenizer(text), text


def _with_data(config: GPTConfig, settings: TrainSettings, tokenizer: Tokenizer, text: str,
               run_info: dict, checkpoint: dict | None = None, notes: tuple[str, ...] = ()) -> TrainPlan:
    """The plan, once the text is split into token ids and known to be long enough for the model."""
    # The corpus is plain text: a literal "<|endoftext|>" in it is just characters.
    ids = torch.tensor(tokenizer.encode_ordinary(text), dtype=torch.long)
    train_ids, val_ids = train_val_split(ids, 0.9)
    window = settings.block_size or config.context_length
    if len(val_ids) <= window:
        raise InputError(f"--context-length {window} needs windows of {window + 1} tokens, but the "
                         f"corpus leaves only {len(val_ids)} tokens for validation: use a smaller "
                         f"--context-length (at most {len(val_ids) - 1}) or a longer corpus")
    return TrainPlan(config, settings, tokenizer, text, train_ids, val_ids, run_info, checkpoint, notes)
