"""The command line: `python -m gptcourse train | sample | data | chat | finetune` (also installed
as `gptcourse`).

This module only reads the command and reports errors; each command lives in its own module:
train_cli (with train_plan), sample_cli, data_cli, chat_cli and finetune_cli.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings

from . import distributed
from .chat_cli import add_chat_parser
from .checkpoint import CheckpointError
from .data_cli import add_data_parser
from .device import CompileError
from .download import DownloadError
from .finetune_cli import add_finetune_parser
from .run_folder import RunFolderError
from .sample_cli import add_sample_parser
from .tokenizers import TokenizerUnavailableError
from .train_cli import add_train_parser
from .validate import CourseWarning, InputError

MAIN_HELP = """\
Train a small GPT and sample text from it, on a laptop CPU or a GPU.

Typical session:
  gptcourse data                      download the corpora and GPT-2's tokenizer once
  gptcourse train                     train the course's CPU model (a few minutes on a laptop)
  gptcourse sample --prompt "ROMEO:"  write text with the trained model

Each command has its own help, e.g. `gptcourse train --help`.
`python -m gptcourse ...` works the same as `gptcourse ...`."""

# The package's own error classes: what they say is meant for the user, so the command line
# prints it as one line. Any other exception (a plain ValueError included) would be a bug in
# the course's code, and keeps its traceback so that it can be reported and fixed.
USER_ERRORS = (InputError, CheckpointError, CompileError, DownloadError, RunFolderError,
               TokenizerUnavailableError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptcourse", description=MAIN_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train_parser(commands)  # gptcourse/train_cli.py
    add_sample_parser(commands)  # gptcourse/sample_cli.py
    add_data_parser(commands)  # gptcourse/data_cli.py
    add_chat_parser(commands)  # gptcourse/chat_cli.py
    add_finetune_parser(commands)  # gptcourse/finetune_cli.py
    return parser


def _one_line_warnings(command: str, default):
    """Show the package's own warnings as one line each; others as Python shows them."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CourseWarning):
            print(f"gptcourse {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)
    return show


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors a user can fix print one line (no traceback) and return 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
            return args.func(args)
    except USER_ERRORS as exc:
        print(f"gptcourse {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        message = distributed.peer_failure_message(exc)  # a torchrun peer died: no traceback
        if message is None:
            raise
        print(f"gptcourse {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{_interrupted(args)}", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()  # leave torchrun's process group, if this process joined one


def _interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves: a training run continues from its last checkpoint; other commands just stop."""
    if args.command == "train":
        return f"Interrupted. Continue with: gptcourse train --out {shlex.quote(str(args.out))} --resume"
    return "Interrupted."


if __name__ == "__main__":
    sys.exit(main())
