"""Time to quality: how long does training take to reach a validation loss of 1.88 on Tiny Shakespeare?

Trains a character-level GPT from scratch on the CPU and stops at the first check where the loss on
the *whole* validation split (every non-overlapping window, the same for every recipe) is at or
below the target. The clock counts everything the recipe itself does (training steps and its own
loss estimates); the exact validation checks are made with the clock stopped, so looking costs the
recipe nothing. The time reported is that of the first check at or below the target, so checks
every 50 steps (the default) pin it down to 50 steps; with checks every 250 steps a run that gets
there at step 850 would be timed at step 1000.

Two recipes:
  baseline  the well-known "baby GPT" CPU run: 4 layers, 4 heads, emb 128, block 64, batch 12, no
            dropout, no biases, AdamW lr 1e-3 (100 warm-up steps, cosine to 1e-4 over 2000 steps),
            beta2 0.99, weight decay 0.1 on every matrix, clip 1.0, tied weights, loss estimates of
            20 batches every 250 steps.
  course    the course's default: the "cpu-small" preset with TrainSettings() (gptcourse.train).

    python benchmarks/time_to_quality.py                      # both, one after the other
    python benchmarks/time_to_quality.py --recipe course --threads 2
    python benchmarks/time_to_quality.py --recipe course --set lr=3e-3 batch_size=48 n_layers=3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import torch

from gptcourse.config import GPTConfig, get_config
from gptcourse.data import load_text, train_val_split
from gptcourse.loss import split_loss
from gptcourse.model import GPTModel, count_parameters
from gptcourse.tokenizers import CharTokenizer
from gptcourse.train import TrainSettings, TrainState, train

BASELINE_SETTINGS = TrainSettings(max_iters=2000, batch_size=12, lr=1e-3, min_lr=1e-4,
                                  warmup_iters=100, weight_decay=0.1, beta1=0.9, beta2=0.99,
                                  grad_clip=1.0, eval_interval=250, eval_iters=20, seed=1337)
BASELINE_CONFIG = GPTConfig(vocab_size=65, context_length=64, emb_dim=128, n_heads=4, n_layers=4,
                            drop_rate=0.0, qkv_bias=False, tie_weights=True, fast=True)


class Reached(Exception):
    """Raised from the step hook once the target is met, to stop training there."""


def recipe(name: str, overrides: dict) -> tuple[GPTConfig, TrainSettings]:
    if name == "baseline":
        cfg, settings = BASELINE_CONFIG, BASELINE_SETTINGS
    else:
        cfg, settings = get_config("cpu-small"), TrainSettings()
    cfg_fields = {f.name for f in dataclasses.fields(GPTConfig)}
    cfg = cfg.replace(**{k: v for k, v in overrides.items() if k in cfg_fields})
    settings = settings.replace(**{k: v for k, v in overrides.items() if k not in cfg_fields})
    return cfg, settings


def baseline_state(model: GPTModel, settings: TrainSettings) -> TrainState:
    """The baseline has no biases (we hold ours at zero) and decays every matrix, embeddings too."""
    for name, p in model.named_parameters():
        if p.dim() == 1 and not name.endswith("scale"):  # Linear biases and LayerNorm shifts
            p.requires_grad_(False)
            p.data.zero_()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, betas=(settings.beta1, settings.beta2))
    return TrainState(optimizer, torch.Generator().manual_seed(settings.seed),
                      torch.Generator().manual_seed(settings.seed + 1))


def run(name: str, train_ids, val_ids, target: float, check_every: int, overrides: dict) -> dict:
    cfg, settings = recipe(name, overrides)
    torch.manual_seed(settings.seed)
    model = GPTModel(cfg)
    state = baseline_state(model, settings) if name == "baseline" else None
    block = settings.block_size or cfg.context_length
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result = {"recipe": name, "params": n_params, "params_all": count_parameters(model),
              "config": cfg.to_dict(), "settings": settings.to_dict(), "checks": []}
    off_clock = 0.0

    def check(s: TrainState) -> None:
        nonlocal off_clock
        if s.step % check_every and s.step != settings.max_iters:
            return
        paused = time.perf_counter()
        seconds = paused - started - off_clock  # time on the clock so far
        val = split_loss(model, val_ids, block, batch_size=128)
        off_clock += time.perf_counter() - paused
        result["checks"].append({"step": s.step, "seconds": round(seconds, 2), "val": round(val, 4)})
        print(f"  {name}: step {s.step:5d}  {seconds:7.1f} s  val {val:.4f}", flush=True)
        if val <= target:
            raise Reached

    started = time.perf_counter()
    try:
        state = train(model, train_ids, val_ids, settings, state=state, on_step=check, progress=False)
    except Reached:
        pass
    last = result["checks"][-1]
    result.update(reached=last["val"] <= target, seconds=last["seconds"], iters=last["step"],
                  tokens=last["step"] * settings.batch_size * block, val=last["val"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=["baseline", "course", "both"], default="both")
    parser.add_argument("--target", type=float, default=1.88, help="validation loss to reach")
    parser.add_argument("--check-every", type=int, default=50,
                        help="exact validation check every N steps (off the clock) and at the end")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="change a GPTConfig field or TrainSettings field of the recipe(s)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if args.check_every < 1:
        parser.error(f"--check-every must be at least 1 (steps between checks), got {args.check_every}")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value.lower() if value.lower() in ("true", "false") else value)
    text = load_text("tinyshakespeare")
    tokenizer = CharTokenizer(text)
    train_ids, val_ids = train_val_split(torch.tensor(tokenizer.encode(text)), 0.9)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    names = ["baseline", "course"] if args.recipe == "both" else [args.recipe]
    results = []
    for name in names:
        r = run(name, train_ids, val_ids, args.target, args.check_every, overrides)
        results.append(r)
        status = "reached" if r["reached"] else "did NOT reach"
        print(f"{name}: {status} val <= {args.target}: val {r['val']:.4f} after {r['iters']} iterations, "
              f"{r['seconds']:.1f} s, {r['tokens']:,} tokens seen, {r['params'] / 1e6:.3f}M parameters")
    if len(results) == 2:
        base, course = results
        print(f"speed-up: course takes {course['seconds'] / base['seconds']:.2f}x the baseline's time "
              f"({base['seconds']:.1f} s -> {course['seconds']:.1f} s; the goal is 0.4x or less)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
