"""Benchmark: causal attention on a CPU, PyTorch's fused kernel against two batched matmuls.

    python benchmarks/attention_cpu.py --threads 2
    python benchmarks/attention_cpu.py --heads 12 --head-dim 64 --lengths 64 256 512 1024

For each context length T, both ways get the same queries, keys and values, made as the model
makes them (transposed views of a (B, T, C) tensor), and the same gradient to send back. One
"run" is a forward and a backward pass. The rounds alternate between the two ways, and the best
round of each counts. Before timing, the script checks that both give the same output.

  fused    F.scaled_dot_product_attention(q, k, v, is_causal=True), PyTorch's fused kernel
  batched  gptcourse.attention.causal_attention_batched: baddbmm (scores, scale and mask in one
           call), softmax, bmm. It keeps the (T, T) weights for the backward pass.

The model's fast path (fast=True) runs "batched" on a CPU up to SHORT_CONTEXT_ON_CPU tokens
and "fused" beyond; the last column says which one it picks at each length.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from gptcourse.attention import (
    SHORT_CONTEXT_ON_CPU,
    batched_beats_sdpa,
    causal_attention_batched,
    causal_mask,
    split_heads,
)
from gptcourse.config import get_config


def fused(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


WAYS = {"fused": fused, "batched": causal_attention_batched}


def time_runs(way, q, k, v, mask, upstream, repeats: int) -> float:
    """Seconds per forward + backward pass, averaged over `repeats` passes."""
    start = time.perf_counter()
    for _ in range(repeats):
        way(q, k, v, mask).backward(upstream)
    return (time.perf_counter() - start) / repeats


def measure(T: int, batch: int, heads: int, head_dim: int, rounds: int, repeats: int) -> dict[str, float]:
    """Best seconds per pass of each way at context length T."""
    q, k, v = (split_heads(torch.randn(batch, T, heads * head_dim), heads).requires_grad_()
               for _ in range(3))
    mask, upstream = causal_mask(T), torch.randn(batch, heads, T, head_dim)
    with torch.no_grad():
        torch.testing.assert_close(causal_attention_batched(q, k, v, mask), fused(q, k, v, mask),
                                   atol=1e-5, rtol=1e-4)
    best = {name: float("inf") for name in WAYS}
    for _ in range(rounds):
        for name, way in WAYS.items():
            time_runs(way, q, k, v, mask, upstream, 1)  # warm-up: the first pass allocates
            best[name] = min(best[name], time_runs(way, q, k, v, mask, upstream, repeats))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024],
                        help="context lengths T to time")
    parser.add_argument("--tokens", type=int, default=1024,
                        help="tokens per batch: the batch at length T is max(1, tokens // T)")
    preset = get_config("cpu-small")
    parser.add_argument("--heads", type=int, default=preset.n_heads, help="default: the cpu-small preset's")
    parser.add_argument("--head-dim", type=int, default=preset.head_dim, help="default: the cpu-small preset's")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the best counts")
    parser.add_argument("--repeats", type=int, default=10, help="passes per round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    for name in ("tokens", "heads", "head_dim", "rounds", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if min(args.lengths) < 1:
        parser.error(f"every --lengths value must be at least 1, got {min(args.lengths)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; {args.heads} heads of {args.head_dim}, "
          f"float32, forward + backward, best of {args.rounds} rounds")
    print(f"{'T':>6} {'batch':>6} {'fused ms':>10} {'batched ms':>11} {'batched/fused':>14}  model uses")
    for T in args.lengths:
        batch = max(1, args.tokens // T)
        best = measure(T, batch, args.heads, args.head_dim, args.rounds, args.repeats)
        uses = "batched" if batched_beats_sdpa("cpu", torch.float32, T) else "fused"
        print(f"{T:>6} {batch:>6} {best['fused'] * 1e3:>10.2f} {best['batched'] * 1e3:>11.2f} "
              f"{best['batched'] / best['fused']:>14.2f}  {uses}")
    print(f"(below 1: the batched matmuls are faster; the model switches at T = {SHORT_CONTEXT_ON_CPU})")


if __name__ == "__main__":
    main()
