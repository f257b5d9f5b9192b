"""Benchmark: training tokens/s of the course's real training step against nanoGPT's, side by side.

    python benchmarks/train_step_vs_nanogpt.py --nanogpt /tmp/nanogpt      # 1 and 2 threads
    python benchmarks/train_step_vs_nanogpt.py --nanogpt /tmp/nanogpt --threads 1 --rounds 6
    python benchmarks/train_step_vs_nanogpt.py --nanogpt /tmp/nanogpt --compile

--nanogpt is a folder holding nanoGPT's model.py (github.com/karpathy/nanoGPT); nothing of
nanoGPT is part of this project, it is imported from there for the comparison only.
Both sides train nanoGPT's "baby GPT" (4 layers, 4 heads, emb 128, block 64, batch 12, no dropout,
tied weights, AdamW with weight decay, clip 1.0) on the same Tiny Shakespeare batches.
Ours is `gptcourse.train.train` itself (its model, its optimizer from gptcourse.optim, its
clipping and learning-rate schedule), timed between its per-step hooks. nanoGPT's is the step of
its train.py: set the lr, forward with targets, backward, clip, step, zero the gradients.
The two run in this one process in alternating rounds (A B A B ...), so a busy machine slows
both alike. For each thread count (1 and 2 by default) it prints the headline, the median of the
rounds' own ratios, and the ratio of each side's best round. A third side times only the step's matmuls at the same shapes: the floor that no training
step on this machine can beat. The course's model keeps its output-projection and feed-forward
biases (nanoGPT's baby config has none): that work counts against us.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import platform
import sys
import time
from pathlib import Path

import torch
from _paired import paired_ratio

from gptcourse.config import GPTConfig
from gptcourse.data import get_batch, load_text, train_val_split
from gptcourse.model import GPTModel
from gptcourse.tokenizers import CharTokenizer
from gptcourse.train import TrainSettings, train

BLOCK, BATCH, LAYERS, HEADS, EMB = 64, 12, 4, 4, 128
SETTINGS = TrainSettings(max_iters=10**6, batch_size=BATCH, block_size=BLOCK, lr=1e-3, min_lr=1e-4,
                         warmup_iters=100, weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0,
                         eval_interval=10**9, eval_iters=1, seed=1337)


def load_nanogpt(folder: Path):
    """nanoGPT's model.py as a module, imported from `folder`."""
    path = folder / "model.py"
    if not path.is_file():
        raise SystemExit(f"--nanogpt {folder}: no model.py there (get it from github.com/karpathy/nanoGPT)")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nanogpt_model"] = module
    spec.loader.exec_module(module)
    return module


def course_runner(cfg: GPTConfig, train_ids: torch.Tensor, compile_model: bool = False):
    """A function that runs `steps` more steps of gptcourse.train.train and returns their seconds.

    compile_model: the course's opt-in compiled steps (train(compile_model=True)), which compile
    on the first step; main() reports that time apart from the timed rounds.
    """
    torch.manual_seed(0)
    model = GPTModel(cfg)
    state = None

    def run(steps: int) -> float:
        nonlocal state
        stamps: list[float] = []
        start = 0 if state is None else state.step
        end = start + steps + 1  # the schedule's length changes the lr values, not the work
        settings = SETTINGS.replace(max_iters=end, warmup_iters=min(SETTINGS.warmup_iters, end))
        # The first hook call starts the clock: `steps` timed steps follow it.
        state = train(model, train_ids, train_ids[:10_000], settings, state=state, progress=False,
                      on_step=lambda s: stamps.append(time.perf_counter()), compile_model=compile_model)
        return stamps[-1] - stamps[0]

    return run


def nanogpt_runner(nanogpt, train_ids: torch.Tensor):
    """The same for nanoGPT's model and the step of its train.py."""
    torch.manual_seed(0)
    conf = nanogpt.GPTConfig(block_size=BLOCK, vocab_size=65, n_layer=LAYERS, n_head=HEADS, n_embd=EMB,
                             dropout=0.0, bias=False)
    model = nanogpt.GPT(conf)
    optimizer = model.configure_optimizers(SETTINGS.weight_decay, SETTINGS.lr,
                                           (SETTINGS.beta1, SETTINGS.beta2), "cpu")
    generator = torch.Generator().manual_seed(SETTINGS.seed)
    done = 0

    def lr_of(it: int) -> float:  # nanoGPT's get_lr: warm-up then cosine (lr_decay_iters 2000)
        if it < SETTINGS.warmup_iters:
            return SETTINGS.lr * (it + 1) / (SETTINGS.warmup_iters + 1)
        ratio = min(1.0, (it - SETTINGS.warmup_iters) / (2000 - SETTINGS.warmup_iters))
        return SETTINGS.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (SETTINGS.lr - SETTINGS.min_lr)

    def step() -> None:
        nonlocal done
        for group in optimizer.param_groups:
            group["lr"] = lr_of(done)
        x, y = get_batch(train_ids, BLOCK, BATCH, generator=generator)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), SETTINGS.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # nanoGPT reads the loss every log_interval; we read it every step, as train() does
        done += 1

    def run(steps: int) -> float:
        model.train()
        step()  # as on our side: the clock starts after one step
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return time.perf_counter() - start

    return run


def matmul_floor_runner(model: torch.nn.Module, tokens: int, batch: int, seq_len: int, heads: int):
    """A function that times `steps` steps' worth of only the matmuls of a training step.

    Every Linear layer does three matmuls per step (forward x @ W.T, then the gradients g @ W and
    g.T @ x) and attention six per layer (Q @ K.T and P @ V, and four in the backward pass), at
    the step's own shapes. Nothing else of a step (GELU, LayerNorm, the optimizer, Python) is
    timed, so no training step on this machine can be faster: a physical floor for both sides.
    """
    calls = []
    for layer in (m for m in model.modules() if isinstance(m, torch.nn.Linear)):
        x = torch.randn(tokens, layer.in_features)
        w = torch.randn(layer.out_features, layer.in_features)
        g = torch.randn(tokens, layer.out_features)
        calls += [lambda x=x, w=w: x @ w.t(), lambda g=g, w=w: g @ w, lambda g=g, x=x: g.t() @ x]
    head_dim = model.cfg.emb_dim // heads
    q = torch.randn(batch * heads, seq_len, head_dim)
    p = torch.randn(batch * heads, seq_len, seq_len)
    for _ in range(model.cfg.n_layers):
        calls += [lambda: q @ q.transpose(1, 2), lambda: p @ q,                        # forward
                  lambda: q @ q.transpose(1, 2), lambda: p.transpose(1, 2) @ q,        # dP, dV
                  lambda: p @ q, lambda: p.transpose(1, 2) @ q]                        # dQ, dK

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            for call in calls:
                call()
        return time.perf_counter() - start

    return run


def measure(sides: dict, args: argparse.Namespace) -> None:
    """Warm every side up, time them in alternating rounds, print the ratios (at the current threads)."""
    for name, run in sides.items():
        start = time.perf_counter()
        run(3)  # warm-up: allocations, kernel choice (and compiling)
        if name == "course, compiled":
            print(f"torch.compile: the first steps took {time.perf_counter() - start:.1f} s (compiling)")
    rounds = {name: [] for name in sides}  # each side's seconds, round by round
    for r in range(args.rounds):
        line = []
        for name, run in sides.items():
            rounds[name].append(run(args.steps))
            line.append(f"{name} {args.steps * BATCH * BLOCK / rounds[name][-1]:8,.0f}")
        print(f"round {r + 1}: " + "   ".join(line) + " tokens/s", flush=True)
    # A busy machine slows a whole stretch of time. The sides of one round ran seconds apart, so
    # their ratio is steadier than a ratio of best rounds, which may come from different minutes.
    paired = [name for name in ("course", "course, compiled") if name in rounds]
    print(f"median of the {args.rounds} rounds' own ratios to nanoGPT: " + ", ".join(
        f"{name} {paired_ratio(rounds[name], rounds['nanoGPT']):.2f}x" for name in paired))
    best = {name: min(seconds) for name, seconds in rounds.items()}
    tokens = args.steps * BATCH * BLOCK
    ours, theirs, floor = (tokens / best[name] for name in ("course", "nanoGPT", "matmul floor"))
    print(f"best round: course {ours:,.0f} tokens/s, nanoGPT {theirs:,.0f} tokens/s, "
          f"ratio {ours / theirs:.2f}x")
    print(f"matmul floor (the step's matmuls alone) {floor:,.0f} tokens/s: course at "
          f"{ours / floor:.2f} of it, nanoGPT at {theirs / floor:.2f}")
    if args.compile:
        compiled = tokens / best["course, compiled"]
        print(f"compiled course step {compiled:,.0f} tokens/s: {compiled / theirs:.2f}x nanoGPT, "
              f"{compiled / ours:.2f}x the course's eager step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="folder with nanoGPT's model.py")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch CPU thread counts, each measured in turn (default: 1 2)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per side")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round")
    parser.add_argument("--no-fast", action="store_true",
                        help="the course's explicit attention, LayerNorm and GELU (GPTConfig.fast=False)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the course's step with torch.compile (needs a C++ compiler)")
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1 or min(args.threads) < 1:
        parser.error("--rounds, --steps and --threads must be at least 1")
    nanogpt = load_nanogpt(args.nanogpt)
    text = load_text("tinyshakespeare")
    train_ids, _ = train_val_split(torch.tensor(CharTokenizer(text).encode(text)), 0.9)
    cfg = GPTConfig(vocab_size=65, context_length=BLOCK, emb_dim=EMB, n_heads=HEADS, n_layers=LAYERS,
                    drop_rate=0.0, qkv_bias=False, tie_weights=True, fast=not args.no_fast)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}; config {cfg}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\n{threads} thread(s):")
        sides = {"course": course_runner(cfg, train_ids), "nanoGPT": nanogpt_runner(nanogpt, train_ids),
                 "matmul floor": matmul_floor_runner(GPTModel(cfg), BATCH * BLOCK, BATCH, BLOCK, HEADS)}
        if args.compile:
            sides["course, compiled"] = course_runner(cfg, train_ids, compile_model=True)
        measure(sides, args)


if __name__ == "__main__":
    main()
