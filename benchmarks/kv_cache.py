"""Benchmark: greedy decoding with a KV cache, GPT-2 124M architecture, on CPU, against `transformers`.

    python benchmarks/kv_cache.py                      # 200 new tokens after an 8-token prompt
    python benchmarks/kv_cache.py --threads 1 --rounds 3
    python benchmarks/kv_cache.py --no-uncached --no-low-precision

One randomly initialised `transformers` GPT2LMHeadModel gives its weights to our GPTModel
(gptcourse.pretrained.gpt2_from_hf), so both decode the very same function; the benchmark
checks that they produce identical tokens. Random weights are fine for timing: the work per
token does not depend on the values. In alternating rounds (ours, theirs, ours, ...) it times:
  ours        generate_cached(fused=True): the course's cached decode through fused kernels
  transformers  GPT2LMHeadModel.generate(use_cache=True, do_sample=False)
  floor       every Linear layer once on one token: reads every weight once and nothing else,
              so no cached step can be faster (gptcourse.kvcache.weight_reading_floor); run as
              many times as ours decodes tokens, so that each side's round is a mean over n tokens
and, once each, generate_text_simple (no cache) and the low-precision copies of our model
(gptcourse.lowprec): their speed against fp32, their own floor, and how many of their greedy
tokens agree with fp32's. The best round of each side counts, so a busy machine slows all alike.
On a busy machine, --threads 1 gives steadier numbers than 2.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from gptcourse.generate import generate_text_simple
from gptcourse.kvcache import generate_cached, weight_reading_floor
from gptcourse.lowprec import LOW_PRECISION, greedy_agreement, low_precision_copy
from gptcourse.model import GPTModel
from gptcourse.pretrained import gpt2_from_hf


def best_seconds(fn, rounds: int) -> tuple[object, float]:
    best, out = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def operation_overhead(model: GPTModel, prompt: torch.Tensor, n: int, rounds: int) -> float:
    """Seconds to decode n tokens with a model of the same depth but tiny widths (emb 48, vocab 100).

    Its matrices take no time to read, so what is left is the cost of the operations themselves:
    each of the few hundred small calls per token (dispatch, Python) takes microseconds.
    """
    tiny = GPTModel(model.cfg.replace(emb_dim=48, vocab_size=100)).eval()
    ids = prompt % 100
    generate_cached(tiny, ids, 3, fused=True)
    return best_seconds(lambda: generate_cached(tiny, ids, n, fused=True), rounds)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--uncached", action=argparse.BooleanOptionalAction, default=True,
                        help="also time generate_text_simple (slow)")
    parser.add_argument("--low-precision", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the low-precision copies (gptcourse.lowprec)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers  # a dev dependency: only this benchmark needs it

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    model = gpt2_from_hf(hf)
    prompt = torch.randint(0, model.cfg.vocab_size, (1, args.prompt_tokens))
    n = args.new_tokens
    print(f"GPT-2 124M architecture, random weights, {prompt.size(1)}-token prompt, {n} new tokens, "
          f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, {platform.processor() or platform.machine()}")

    def ours():
        return generate_cached(model, prompt, n, fused=True)

    def theirs():
        with torch.no_grad():
            return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                               min_new_tokens=n, do_sample=False, use_cache=True,
                               pad_token_id=hf.config.eos_token_id)

    def floor():
        # As many passes as `ours` decodes tokens, timed as a whole: the floor's round is the
        # same kind of figure as the others' (the mean over n tokens), not its luckiest pass.
        return weight_reading_floor(model, repeats=1, passes=n)[0] * n

    generate_cached(model, prompt, 3, fused=True)  # warm-up: allocation, kernel choice
    theirs_short = hf.generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=0)
    del theirs_short
    best = {"ours": float("inf"), "transformers": float("inf"), "floor": float("inf")}
    for r in range(args.rounds):
        tokens_ours, seconds = best_seconds(ours, 1)
        best["ours"] = min(best["ours"], seconds)
        tokens_theirs, seconds = best_seconds(theirs, 1)
        best["transformers"] = min(best["transformers"], seconds)
        best["floor"] = min(best["floor"], floor())
        print(f"round {r + 1}: ours {n / best['ours']:6.2f}  transformers {n / best['transformers']:6.2f}"
              f"  floor {n / best['floor']:6.2f} tokens/s (best so far)", flush=True)
    bytes_read = weight_reading_floor(model, repeats=1)[1]
    same = torch.equal(tokens_ours, tokens_theirs)
    print(f"\n{'':28s}{'tokens/s':>10s}{'ms/token':>10s}")
    for name, seconds in best.items():
        print(f"{name:28s}{n / seconds:10.2f}{1e3 * seconds / n:10.1f}")
    print(f"ours / transformers:        {best['transformers'] / best['ours']:.2f}x")
    print(f"ours / floor:               {best['floor'] / best['ours']:.2f} "
          f"({bytes_read / 1e6:.0f} MB of Linear weights at {bytes_read * n / best['floor'] / 1e9:.1f} GB/s)")
    print(f"identical tokens:           {same}")
    if not same:
        raise SystemExit("our tokens differ from transformers'")
    overhead = operation_overhead(model, prompt, n, args.rounds)
    print(f"operations' own cost:       {1e3 * overhead / n:.1f} ms/token: the same {model.cfg.n_layers} "
          f"blocks with tiny matrices, so floor + this is the most a step of these operations can do "
          f"({n / (best['floor'] + overhead):.2f} tokens/s, {best['floor'] / (best['floor'] + overhead):.2f} "
          f"of the floor)")

    if args.uncached:
        plain, t_plain = best_seconds(lambda: generate_text_simple(model, prompt, n), 1)
        print(f"without cache:              {n / t_plain:.2f} tokens/s; cache speed-up "
              f"{t_plain / best['ours']:.2f}x (at most {t_plain / best['floor']:.2f}x: uncached / floor)"
              f"; same tokens {torch.equal(plain, tokens_ours)}")
    if args.low_precision:
        print(f"\n{'low precision':16s}{'tokens/s':>10s}{'vs fp32':>9s}{'vs own floor':>14s}"
              f"{'agree (forced)':>16s}{'agree (free)':>14s}")
        for kind in LOW_PRECISION:
            small = low_precision_copy(model, kind)
            generate_cached(small, prompt, 3, fused=True)
            _, seconds = best_seconds(lambda small=small: generate_cached(small, prompt, n, fused=True),
                                      args.rounds)
            low_floor = weight_reading_floor(small, repeats=args.rounds, passes=n)[0] * n
            agreement = greedy_agreement(model, small, prompt, n, reference_tokens=tokens_ours)
            print(f"{kind:16s}{n / seconds:10.2f}{best['ours'] / seconds:8.2f}x{low_floor / seconds:14.2f}"
                  f"{agreement.forced:16.1%}{agreement.free:14.1%}")


if __name__ == "__main__":
    main()
