"""`gptcourse sample`: text from a model that `gptcourse train` saved."""

from __future__ import annotations

import argparse

from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from .device import pick_device
from .kvcache import generate_text_cached
from .tokenizers import gpt2_tokenizer
from .train_cli import DEFAULT_OUT
from .validate import require_int

SAMPLE_EPILOG = f"""\
examples:
  gptcourse sample                                   sample from {DEFAULT_OUT}/ckpt.pt
  gptcourse sample --prompt "JULIET:" --temperature 0.8 --top-k 20 --seed 3
  gptcourse sample --temperature 0                   greedy: always the most likely token

Temperature divides the model's scores before the softmax: below 1 the text gets safer and more
repetitive, above 1 more surprising and more garbled. Top-k only ever picks one of the k most
likely next tokens."""


def add_sample_parser(commands) -> None:
    """The `sample` subcommand and its options."""
    parser = commands.add_parser("sample", help="generate text with a trained model", epilog=SAMPLE_EPILOG,
                                 description="Generate text from a checkpoint.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_OUT,
                        help=f"a ckpt.pt file or the folder holding it (default {DEFAULT_OUT})")
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument("--tokens", type=int, default=500, help="how many tokens to add (default 500)")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="0 = greedy, <1 safer, >1 wilder (default 0.8)")
    parser.add_argument("--top-k", type=int, default=None, help="only pick among the k likeliest tokens")
    parser.add_argument("--seed", type=int, default=1337, help="same seed, same text (default 1337)")
    parser.add_argument("--num-samples", type=int, default=1, help="how many samples (default 1)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    require_int("--num-samples", args.num_samples, low=1)
    require_int("--tokens", args.tokens, low=0)
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.get("tokenizer") == "gpt2":
        gpt2_tokenizer()  # a one-line error without the tokenizer files, before the model is built
    model, tokenizer = model_from_checkpoint(ckpt, device=pick_device(args.device))
    if tokenizer is None:
        raise CheckpointError(f"{args.checkpoint} holds no tokenizer, so its ids cannot become text")
    for i in range(args.num_samples):
        if i:
            print("\n" + "-" * 40)
        print(generate_text_cached(model, tokenizer, args.prompt, args.tokens,
                                   temperature=args.temperature, top_k=args.top_k, seed=args.seed + i))
    return 0
