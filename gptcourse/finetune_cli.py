"""`gptcourse finetune`: instruction-tune SmolLM2 with LoRA, or the course's own GPT in full (chapter 10).

Running the same command again with the same --out continues the run where its last save left
it, with exactly the losses an uninterrupted run would have had. Flags left out take the run's
own values; a flag that would change the run is refused. The loop and the saved state are in
gptcourse/finetune_run.py, the models and the data in gptcourse/finetune_setup.py.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .adapter import AdapterError, save_adapter
from .checkpoint import save_checkpoint
from .device import pick_device
from .finetune import instruction_loader
from .finetune_run import (
    ADAPTER_NAME,
    LOSSES_NAME,
    STATE_NAME,
    RunState,
    make_optimizer,
    read_state,
    resume_from,
    run_steps,
    save_state,
)
from .finetune_setup import (
    DEFAULT_SYSTEM,
    check_lora_flags,
    course_gpt,
    instruction_pairs,
    smollm2_lora,
)
from .instruct import alpaca_prompt
from .lora import DEFAULT_TARGETS
from .run_folder import CHECKPOINT_NAME, prepare_run_folder
from .smollm2 import ModelUnavailableError
from .validate import InputError, require_int, require_positive_number

DEFAULT_OUT = "runs/finetune"
DEFAULT_STEPS, DEFAULT_EVAL_EVERY = 100, 25  # 100 steps of 8: about one pass over the 799 entries
# The settings that shape the run; a resumed run keeps its own (None: not used in that mode).
RUN_DEFAULTS = {"batch_size": 8, "lr": 1e-3, "lora_r": 8, "lora_alpha": 16.0,
                "targets": list(DEFAULT_TARGETS), "system": DEFAULT_SYSTEM, "max_length": None,
                "val_entries": 32, "seed": 1337}
LORA_ONLY = ("lora_r", "lora_alpha", "targets", "system")

FINETUNE_EPILOG = f"""\
examples:
  gptcourse finetune                          LoRA on SmolLM2-135M-Instruct, saved in {DEFAULT_OUT}/
  gptcourse finetune --steps 300 --out runs/long  a longer run in its own folder
  gptcourse finetune --steps 300 --out runs/long  the same command again: continue it
  gptcourse chat --adapter runs/long/adapter.pt   talk to the result (under its system message)
  gptcourse finetune --full --checkpoint runs/bpe --out runs/ft-bpe   every weight of your own GPT

The run folder holds the result ({ADAPTER_NAME} for LoRA, {CHECKPOINT_NAME} with --full), {STATE_NAME}
(what resuming needs) and {LOSSES_NAME}; each is saved whole or not at all, at step 0, every
--eval-every steps and at the end. The folder is locked while a run trains in it."""


def add_finetune_parser(commands) -> None:
    """The `finetune` subcommand and its options."""
    finetune = commands.add_parser("finetune", help="instruction-tune SmolLM2 (LoRA) or your own GPT",
                             epilog=FINETUNE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                             description="Fine-tune a model on the course's instruction data "
                                         "(chapter 10), with the loss on the answers only.")
    what = finetune.add_argument_group("what to fine-tune (default: SmolLM2-135M-Instruct with LoRA)")
    what.add_argument("--full", action="store_true", default=None,
                      help="train every weight of a course GPT (give its --checkpoint), Alpaca prompts")
    what.add_argument("--checkpoint", metavar="FILE_OR_FOLDER",
                      help="with --full: a model from `gptcourse train` (its ckpt.pt or --out folder)")
    lora = finetune.add_argument_group("LoRA")
    lora.add_argument("--lora-r", type=int, metavar="R", help="rank of the update (default 8)")
    lora.add_argument("--lora-alpha", type=float, metavar="X", help="the update is scaled by alpha/r (default 16)")
    lora.add_argument("--targets", nargs="+", metavar="NAME",
                      help=f"layers to adapt (default {' '.join(DEFAULT_TARGETS)}; also W_key out_proj gate up down)")
    lora.add_argument("--system", help=f"system message of every prompt (default {DEFAULT_SYSTEM!r})")
    how = finetune.add_argument_group("training")
    how.add_argument("--steps", type=int, metavar="N", help=f"optimizer steps in the whole run (default {DEFAULT_STEPS})")
    how.add_argument("--batch-size", type=int, metavar="N", help="entries per step (default 8)")
    how.add_argument("--lr", type=float, metavar="X", help="AdamW's learning rate, constant (default 0.001)")
    how.add_argument("--max-length", type=int, metavar="N",
                     help="tokens per row (default 256 for SmolLM2, the model's context with --full)")
    how.add_argument("--eval-every", type=int, metavar="N",
                     help=f"validate and save every N steps (default {DEFAULT_EVAL_EVERY})")
    how.add_argument("--val-entries", type=int, metavar="N",
                     help="validation entries for the loss (the first N; default 32)")
    how.add_argument("--seed", type=int, metavar="N", help="seeds the batch order and LoRA's A (default 1337)")
    run = finetune.add_argument_group("where and how to run")
    run.add_argument("--out", default=DEFAULT_OUT, metavar="FOLDER",
                     help=f"the run folder (default {DEFAULT_OUT}); the same --out again continues the run")
    run.add_argument("--force", action="store_true", help="start afresh even if --out holds a run")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    finetune.set_defaults(func=cmd_finetune)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_flags(args: argparse.Namespace) -> None:
    """Each given value on its own, and the flags that do not go together, before any heavy work."""
    for name in ("steps", "batch_size", "max_length", "eval_every", "val_entries", "lora_r"):
        if getattr(args, name) is not None:
            require_int(flag(name), getattr(args, name), low=1)
    if args.seed is not None:
        require_int("--seed", args.seed, low=0)
    for name in ("lr", "lora_alpha"):
        if getattr(args, name) is not None:
            require_positive_number(flag(name), getattr(args, name))
    lora_given = [flag(n) for n in LORA_ONLY if getattr(args, n) is not None]
    if (args.full or args.checkpoint) and lora_given:
        raise InputError(f"{lora_given[0]} goes with LoRA on SmolLM2, but --full trains every weight "
                         f"of your own GPT: drop {lora_given[0]}")
    if args.checkpoint is not None and not Path(_checkpoint_file(args.checkpoint)).is_file():
        raise InputError(f"--checkpoint {args.checkpoint}: no checkpoint there ({_checkpoint_file(args.checkpoint)} "
                         f"does not exist); give a ckpt.pt made by `gptcourse train`, or its --out folder")
    if not args.full and not args.checkpoint:
        check_lora_flags(args.targets, args.lora_r, args.lora_alpha)


def _checkpoint_file(path: str) -> str:
    """The checkpoint's file, resolved: a run folder means its ckpt.pt."""
    file = Path(path)
    return str((file / CHECKPOINT_NAME if file.is_dir() else file).resolve())


def _settings(args: argparse.Namespace, saved: dict | None, state_path: Path) -> dict:
    """The run's settings: the saved ones (refusing any flag that differs), or defaults + flags."""
    given = {k: getattr(args, k) for k in RUN_DEFAULTS if getattr(args, k) is not None}
    if args.full:
        given["mode"] = "full"
    if args.checkpoint is not None:
        given["checkpoint"] = _checkpoint_file(args.checkpoint)
    if saved is not None:
        changed = [k for k, v in given.items() if saved.get(k) != v]
        if changed:
            raise InputError(f"{state_path} holds a run made with {_as_flags(saved, changed)}; "
                             f"{_as_flags(given, changed)} would change it. Leave those flags out to "
                             f"continue the run, add --force to start again, or choose another --out")
        return dict(saved)
    mode = given.get("mode", "lora")
    if mode == "lora" and "checkpoint" in given:
        raise InputError("--checkpoint goes with --full (LoRA here is for SmolLM2): add --full")
    if mode == "full" and "checkpoint" not in given:
        raise InputError("--full fine-tunes a model from `gptcourse train`: give its --checkpoint")
    settings = {**RUN_DEFAULTS, **given, "mode": mode, "checkpoint": given.get("checkpoint")}
    if mode == "full":
        settings.update({k: None for k in LORA_ONLY})
    return settings


def _as_flags(settings: dict, names: list[str]) -> str:
    """Settings as the flags that give them: "--lr 0.001, no --checkpoint", "LoRA" or "--full"."""
    def one(name: str) -> str:
        if name == "mode":
            return "--full" if settings.get(name) == "full" else "LoRA"
        value = settings.get(name)
        return f"no {flag(name)}" if value is None else f"{flag(name)} {value!r}"
    return ", ".join(map(one, names))


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune, or continue the run in --out; problems a user can fix are one line and exit code 1."""
    try:
        return _finetune(args)
    except (AdapterError, ModelUnavailableError) as exc:
        print(f"gptcourse finetune: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the lock is released by now; the last save is whole
        state = Path(args.out) / STATE_NAME
        saved = (f"the state saved at step {read_state(state)['step']} is kept" if state.is_file()
                 else "nothing was saved yet")
        print(f"\nInterrupted; {saved}. Continue with: gptcourse finetune --out "
              f"{shlex.quote(args.out)}", file=sys.stderr)
        return 130


def _space_needed(args: argparse.Namespace, out: Path) -> int:
    """Bytes a save may need: the result, and a state with the weights and AdamW's two moments."""
    if args.checkpoint is not None:
        return 4 * Path(_checkpoint_file(args.checkpoint)).stat().st_size
    saved = [out / name for name in (STATE_NAME, CHECKPOINT_NAME, ADAPTER_NAME) if (out / name).is_file()]
    return sum(p.stat().st_size for p in saved) or 16 << 20


def _finetune(args: argparse.Namespace) -> int:
    _check_flags(args)
    try:
        device = pick_device(args.device)
    except (TypeError, ValueError) as exc:
        raise InputError(f"--device: {exc}") from None
    out = Path(args.out)
    state_path = out / STATE_NAME
    with prepare_run_folder(out, _space_needed(args, out)) as folder:
        for name in (STATE_NAME, ADAPTER_NAME, LOSSES_NAME):  # the run folder cleans up ckpt.pt's
            for tmp in out.glob(name + "*.tmp"):
                tmp.unlink()
                folder.removed_temp_files.append(tmp)
        for tmp in folder.removed_temp_files:
            print(f"Removed {tmp.name}, left by a save that was interrupted.")
        payload = read_state(state_path) if state_path.is_file() and not args.force else None
        settings = _settings(args, payload and payload["settings"], state_path)
        steps = args.steps or (payload["steps"] if payload else DEFAULT_STEPS)
        if payload and payload["step"] >= steps:
            return _finished(args, out, payload, steps)
        extra = dict(payload["extra"]) if payload else {}
        eval_every = args.eval_every or extra.get("eval_every", DEFAULT_EVAL_EVERY)
        extra["eval_every"] = eval_every
        if settings["mode"] == "lora":
            model, tokenizer, tokenize, pad_id, describe = smollm2_lora(settings)
        else:
            model, tokenizer, tokenize, pad_id, describe = course_gpt(settings, extra)
        train_pairs, val_pairs = instruction_pairs(tokenize, settings, tokenizer)
        model.to(device)
        optimizer = make_optimizer(model, settings["lr"])
        run = RunState(settings, steps)
        if payload:
            resume_from(payload, model, optimizer, run, state_path)
            print(f"Resuming {out} at step {run.step} of {steps}.")
        print(f"{describe}; {len(train_pairs)} training entries, validation loss on "
              f"{len(val_pairs)}; device: {device}")
        val_loader = instruction_loader(val_pairs, settings["batch_size"], pad_id,
                                        max_length=settings["max_length"])

        def save(r: RunState) -> None:
            if settings["mode"] == "lora":
                save_adapter(out / ADAPTER_NAME, model, extra={"system": settings["system"], "step": r.step})
            else:
                save_checkpoint(out / CHECKPOINT_NAME, model, tokenizer=tokenizer,
                                extra={"finetuned_from": settings["checkpoint"], "step": r.step,
                                       "prompt_format": "alpaca"})
            save_state(state_path, model, optimizer, r, extra)

        seconds = run_steps(model, optimizer, run, train_pairs, val_loader, pad_id, eval_every, save,
                            progress=not args.no_progress)
    h = run.history
    print(f"Step {run.step}: validation loss {h['val'][0]:.4f} before -> {h['val'][-1]:.4f} now; "
          f"{seconds:.2f} s per training step. Losses: {out / LOSSES_NAME}")
    print(_next_command(out, settings))
    return 0


def _next_command(out: Path, settings: dict) -> str:
    if settings["mode"] == "lora":
        adapter = out / ADAPTER_NAME
        # chat takes the system message the adapter was trained with from the adapter itself
        return (f"Saved {adapter} ({adapter.stat().st_size:,} bytes). Chat with it: gptcourse chat "
                f"--adapter {shlex.quote(str(adapter))}")
    # The Alpaca layout the model was trained on, in bash's $'...' quotes, which keep the final
    # newline (a $(printf ...) would drop it, and the model would be asked to write it).
    prompt = alpaca_prompt({"instruction": "Name a primary color.", "input": "", "output": "-"})
    quoted = "$'" + prompt.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
    return (f"Saved {out / CHECKPOINT_NAME}. Sample from it: gptcourse sample --checkpoint "
            f"{shlex.quote(str(out))} --temperature 0 --tokens 100 --prompt {quoted}")


def _finished(args: argparse.Namespace, out: Path, payload: dict, steps: int) -> int:
    """A run that has done its steps: say so, and how to go on."""
    h, done = payload["history"], payload["step"]
    if args.steps is not None and args.steps < done:
        raise InputError(f"--steps {args.steps} is fewer than the {done} steps the run in {out} has "
                         f"done: pass a larger --steps to train further, or --force to start again")
    print(f"The run in {out} has finished its {done} steps (validation loss {h['val'][0]:.4f} -> "
          f"{h['val'][-1]:.4f}). To train further, pass a larger --steps (e.g. --steps {2 * done}).")
    print(_next_command(out, payload["settings"]))
    return 0
