"""Benchmark: training tokens/s, achieved FLOP/s and MFU of a GPT config on one device.

    python benchmarks/mfu.py --preset cpu-small --device cpu --batch 32 --steps 10
    python benchmarks/mfu.py --preset cpu-small --device cpu --no-fast
    python benchmarks/mfu.py --preset cpu-small --device cpu --batch 32 --both --rounds 3
    python benchmarks/mfu.py --preset gpt2-small --device cuda --dtype bf16 --batch 16 --both
    python benchmarks/mfu.py --preset gpt2-small --device cuda --dtype bf16 --peak-tflops 989

FLOPs per token come from the formula 6·N + 12·L·T·d (gptcourse.flops). The peak is a measured
fp32 (or bf16) matmul on a CPU, the data-sheet dense peak for a known GPU, or --peak-tflops.
On a GPU the MFU against a measured large bf16/fp32 matmul is printed too: a practical ceiling.
Weights are random and batches are random tokens: the work per step does not depend on them.
"""

from __future__ import annotations

import argparse
import platform

import torch

from gptcourse.attention import batched_beats_sdpa
from gptcourse.config import PRESETS, get_config
from gptcourse.flops import training_flops_per_token
from gptcourse.mfu import (
    DTYPES,
    attention_path,
    measure_matmul_flops,
    measure_training_throughput,
    mfu,
    peak_flops,
)
from gptcourse.model import GPTModel, count_parameters


def run(cfg, args, device: torch.device) -> tuple[float, float]:
    """Time one configuration, print its figures; return (achieved FLOP/s, peak FLOP/s)."""
    torch.manual_seed(0)
    model = GPTModel(cfg).to(device)
    path = attention_path(model)
    seq_len = args.seq_len or cfg.context_length
    if path == "scaled_dot_product_attention" and batched_beats_sdpa(device, DTYPES[args.dtype], seq_len):
        path += f" (batched matmuls: {seq_len} tokens on a CPU)"
    if args.compile:
        model = torch.compile(model)
    result = measure_training_throughput(model, args.batch, seq_len, args.steps, args.warmup, args.dtype)
    flops_per_token = training_flops_per_token(cfg, seq_len)
    peak = peak_flops(device, args.dtype, args.peak_tflops)
    achieved = result.tokens_per_s * flops_per_token
    print(f"attention path      {path}{' (torch.compile)' if args.compile else ''}; "
          f"LayerNorm/GELU {'fused' if cfg.fast else 'explicit'}")
    print(f"step time           {1e3 * sum(result.step_times) / len(result.step_times):.1f} ms "
          f"(mean of {args.steps}, after {args.warmup} warm-up steps)")
    print(f"training tokens/s   {result.tokens_per_s:,.0f}")
    print(f"FLOPs per token     {flops_per_token:,} (6·N + 12·L·T·d, T={seq_len})")
    print(f"achieved            {achieved / 1e12:.4g} TFLOP/s")
    print(f"peak                {peak.flops / 1e12:.4g} TFLOP/s ({peak.source})")
    print(f"MFU                 {mfu(result.tokens_per_s, flops_per_token, peak.flops):.1%}")
    if device.type == "cuda":
        measured = measure_matmul_flops(device, args.dtype, n=8192, repeats=10)
        print(f"MFU vs measured     {achieved / measured:.1%} (8192^3 {args.dtype} matmul: "
              f"{measured / 1e12:.4g} TFLOP/s)")
        print(f"peak GPU memory     {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    print()
    return achieved, peak.flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-small", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES),
                        help="bf16 runs the matmuls under autocast (fp32 weights)")
    parser.add_argument("--fast", action=argparse.BooleanOptionalAction, default=None,
                        help="attention, LayerNorm and GELU through the fast kernels (GPTConfig.fast; "
                             "default: the preset's)")
    parser.add_argument("--both", action="store_true",
                        help="run the explicit and the fast kernels, alternating --rounds times")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the runs, alternating paths")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: context)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the peak")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="dropout (default 0: no dropout)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA GPU")

    cfg = get_config(args.preset, drop_rate=args.drop_rate)
    with torch.device("meta"):
        n_params = count_parameters(GPTModel(cfg))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"{args.preset}: {n_params:,} parameters (tied counted once); L={cfg.n_layers}, "
          f"d={cfg.emb_dim}, heads={cfg.n_heads}, vocab={cfg.vocab_size}")
    print(f"device {device} ({name}), {args.dtype}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, batch {args.batch}\n")
    choices = [False, True] if args.both else [cfg.fast if args.fast is None else args.fast]
    best_achieved: dict[bool, float] = {}
    best_peak = 0.0
    for _ in range(args.rounds):
        for fast in choices:
            achieved, peak = run(cfg.replace(fast=fast), args, device)
            best_achieved[fast] = max(best_achieved.get(fast, 0.0), achieved)
            best_peak = max(best_peak, peak)
    if args.rounds > 1:
        # A busy machine slows some rounds: each round's MFU divides one noisy time by another.
        # The best step and the best matmul over all rounds are the least disturbed of each.
        print(f"best of {args.rounds} rounds (best step / best peak, {best_peak / 1e12:.4g} TFLOP/s):")
        for fast, achieved in best_achieved.items():
            label = "fast kernels" if fast else "explicit attention, LayerNorm and GELU"
            print(f"  {label:45s} MFU {achieved / best_peak:.1%}")


if __name__ == "__main__":
    main()
