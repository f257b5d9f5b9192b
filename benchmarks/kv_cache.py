"""Benchmark: greedy generation with and without the KV cache, GPT-2 124M architecture, on CPU.

    python benchmarks/kv_cache.py                 # 200 new tokens after a short prompt
    python benchmarks/kv_cache.py --new-tokens 50 --threads 2

Random weights are fine: the work per token does not depend on what the weights are.
All runs happen in this one process, one after the other, so the ratios compare like with like.
It times three generations: without the cache (generate_text_simple), with it
(generate_cached, the model's own modules) and with it through PyTorch's fused kernels
(generate_cached(fused=True)). It also times the floor of a cached step: every Linear layer on
one token, which reads every weight once and does nothing else. No cached step can beat it,
so it bounds the speed-up on this machine.
On a machine busy with other work, --threads 1 gives steadier numbers (threads that wait for
each other slow small operations down a lot). Expect the ratio to depend on the machine: a
cached step mostly reads the 500 MB of weights (memory bandwidth), while an uncached step
mostly multiplies (compute): the ratio depends on how fast the machine computes relative
to how fast it reads memory.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from gptcourse.generate import generate_text_simple
from gptcourse.kvcache import generate_cached, weight_reading_floor
from gptcourse.model import GPTModel
from gptcourse.pretrained import gpt2_config
from gptcourse.tokenizers import gpt2_tokenizer, text_to_token_ids


def timed(fn, *args, **kwargs) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--prompt", default="Hello, I am a language model,")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--size", default="124M", help="GPT-2 architecture: 124M, 355M, 774M, 1558M")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = GPTModel(gpt2_config(args.size)).eval()
    try:
        prompt = text_to_token_ids(args.prompt, gpt2_tokenizer())
    except RuntimeError:  # no tokenizer files offline: any ids do for timing
        prompt = torch.randint(0, model.cfg.vocab_size, (1, 8))
    n = args.new_tokens
    print(f"GPT-2 {args.size} architecture, random weights, {prompt.size(1)}-token prompt, "
          f"{n} new tokens, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}")

    # Warm-up: the first calls pay for memory allocation and kernel selection.
    generate_text_simple(model, prompt, 3)
    generate_cached(model, prompt, 3, fused=True)

    plain, t_plain = timed(generate_text_simple, model, prompt, n)
    cached, t_cached = timed(generate_cached, model, prompt, n)
    fused, t_fused = timed(generate_cached, model, prompt, n, fused=True)
    print(f"without cache:               {n / t_plain:7.2f} tokens/s  ({t_plain:6.2f} s)")
    print(f"with cache:                  {n / t_cached:7.2f} tokens/s  ({t_cached:6.2f} s)  "
          f"speed-up {t_plain / t_cached:5.2f}x")
    print(f"with cache, fused kernels:   {n / t_fused:7.2f} tokens/s  ({t_fused:6.2f} s)  "
          f"speed-up {t_plain / t_fused:5.2f}x")
    floor, bytes_read = weight_reading_floor(model)
    print(f"floor of a cached step:      {1e3 * floor:7.1f} ms per token (every Linear once on one token: "
          f"{bytes_read / 1e6:.0f} MB of weights at {bytes_read / floor / 1e9:.1f} GB/s)")
    print(f"per token, cached:           {1e3 * t_cached / n:7.1f} ms; fused {1e3 * t_fused / n:.1f} ms; "
          f"uncached {1e3 * t_plain / n:.1f} ms on average")
    print(f"best possible speed-up here: {t_plain / n / floor:7.2f}x (uncached time per token / floor)")
    same = torch.equal(plain, cached) and torch.equal(plain, fused)
    print(f"same tokens:                 {same}")
    if not same:
        raise SystemExit("the cached tokens differ from generate_text_simple's")


if __name__ == "__main__":
    main()
