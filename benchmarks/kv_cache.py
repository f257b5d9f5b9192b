"""Benchmark: greedy decoding with a KV cache, GPT-2 124M architecture, on CPU, against `transformers`.

    python benchmarks/kv_cache.py                      # 1 and 2 threads, 200 new tokens, 5 rounds
    python benchmarks/kv_cache.py --threads 2 --rounds 7
    python benchmarks/kv_cache.py --no-uncached --no-low-precision

One randomly initialised `transformers` GPT2LMHeadModel gives its weights to our GPTModel
(gptcourse.pretrained.gpt2_from_hf), so both decode the very same function; the benchmark
checks that they produce identical tokens. Random weights are fine for timing: the work per
token does not depend on the values. For each thread count, in alternating rounds, it times:
  ours          generate_cached(model, prompt, n): the default path (gptcourse.fastdecode)
  reference     generate_cached(..., fast=False): the model's own modules, the explicit version
  transformers  GPT2LMHeadModel.generate(use_cache=True, do_sample=False)
  floor         every Linear layer once on one token, as many times as tokens: reads every weight
                once and nothing else, so no cached step can be faster
                (gptcourse.lowprec.weight_reading_floor)
The headline is the median over rounds of each round's own ratio (theirs / ours): the sides of
a round run seconds apart, so a busy machine slows them alike. Then, once, at the last thread
count: generate_text_simple (no cache) and the low-precision copies of our model
(gptcourse.lowprec): their speed against fp32, their own floor, and how many of their greedy
tokens agree with fp32's.
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F
from _paired import paired_ratio, timed

from gptcourse.generate import generate_text_simple
from gptcourse.kvcache import generate_cached
from gptcourse.lowprec import (
    LOW_PRECISION,
    greedy_agreement,
    low_precision_copy,
    weight_reading_floor,
)
from gptcourse.model import GPTModel
from gptcourse.pretrained import gpt2_from_hf


def operation_overhead(model: GPTModel, prompt: torch.Tensor, n: int, rounds: int) -> float:
    """Seconds to decode n tokens with a model of the same depth but tiny widths (emb 48, vocab 100).

    Its matrices take no time to read, so what is left is the cost of the operations themselves:
    each of the few hundred small calls per token (dispatch, Python) takes microseconds.
    """
    tiny = GPTModel(model.cfg.replace(emb_dim=48, vocab_size=100)).eval()
    ids = prompt % 100
    generate_cached(tiny, ids, 3)
    return min(timed(lambda: generate_cached(tiny, ids, n))[1] for _ in range(rounds))


@torch.no_grad()
def stored_layout_seconds(model: torch.nn.Module, repeats: int) -> float:
    """Seconds to run every Linear layer once on one token with its weight as nn.Linear stores
    it, (out, in): the floor without the input-major copies of the default path."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.zeros(1, 1, layer.in_features) for layer in layers]

    def one_pass() -> None:
        for layer, x in zip(layers, inputs):
            F.linear(x, layer.weight, layer.bias)
    return min(timed(one_pass)[1] for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per thread count")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch CPU thread counts to measure, in one run (default: 1 2)")
    parser.add_argument("--uncached", action=argparse.BooleanOptionalAction, default=True,
                        help="also time generate_text_simple (slow)")
    parser.add_argument("--low-precision", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the low-precision copies (gptcourse.lowprec)")
    args = parser.parse_args()
    if args.new_tokens < 1 or args.prompt_tokens < 1 or args.rounds < 1 or min(args.threads) < 1:
        parser.error("--new-tokens, --prompt-tokens, --rounds and --threads must be at least 1")
    import transformers  # a dev dependency: only this benchmark needs it

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    model = gpt2_from_hf(hf)
    prompt = torch.randint(0, model.cfg.vocab_size, (1, args.prompt_tokens))
    n = args.new_tokens
    print(f"GPT-2 124M architecture, random weights, {prompt.size(1)}-token prompt, {n} new tokens, "
          f"CPU, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{platform.processor() or platform.machine()}")

    def theirs() -> torch.Tensor:
        with torch.no_grad():
            return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                               min_new_tokens=n, do_sample=False, use_cache=True,
                               pad_token_id=hf.config.eos_token_id)

    sides = {
        "ours": lambda: generate_cached(model, prompt, n),
        "reference": lambda: generate_cached(model, prompt, n, fast=False),
        "transformers": theirs,
    }
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name in ("ours", "reference"):  # warm-up: allocation, kernel choice
            generate_cached(model, prompt, 3, fast=name == "ours")
        hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False,
                    pad_token_id=hf.config.eos_token_id)
        seconds, results = {name: [] for name in [*sides, "floor"]}, {}
        for _ in range(args.rounds):
            for name, side in sides.items():
                results[name], took = timed(side)
                seconds[name].append(took)
            # As many passes as tokens: a mean over n tokens, like the others' rounds.
            seconds["floor"].append(weight_reading_floor(model, repeats=1, passes=n)[0] * n)
        for name in ("ours", "reference"):
            if not torch.equal(results[name], results["transformers"]):
                raise SystemExit(f"{name}: our tokens differ from transformers'")
        best = {name: min(times) for name, times in seconds.items()}
        floor_bytes = weight_reading_floor(model, repeats=1)[1]
        stored = stored_layout_seconds(model, args.rounds)
        overhead = operation_overhead(model, prompt, n, args.rounds)
        print(f"\n{threads} thread(s): ours {n / best['ours']:.2f} tok/s, reference "
              f"{n / best['reference']:.2f} tok/s, transformers {n / best['transformers']:.2f} tok/s "
              f"(identical {n} tokens)")
        print(f"  ours / transformers:      {paired_ratio(seconds['ours'], seconds['transformers']):.2f}x"
              f" (median of {args.rounds} paired rounds), {best['transformers'] / best['ours']:.2f}x "
              f"(best rounds)")
        print(f"  reference / transformers: "
              f"{paired_ratio(seconds['reference'], seconds['transformers']):.2f}x (median), "
              f"{best['transformers'] / best['reference']:.2f}x (best rounds)")
        floor_ms = 1e3 * best["floor"] / n
        print(f"  weight-reading floor:     {floor_ms:.1f} ms per token ({floor_bytes / 1e6:.0f} MB at "
              f"{floor_bytes * n / best['floor'] / 1e9:.1f} GB/s); ours at "
              f"{paired_ratio(seconds['ours'], seconds['floor']):.2f} of it (median), transformers at "
              f"{paired_ratio(seconds['transformers'], seconds['floor']):.2f}")
        print(f"  the same weights as nn.Linear stores them, (out, in): {1e3 * stored:.1f} ms per "
              f"token ({floor_bytes / stored / 1e9:.1f} GB/s)")
        print(f"  operations' own cost:     {1e3 * overhead / n:.1f} ms per token (the same "
              f"{model.cfg.n_layers} blocks with tiny matrices); floor + this is "
              f"{floor_ms + 1e3 * overhead / n:.1f} ms, ours takes {1e3 * best['ours'] / n:.1f} ms")

    tokens_ours = results["ours"]
    if args.uncached:
        plain, t_plain = timed(lambda: generate_text_simple(model, prompt, n))
        print(f"\nwithout cache:              {n / t_plain:.2f} tokens/s; cache speed-up "
              f"{t_plain / best['ours']:.2f}x (at most {t_plain / best['floor']:.2f}x: uncached / floor)"
              f"; same tokens {torch.equal(plain, tokens_ours)}")
    if args.low_precision:
        print(f"\n{'low precision':16s}{'tokens/s':>10s}{'vs fp32':>9s}{'vs own floor':>14s}"
              f"{'agree (forced)':>16s}{'agree (free)':>14s}")
        for kind in LOW_PRECISION:
            small = low_precision_copy(model, kind)
            generate_cached(small, prompt, 3)
            t_small = min(timed(lambda small=small: generate_cached(small, prompt, n))[1]
                          for _ in range(args.rounds))
            low_floor = weight_reading_floor(small, repeats=args.rounds, passes=n)[0] * n
            agreement = greedy_agreement(model, small, prompt, n, reference_tokens=tokens_ours)
            print(f"{kind:16s}{n / t_small:10.2f}{best['ours'] / t_small:8.2f}x{low_floor / t_small:14.2f}"
                  f"{agreement.forced:16.1%}{agreement.free:14.1%}")


if __name__ == "__main__":
    main()
