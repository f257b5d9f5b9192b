"""Benchmark: our Python GPT-2 encoder against tiktoken's (Rust), on the whole of Tiny Shakespeare.

    python benchmarks/bpe_encode.py              # best of 3 runs each
    python benchmarks/bpe_encode.py --repeats 5

Both run in this one process, one after the other, on the same text, so the ratio compares
like with like. Ours is timed twice: with an empty word cache (every distinct piece of the
pre-tokenizer goes through the merge loop once), and again with the cache full (as when a
tokenizer encodes many texts in a row; then most of the time is the regex split).
Both must give the same 338,025 ids; the script checks that before printing any speed.
"""

from __future__ import annotations

import argparse
import platform
import time

from gptcourse.data import load_text
from gptcourse.gpt2_bpe import gpt2_bpe
from gptcourse.tokenizers import gpt2_tokenizer


def best_time(fn, text: str, repeats: int, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn(text)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the best counts")
    args = parser.parse_args(argv)

    text = load_text()
    tiktoken_enc, ours = gpt2_tokenizer(), gpt2_bpe()
    ids = tiktoken_enc.encode_ordinary(text)
    assert ours.encode_ordinary(text) == ids, "our encoder disagrees with tiktoken"
    print(f"Tiny Shakespeare: {len(text):,} characters -> {len(ids):,} GPT-2 tokens (identical)")
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")

    t_tiktoken = best_time(tiktoken_enc.encode_ordinary, text, args.repeats)
    t_cold = best_time(ours.encode_ordinary, text, args.repeats, before=ours.clear_cache)
    t_warm = best_time(ours.encode_ordinary, text, args.repeats)
    print(f"{'encoder':28} {'seconds':>8} {'tokens/s':>12} {'time / tiktoken time':>22}")
    for name, seconds in [("tiktoken (Rust)", t_tiktoken), ("ours, empty word cache", t_cold),
                          ("ours, full word cache", t_warm)]:
        print(f"{name:28} {seconds:8.3f} {len(ids) / seconds:12,.0f} "
              f"{seconds / t_tiktoken:21.1f}x")


if __name__ == "__main__":
    main()
