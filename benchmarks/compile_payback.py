"""Benchmark: after how many steps does torch.compile pay back its compile time? (CPU recipe)

    python benchmarks/compile_payback.py                  # cpu-small on Tiny Shakespeare, 2 threads
    python benchmarks/compile_payback.py --threads 1 --rounds 7 --steps 40

`gptcourse train` compiles by default when the run has at least COMPILE_PAYS_BACK_FROM steps to go
(gptcourse.device). This measures what that rule weighs, for the course's CPU recipe (the
cpu-small model, TrainSettings' defaults):
  compile time   how much longer the first step of a compiled run takes than the first step
                 of an eager run (both start with the same evaluation); the compiler's cache
                 starts empty, as on a learner's first run, unless --warm-cache
  saving         eager seconds per step minus compiled seconds per step, from alternating
                 rounds of --steps steps each (the median of the paired rounds)
  break-even     compile time / saving: the steps after which the compiled run is ahead
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch
from _paired import paired_ratio

from gptcourse.config import get_config
from gptcourse.data import load_text, train_val_split
from gptcourse.device import COMPILE_PAYS_BACK_FROM
from gptcourse.model import GPTModel
from gptcourse.tokenizers import CharTokenizer
from gptcourse.train import TrainSettings, train


def runner(train_ids: torch.Tensor, val_ids: torch.Tensor, compile_model: bool):
    """A function that runs `steps` more steps of one run and returns (seconds to the end of its
    first step, seconds per step after that)."""
    torch.manual_seed(0)
    model = GPTModel(get_config("cpu-small"))
    state = None

    def run(steps: int) -> tuple[float, float]:
        nonlocal state
        stamps: list[float] = []
        done = 0 if state is None else state.step
        settings = TrainSettings(max_iters=done + steps, warmup_iters=0, eval_interval=10**6)
        start = time.perf_counter()
        state = train(model, train_ids, val_ids, settings, state=state, progress=False,
                      on_step=lambda s: stamps.append(time.perf_counter()), compile_model=compile_model)
        return stamps[0] - start, (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per side")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--warm-cache", action="store_true",
                        help="keep torch.compile's cache of earlier runs (default: start empty)")
    args = parser.parse_args()
    if args.threads < 1 or args.rounds < 1 or args.steps < 2:
        parser.error("--threads and --rounds must be at least 1, --steps at least 2")
    torch.set_num_threads(args.threads)
    if not args.warm_cache:  # before anything compiles: the cache folder is read once
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="compile_payback_")
    text = load_text("tinyshakespeare")
    train_ids, val_ids = train_val_split(torch.tensor(CharTokenizer(text).encode(text)), 0.9)
    print(f"cpu-small, batch {TrainSettings().batch_size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"compiler cache {'kept' if args.warm_cache else 'empty at the start'}")
    eager, compiled = runner(train_ids, val_ids, False), runner(train_ids, val_ids, True)
    first_eager, _ = eager(2)
    first_compiled, _ = compiled(2)
    compile_seconds = first_compiled - first_eager
    per_step: dict[str, list[float]] = {"eager": [], "compiled": []}
    for r in range(args.rounds):
        per_step["eager"].append(eager(args.steps)[1])
        per_step["compiled"].append(compiled(args.steps)[1])
        print(f"round {r + 1}: eager {1e3 * per_step['eager'][-1]:.1f} ms/step, compiled "
              f"{1e3 * per_step['compiled'][-1]:.1f} ms/step", flush=True)
    saving = statistics.median(e - c for e, c in zip(per_step["eager"], per_step["compiled"]))
    print(f"compile time: {compile_seconds:.1f} s (the compiled run's first step, less the eager one's)")
    print(f"per step: eager {1e3 * statistics.median(per_step['eager']):.1f} ms, compiled "
          f"{1e3 * statistics.median(per_step['compiled']):.1f} ms (medians); compiled "
          f"{paired_ratio(per_step['compiled'], per_step['eager']):.2f}x as fast (median of paired "
          f"rounds), saving {1e3 * saving:.1f} ms per step")
    if saving > 0:
        print(f"break-even: {compile_seconds / saving:.0f} steps; gptcourse train compiles from "
              f"{COMPILE_PAYS_BACK_FROM} steps to go")
    else:
        print(f"no saving per step here: compiling does not pay back; gptcourse train compiles "
              f"from {COMPILE_PAYS_BACK_FROM} steps to go")


if __name__ == "__main__":
    main()
