"""`gptcourse train`: its flags, and the run itself (gptcourse/train_plan.py decides what to train).

The flags for the model's sizes and the training settings are made from the fields of GPTConfig
and TrainSettings marked flag=True, so each help text is written once, beside its field.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
import time
import typing
from collections.abc import Callable
from pathlib import Path

import torch

from . import distributed
from .checkpoint import CheckpointError, load_model_state, restore_state, save_checkpoint
from .config import PRESETS, GPTConfig
from .device import COMPILE_PAYS_BACK_FROM, DEVICE_CHOICES, choose_compile, pick_device
from .kvcache import generate_text_cached
from .model import GPTModel, count_parameters
from .run_folder import CHECKPOINT_NAME, prepare_run_folder
from .train import TrainSettings, micro_batch_size, train
from .train_plan import DEFAULT_SETTINGS, RUN_DEFAULTS, TrainPlan, flag_errors, flag_name, plan_run
from .validate import InputError, require_int

DEFAULT_OUT = "runs/tinyshakespeare-char"
DEFAULT_PRESET = RUN_DEFAULTS["preset"]
# Older names of generated flags, still accepted so that commands written for them keep working.
FLAG_ALIASES = {"drop_rate": ("--dropout",)}

TRAIN_EPILOG = f"""\
examples:
  gptcourse train                                  the default run, saved in {DEFAULT_OUT}/
  gptcourse train --max-iters 5000 --out runs/long a longer run in its own folder
  gptcourse train --out runs/long --resume         continue it after a crash or Ctrl-C
  gptcourse train --corpus my_poems.txt --out runs/poems   your own UTF-8 text file
  gptcourse train --corpus korean-constitution --out runs/ko  Korean text (downloaded once)
  gptcourse train --corpus notes.txt --encoding cp949 --out runs/notes  a Korean Windows file
  gptcourse train --tokenizer gpt2 --out runs/bpe  GPT-2 tokens instead of characters
  gptcourse train --device cuda --n-layers 6 --emb-dim 384 --n-heads 6 --context-length 256
  gptcourse train --batch-size 64 --grad-accum 4   4 micro-batches of 16 per step (less memory)
  gptcourse train --max-iters 20000                a long run, compiled by default (see --compile)
  torchrun --standalone --nproc_per_node=4 -m gptcourse train --out runs/ddp
                                                   4 processes (GPUs) share each batch; same model

A checkpoint (weights, optimizer, step, history, random states) is written to OUT/{CHECKPOINT_NAME} every
--checkpoint-every steps and at the end, so an interrupted run loses at most that many steps.
OUT is checked (writable, room for a checkpoint) before the first step, and locked while the
run trains (OUT/run.lock holds its process id): a second run into the same OUT, --resume
included, is refused until the first one ends. A lock left by a killed run is taken over."""


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of the dataclass `cls` that `gptcourse train` has a flag for (metadata flag=True)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag")]


def add_field_flags(group, cls: type, default_text: Callable[[str], str]) -> None:
    """One flag per flagged field of `cls`, typed by the field's annotation, helped by its text."""
    types = typing.get_type_hints(cls)  # the annotations are strings (from __future__ import annotations)
    for f in flag_fields(cls):
        kind = types[f.name]
        if kind not in (int, float):
            raise TypeError(f"{cls.__name__}.{f.name} is marked flag=True, but only int and float "
                            f"fields become flags, not {kind}")
        group.add_argument(flag_name(f.name), *FLAG_ALIASES.get(f.name, ()), type=kind,
                           metavar="N" if kind is int else "X",
                           help=f"{f.metadata['help']} ({default_text(f.name)})")


def add_train_parser(commands) -> None:
    """The `train` subcommand and its options."""
    parser = commands.add_parser("train", help="train a GPT on a text corpus", epilog=TRAIN_EPILOG,
                                 description="Train a GPT from scratch (or continue a run with --resume).",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("what to train on")
    data.add_argument("--corpus", metavar="NAME_OR_FILE",
                      help="'tinyshakespeare' (default) or 'korean-constitution' (downloaded once), "
                           "or the path of a text file")
    data.add_argument("--encoding",
                      help="the text file's encoding (default utf-8; Korean Windows files: cp949)")
    data.add_argument("--tokenizer", choices=["char", "gpt2"],
                      help="'char': one token per character; 'gpt2': GPT-2's BPE tokens (default: char)")
    model = parser.add_argument_group("model size (a preset, optionally changed)")
    model.add_argument("--preset", choices=sorted(PRESETS),
                       help=f"starting configuration (default: {DEFAULT_PRESET}, trains on a laptop CPU)")
    add_field_flags(model, GPTConfig, lambda name: f"default: the preset's; "
                                                   f"{getattr(PRESETS[DEFAULT_PRESET], name)} in {DEFAULT_PRESET}")
    training = parser.add_argument_group("training (defaults: the course's CPU recipe)")
    add_field_flags(training, TrainSettings, lambda name: f"default {getattr(DEFAULT_SETTINGS, name)}")
    run = parser.add_argument_group("where and how to run")
    run.add_argument("--out", default=DEFAULT_OUT, metavar="FOLDER",
                     help=f"folder for {CHECKPOINT_NAME} (default {DEFAULT_OUT}); locked while the run trains")
    run.add_argument("--resume", action="store_true",
                     help="continue the run saved in --out (same data, model and settings)")
    run.add_argument("--force", action="store_true", help="start afresh even if --out holds a run")
    run.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                     help="save every N steps (default: every eval interval)")
    run.add_argument("--device", default="auto",
                     help=f"one of {', '.join(DEVICE_CHOICES)} (auto: CUDA, then MPS, then CPU)")
    run.add_argument("--grad-accum", type=int, default=1, metavar="K",
                     help="split each step's batch in K micro-batches: less memory, same "
                          "training (default 1)")
    run.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                     help="run the steps through torch.compile: the first step takes tens of "
                          "seconds, later ones are faster. Default: compile when the run has at "
                          f"least {COMPILE_PAYS_BACK_FROM} steps to go (then it pays back), and "
                          "train uncompiled, with a warning, where it cannot (on a CPU it needs a "
                          "C++ compiler). --compile forces it (an error where it cannot), "
                          "--no-compile refuses it")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    run.add_argument("--sample-tokens", type=int, default=200, metavar="N",
                     help="show a sample of this many tokens at the end (0: none)")
    parser.set_defaults(func=cmd_train)


def _given(args: argparse.Namespace, cls: type) -> dict:
    """The flagged fields of `cls` that the command line gave (argparse leaves the others None)."""
    return {f.name: getattr(args, f.name) for f in flag_fields(cls) if getattr(args, f.name) is not None}


def cmd_train(args: argparse.Namespace) -> int:
    require_int("--sample-tokens", args.sample_tokens, low=0, hint=" (0: no sample)")
    if args.checkpoint_every is not None:
        require_int("--checkpoint-every", args.checkpoint_every, low=1)
    require_int("--grad-accum", args.grad_accum, low=1)
    # Under torchrun: join the other processes; only rank 0 prints (see gptcourse.distributed).
    with flag_errors():
        device = pick_device(args.device)
    device = distributed.setup(device)
    plan = plan_run(args.out, resume=args.resume, force=args.force, corpus=args.corpus,
                    encoding=args.encoding, tokenizer=args.tokenizer, preset=args.preset,
                    model_changes=_given(args, GPTConfig), settings_changes=_given(args, TrainSettings))
    for note in plan.notes:
        print(note)
    with flag_errors():
        micro_batch_size(plan.settings.batch_size, args.grad_accum)  # divides evenly, or says how
    model, state = _model_and_state(plan, device, Path(args.out) / CHECKPOINT_NAME)
    config = plan.config
    print(f"Model: {count_parameters(model) / 1e6:.2f}M parameters ({config.n_layers} layers, "
          f"{config.n_heads} heads, emb_dim {config.emb_dim}, context {config.context_length}, "
          f"vocab {config.vocab_size}); data: {len(plan.train_ids):,} train / {len(plan.val_ids):,} "
          f"val tokens; device: {device}")
    steps_to_go = plan.settings.max_iters - (state.step if state else 0)
    compile_model, why = choose_compile(args.compile, steps_to_go)
    print(f"torch.compile: {'yes' if compile_model else 'no'} ({why}).")
    _run(args, plan, model, state, device, compile_model)
    if args.sample_tokens > 0:
        print("Sample (temperature 0.8):")
        print(generate_text_cached(model, plan.tokenizer, "\n", args.sample_tokens, temperature=0.8,
                                   seed=plan.settings.seed))
    print(f"More text: gptcourse sample --checkpoint {shlex.quote(str(args.out))} "
          f"--prompt {shlex.quote(suggest_prompt(plan.text))}")
    return 0


def _model_and_state(plan: TrainPlan, device, ckpt_path: Path):
    """The model (new weights from the run's seed, or the saved ones) and, for --resume, its state."""
    torch.manual_seed(plan.settings.seed)  # the model's initial weights
    model = GPTModel(plan.config)
    if not plan.resuming:
        return model, None
    load_model_state(model, plan.checkpoint)
    model.to(device)
    state = restore_state(plan.checkpoint, model, plan.settings)
    print(f"Resuming {ckpt_path} at step {state.step} of {plan.settings.max_iters}.")
    return model, state


def _run(args: argparse.Namespace, plan: TrainPlan, model: GPTModel, state, device,
         compile_model: bool) -> None:
    """Train in the locked run folder, saving checkpoints, and print the result."""
    out = Path(args.out)
    ckpt_path = out / CHECKPOINT_NAME

    def save(s) -> None:
        try:
            save_checkpoint(ckpt_path, model, s, settings=plan.settings, tokenizer=plan.tokenizer,
                            extra=plan.run_info)
        except CheckpointError as exc:
            later = (f"; after fixing it, continue with: gptcourse train --out {shlex.quote(str(out))} "
                     f"--resume" if ckpt_path.is_file() else "")
            raise InputError(f"{exc}{later}") from exc

    step_ends: list[float] = []  # for the --compile report: when each step ended

    every = args.checkpoint_every if args.checkpoint_every is not None else plan.settings.eval_interval
    # Weights plus AdamW's two moments, each the size of the weights; the rest is small.
    checkpoint_bytes = 3 * sum(p.numel() * p.element_size() for p in model.parameters()) + (1 << 20)
    started = time.perf_counter()
    # Only rank 0 writes, so only rank 0 checks and locks the folder; under torchrun, if it
    # refuses, its exit makes torchrun stop the other processes.
    folder_lock = (prepare_run_folder(out, checkpoint_bytes) if distributed.is_main_process()
                   else contextlib.nullcontext())
    with folder_lock as folder:
        for tmp in folder.removed_temp_files if folder is not None else []:
            print(f"Removed {tmp.name}, left by a save that was interrupted.")
        state = train(model, plan.train_ids, plan.val_ids, plan.settings, state=state, device=device,
                      checkpoint_every=every, on_checkpoint=save,
                      on_step=lambda _: step_ends.append(time.perf_counter()),
                      progress=not args.no_progress, grad_accum=args.grad_accum,
                      compile_model=compile_model,
                      compile_fallback=args.compile is None)  # forced: an error where it cannot
    seconds = time.perf_counter() - started
    h = state.history
    print(f"Step {state.step}: train loss {h['train'][-1]:.4f}, val loss {h['val'][-1]:.4f} "
          f"({seconds:.1f} s). Saved {ckpt_path}")
    if compile_model and step_ends:
        print(_compile_report(started, step_ends))


def _compile_report(started: float, step_ends: list[float]) -> str:
    """How long compiling took (the first step) and what a compiled step costs after it."""
    report = f"torch.compile: the first step ended {step_ends[0] - started:.1f} s after the start"
    if len(step_ends) > 1:
        per_step = (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1)
        report += f"; the {len(step_ends) - 1} later steps took {per_step * 1000:.0f} ms each on average"
    return report + "."


def suggest_prompt(text: str) -> str:
    """A prompt the run's tokenizer can encode: "ROMEO:" for Shakespeare, else the corpus's first words."""
    if "ROMEO:" in text:
        return "ROMEO:"
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), text[:1])
    return " ".join(first_line.split()[:2])[:20] or first_line[:20]
