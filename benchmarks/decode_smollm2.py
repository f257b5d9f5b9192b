"""Benchmark: SmolLM2-135M-Instruct's cached greedy decoding, ours against `transformers`, on CPU.

    python benchmarks/decode_smollm2.py                     # 1 and 2 threads, 100 new tokens
    python benchmarks/decode_smollm2.py --threads 2 --rounds 5 --new-tokens 200

Both sides run the very same weights: the course's LlamaModel loaded from the GGUF file
(gptcourse.smollm2.load_smollm2), and Hugging Face's LlamaForCausalLM built from it
(gptcourse.smollm2.to_transformers). The benchmark checks that they produce identical tokens
(or, where two candidates are within float rounding, that ours is what a full forward pass picks).
For each thread count, in alternating rounds (ours, theirs, ours, ...), it times:
  ours          gptcourse.chat.stream_tokens: the course's cached decode, what `gptcourse chat` runs
  transformers  LlamaForCausalLM.generate(do_sample=False, use_cache=True)
  floor         every Linear layer once on one token (gptcourse.lowprec.weight_reading_floor),
                as many times as tokens: reading every weight once per token, nothing else
The headline is the median over rounds of each round's own ratio (theirs / ours): the two sides
of a round run seconds apart, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import platform

import torch
from _paired import paired_ratio, timed

from gptcourse.chat import chat_token_ids, stream_tokens
from gptcourse.lowprec import weight_reading_floor
from gptcourse.smollm2 import load_smollm2, to_transformers


def agreement(model, prompt: list[int], ours: list[int], theirs: list[int]) -> str:
    """"identical n tokens", or where the two first differ, if only a float near-tie explains it.

    Two implementations add their floats in different orders, so where the two likeliest next
    tokens are within rounding of each other, each may pick a different one. That is no error
    as long as our pick is what a full, uncached forward pass gives; anything else stops the
    benchmark.
    """
    if ours == theirs:
        return f"identical {len(ours)} tokens"
    step = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ours[:step]]))[0, -1]
    top = logits.topk(2)
    gap = (top.values[0] - top.values[1]).item()
    if top.indices[0].item() != ours[step] or theirs[step] != top.indices[1].item() or gap > 0.01:
        raise SystemExit(f"the two sides decoded different tokens at step {step}, and not at a "
                         f"near-tie (gap {gap:.4f}): the benchmark compares nothing until they agree")
    return (f"identical for {step} tokens; then a near-tie, the two best logits {gap:.4f} apart, "
            f"which an uncached forward pass settles as ours did")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch CPU thread counts to measure, in one run (default: 1 2)")
    args = parser.parse_args()
    if args.new_tokens < 1 or args.rounds < 1 or min(args.threads) < 1:
        parser.error("--new-tokens, --rounds and --threads must be at least 1")
    import transformers  # a dev dependency: only this benchmark and the tests need it

    model, tokenizer = load_smollm2()
    hf = to_transformers(model)
    hf.generation_config.eos_token_id = None  # decode exactly n tokens on both sides
    hf.generation_config.pad_token_id = tokenizer.special_tokens["<|im_end|>"]
    prompt = chat_token_ids([{"role": "user", "content": "Tell me about the history of tea."}], tokenizer)
    ids = torch.tensor([prompt])
    n = args.new_tokens
    print(f"SmolLM2-135M-Instruct, float32, {len(prompt)}-token chat prompt, {n} new tokens, CPU, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{platform.processor() or platform.machine()}")

    def ours():
        return list(stream_tokens(model, prompt, n))

    def theirs():
        with torch.no_grad():
            out = hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True)
        return out[0, len(prompt):].tolist()

    for threads in args.threads:
        torch.set_num_threads(threads)
        ours(), theirs()  # warm-up: first calls allocate and pick kernels
        mine, hers = [], []
        for _ in range(args.rounds):
            tokens, seconds = timed(ours)
            mine.append(seconds)
            reference, seconds = timed(theirs)
            hers.append(seconds)
            same = agreement(model, prompt, tokens, reference)
        floor, floor_bytes = weight_reading_floor(model, repeats=args.rounds, passes=n)
        best_ours, best_theirs = min(mine), min(hers)
        paired = paired_ratio(mine, hers)
        print(f"{threads} thread(s): ours {n / best_ours:.1f} tok/s, transformers "
              f"{n / best_theirs:.1f} tok/s ({same})")
        print(f"  ours / transformers: {paired:.2f}x (median of {args.rounds} paired rounds), "
              f"{best_theirs / best_ours:.2f}x (best rounds)")
        print(f"  weight-reading floor: {floor * 1e3:.1f} ms per token ({floor_bytes / 2**20:.0f} MiB "
              f"of weights); ours runs at {floor * n / best_ours:.2f} of it, transformers at "
              f"{floor * n / best_theirs:.2f}")


if __name__ == "__main__":
    main()
