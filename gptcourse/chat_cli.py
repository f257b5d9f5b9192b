"""`python -m gptcourse chat`: a terminal chat with SmolLM2, or text completion with your own model.

The reply is printed token by token as it is generated. Ctrl-C stops a reply (the conversation
goes on without it); Ctrl-C or Ctrl-D at the prompt, or /quit, ends the chat; /reset forgets
the conversation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from .chat import Chat, stream_text, stream_tokens
from .validate import InputError, require_int, require_number, require_optional_int

CHAT_EPILOG = """examples:
  gptcourse chat                                      chat with SmolLM2-135M-Instruct
  gptcourse chat --temperature 0.7 --top-k 50 --seed 1  sampled replies
  gptcourse chat --checkpoint runs/tinyshakespeare-char  continue text with your own model
  gptcourse chat --adapter runs/lora/adapter.pt        SmolLM2 with a fine-tuned LoRA adapter
"""


def add_chat_parser(commands) -> None:
    """The `chat` subcommand and its options."""
    chat = commands.add_parser("chat", help="chat with SmolLM2 (or continue text with your model)",
                             epilog=CHAT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    chat.add_argument("--checkpoint", metavar="FOLDER_OR_FILE", default=None,
                    help="a model from `gptcourse train`: it continues what you type (no chat template)")
    chat.add_argument("--adapter", metavar="FILE", default=None,
                    help="a LoRA adapter for SmolLM2 (chapter 10), loaded onto its weights")
    chat.add_argument("--system", default=None, help="a system message for SmolLM2 (default: the one an --adapter was trained "
                         "with, else SmolLM2's own)")
    chat.add_argument("--max-tokens", type=int, default=200, help="the longest reply, in tokens (default 200)")
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); 0.7 is livelier")
    chat.add_argument("--top-k", type=int, default=None, help="only pick among the k likeliest tokens")
    chat.add_argument("--seed", type=int, default=None, help="same seed, same replies")
    chat.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace, read: Callable[[str], str] | None = None) -> int:
    """Run the chat loop; every problem a user can fix is one line on stderr and exit code 1.

    `read` asks for a line (the built-in `input` unless a test passes another)."""
    read = read or input
    require_int("--max-tokens", args.max_tokens, low=1)
    require_number("--temperature", args.temperature, low=0, hint=" (0 means greedy)")
    require_optional_int("--top-k", args.top_k, low=1)
    require_optional_int("--seed", args.seed, low=0)
    from .adapter import AdapterError
    from .smollm2 import ModelUnavailableError

    if args.checkpoint and args.adapter:
        raise InputError("--adapter goes with SmolLM2, --checkpoint with your own model: give one")
    try:
        respond, who = (_completion(args) if args.checkpoint else _smollm2_chat(args))
    except (ModelUnavailableError, AdapterError) as exc:
        print(f"gptcourse chat: error: {exc}", file=sys.stderr)
        return 1
    print(f"{who}. Ctrl-C stops a reply; /reset forgets the conversation; /quit or Ctrl-D ends.")
    while True:
        try:
            line = read("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        command = line.strip()
        if command in ("/quit", "/exit"):
            return 0
        if not command:
            continue
        print("model> ", end="", flush=True)
        pieces = None
        try:
            pieces = respond(line)
            for piece in pieces:
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            print(" [stopped]", end="")
        except InputError as exc:  # e.g. a character the model's tokenizer does not know
            print(f"(cannot continue this text: {exc})", end="")
        finally:
            if pieces is not None:
                pieces.close()  # a stopped reply leaves nothing half-added to the conversation
        print()


def _smollm2_chat(args: argparse.Namespace):
    from .smollm2 import load_smollm2

    model, tokenizer = load_smollm2()
    who, system = "SmolLM2-135M-Instruct", args.system
    if args.adapter:
        from .adapter import load_adapter, read_adapter

        load_adapter(args.adapter, model)  # checks that it fits before changing the model
        who += f" with the adapter {args.adapter}"
        # A model answers best under the system message it was tuned with (`gptcourse finetune`
        # stores it in the adapter): use that one unless --system asks for another.
        trained_with = read_adapter(args.adapter)["extra"].get("system")
        if system is None and isinstance(trained_with, str):
            system = trained_with
            who += f" (system message it was trained with: {system!r})"
    session = Chat(model, tokenizer, system=system, max_new_tokens=args.max_tokens,
                   temperature=args.temperature, top_k=args.top_k, seed=args.seed)

    def respond(line: str):
        nonlocal session
        if line.strip() == "/reset":
            session = Chat(model, tokenizer, system=system, max_new_tokens=args.max_tokens,
                           temperature=args.temperature, top_k=args.top_k, seed=args.seed)
            return _said("(conversation forgotten)")
        return session.stream(line)

    return respond, who


def _completion(args: argparse.Namespace):
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .run_folder import CHECKPOINT_NAME
    from .tokenizers import text_to_token_ids

    path = Path(args.checkpoint)
    path = path / CHECKPOINT_NAME if path.is_dir() else path
    model, tokenizer = model_from_checkpoint(load_checkpoint(path))
    if tokenizer is None:
        raise ValueError(f"{path} holds no tokenizer, so typed text cannot become its ids")
    generator = None if args.seed is None else torch.Generator().manual_seed(args.seed)
    temperature = args.temperature

    def respond(line: str):
        if line.strip() == "/reset":
            return _said("(nothing to forget: each line is continued on its own)")
        ids = text_to_token_ids(line, tokenizer)[0].tolist()
        tokens = stream_tokens(model, ids, args.max_tokens, temperature, args.top_k,
                               generator=generator)
        return stream_text(tokens, tokenizer)

    return respond, f"your model from {path} (it continues your text)"


def _said(text: str) -> Iterator[str]:
    yield text
