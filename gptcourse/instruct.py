"""Instruction data: 1,100 (instruction, input, output) entries, their splits and prompt formats.

The data is Sebastian Raschka's `instruction-data.json` from LLMs-from-scratch (Apache-2.0),
fetched once like Tiny Shakespeare (sha256-checked, written atomically) into the data folder.
A model learns to follow instructions from pairs of token lists: the prompt it is given, and
the response it should write (ending with an end-of-response token).

- `alpaca_prompt`: the Alpaca layout, for a model that has never seen a chat template;
- `chat_messages`: the same entry as a conversation, for SmolLM2's own chat template (chapter 9).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from .chat import IM_END, chat_token_ids
from .download import fetch
from .tokenizers import END_OF_TEXT, Tokenizer
from .validate import ArgumentTypeError, InputError, require_flag, require_int, require_probability

INSTRUCTION_DATA_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/"
    "28c65cdfbc3338e2e040016eea4b7fdf556e4d57/ch07/01_main-chapter-code/instruction-data.json"
)
INSTRUCTION_DATA_SHA256 = "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944"
INSTRUCTION_DATA_PATH = "instruct/instruction-data.json"
FIELDS = ("instruction", "input", "output")

ALPACA_HEADER = ("Below is an instruction that describes a task. "
                 "Write a response that appropriately completes the request.")


class InstructionDataError(InputError):
    """An instruction file that is not a list of {instruction, input, output} entries."""


def instruction_data_path(download_ok: bool = True) -> Path:
    """The verified local copy of the instruction data, downloaded into the data folder on first use."""
    return fetch(INSTRUCTION_DATA_URL, INSTRUCTION_DATA_PATH, INSTRUCTION_DATA_SHA256,
                 download_ok=download_ok)


def check_entries(entries, where: str = "entries") -> list[dict]:
    """A list of dicts with exactly the string fields instruction, input (may be empty), output."""
    if isinstance(entries, (str, bytes, dict)) or not isinstance(entries, Sequence):
        raise InstructionDataError(f"{where} must be a list of {{'instruction', 'input', 'output'}} "
                                   f"dicts, got {type(entries).__name__}")
    if not entries:
        raise InstructionDataError(f"{where} is empty: give at least one entry")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != set(FIELDS):
            keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise InstructionDataError(f"{where}[{i}] must be a dict with exactly the keys "
                                       f"{list(FIELDS)}, got {keys}")
        for field in FIELDS:
            if not isinstance(entry[field], str):
                raise InstructionDataError(f"{where}[{i}]['{field}'] must be a str, got "
                                           f"{type(entry[field]).__name__}")
        for field in ("instruction", "output"):
            if not entry[field].strip():
                raise InstructionDataError(f"{where}[{i}]['{field}'] is empty: every entry needs "
                                           f"an instruction and an output ('input' may be empty)")
    return list(entries)


def load_instruction_data(path: str | Path | None = None) -> list[dict]:
    """The entries of an instruction file (the course's, verified, unless `path` names another)."""
    path = instruction_data_path() if path is None else Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InstructionDataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InstructionDataError(f"{path} is not a valid JSON file ({exc}): it is cut short or "
                                   f"damaged; delete it and run `python -m gptcourse data`") from None
    return check_entries(entries, where=path.name)


class Splits(NamedTuple):
    train: list[dict]
    val: list[dict]
    test: list[dict]


def split_position(entry: dict) -> float:
    """A number in [0, 1) fixed by the entry's prompt: the first 8 bytes of sha256(instruction + input)."""
    key = f"{entry['instruction']}\n{entry['input']}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64


def split_entries(entries: Sequence[dict], val_fraction: float = 0.05, test_fraction: float = 0.10,
                  hold_out_checkable: bool = False) -> Splits:
    """Train, validation and test entries, each chosen by the hash of its prompt, in file order.

    An entry goes to test if split_position(entry) < test_fraction, else to validation if it is
    below test_fraction + val_fraction, else to train. The rule does not depend on the file's
    order or on a random seed, and a prompt that appears twice always lands in one split, so no
    test question is ever trained on. hold_out_checkable=True also sends every entry with a
    checkable_answer to test, so that the automatic score has more than a dozen questions.
    """
    entries = check_entries(entries)
    val_fraction = require_probability("val_fraction", val_fraction)
    test_fraction = require_probability("test_fraction", test_fraction)
    require_flag("hold_out_checkable", hold_out_checkable)
    if val_fraction + test_fraction >= 1:
        raise InputError(f"val_fraction + test_fraction must leave entries to train on, got "
                         f"{val_fraction} + {test_fraction}")
    # Held out by prompt, so a repeated question goes to test with all its copies.
    held_out = {user_text(e) for e in entries if hold_out_checkable and checkable_answer(e) is not None}
    splits = Splits([], [], [])
    for entry in entries:
        position = split_position(entry)
        if position < test_fraction or user_text(entry) in held_out:
            splits.test.append(entry)
        elif position < test_fraction + val_fraction:
            splits.val.append(entry)
        else:
            splits.train.append(entry)
    return splits


def user_text(entry: dict) -> str:
    """The instruction, followed by its input (if any) after a blank line."""
    return entry["instruction"] + (f"\n\n{entry['input']}" if entry["input"] else "")


def alpaca_prompt(entry: dict) -> str:
    """The entry in the Alpaca layout, up to where the response starts (it ends with "### Response:\\n")."""
    check_entries([entry], where="entry")
    text = f"{ALPACA_HEADER}\n\n### Instruction:\n{entry['instruction']}"
    if entry["input"]:
        text += f"\n\n### Input:\n{entry['input']}"
    return text + "\n\n### Response:\n"


def chat_messages(entry: dict, system: str | None = None) -> list[dict]:
    """The entry as a user message (SmolLM2's default system message unless `system` is given)."""
    check_entries([entry], where="entry")
    messages = [] if system is None else [{"role": "system", "content": system}]
    return [*messages, {"role": "user", "content": user_text(entry)}]


def special_id(tokenizer: Tokenizer, name: str) -> int:
    """The id of a special token such as "<|endoftext|>", with a clear error if the tokenizer lacks it."""
    if name not in tokenizer.special_tokens_set:
        raise InputError(f"the tokenizer has no special token {name!r}: pass end_id= yourself, the "
                         f"id of a token the model should write at the end of every response")
    return tokenizer.encode(name, allowed_special={name})[0]


def tokenize_alpaca(entry: dict, tokenizer: Tokenizer,
                    end_id: int | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) in the Alpaca layout; the response ends with end_id.

    end_id defaults to the tokenizer's "<|endoftext|>" (GPT-2's 50256, SmolLM2's 0); a tokenizer
    without one (the character tokenizer) needs it given. The text is encoded as ordinary
    tokens: a "<|endoftext|>" typed in the data stays text, never a control token.
    """
    end_id = special_id(tokenizer, END_OF_TEXT) if end_id is None else require_int("end_id", end_id, low=0)
    response = [*tokenizer.encode_ordinary(entry["output"]), end_id]
    return tokenizer.encode_ordinary(alpaca_prompt(entry)), response


def tokenize_chat(entry: dict, tokenizer: Tokenizer,
                  system: str | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) in SmolLM2's chat template; the response ends with <|im_end|>.

    The prompt is exactly what chat_token_ids gives a chat before the assistant's turn, so the
    model is trained on the very ids it sees when it is asked the question later. A "<|im_end|>"
    typed in the answer stays text.
    """
    prompt = chat_token_ids(chat_messages(entry, system), tokenizer, add_generation_prompt=True)
    return prompt, [*tokenizer.encode_ordinary(entry["output"]), special_id(tokenizer, IM_END)]


def tokenize_entries(entries: Sequence[dict], tokenize, tokenizer,
                     **kwargs) -> list[tuple[list[int], list[int]]]:
    """tokenize(entry, tokenizer, **kwargs) for every entry, e.g. tokenize_entries(train, tokenize_chat, tok)."""
    if not callable(tokenize):
        raise ArgumentTypeError(f"tokenize must be a function such as tokenize_alpaca or "
                                f"tokenize_chat, got {tokenize!r}")
    entries = check_entries(entries)
    return [tokenize(entry, tokenizer, **kwargs) for entry in entries]


# Automatic scoring, without a judge model: only questions with one short, checkable answer.
# The rule that picks them is written here, not chosen by hand: an entry with no input whose
# instruction is a closed question below, and whose reference output states one short answer.
CLOSED_QUESTIONS = (
    re.compile(r"What is the (?:plural form|past tense|opposite|capital|chemical symbol|atomic number)"
               r" (?:of|for) [^?]+\?"),
    re.compile(r"Convert [\d,.]+ [a-z ]+ to [a-z ]+\."),  # a unit conversion with a number
)
MAX_ANSWER_WORDS = 3


def normalise(text: str) -> str:
    """Lower case, accents and punctuation dropped, numbers kept whole ("2,000" -> "2000", "0.5")."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # thousands separators: 2,000 -> 2000
    return " ".join(re.findall(r"\d+(?:\.\d+)?|[^\W_]+", text))  # numbers with their decimals, words


def checkable_answer(entry: dict) -> str | None:
    """The short answer an entry's output states, if the entry is a closed question (else None).

    The answer is what follows the output's last " is " (or the whole output if it has none),
    without "equal to"/"equivalent to"; outputs that hedge ("approximately") or offer two answers
    (" or ") are left out, and so are answers longer than MAX_ANSWER_WORDS words.
    """
    check_entries([entry], where="entry")
    if entry["input"] or not any(q.fullmatch(entry["instruction"].strip()) for q in CLOSED_QUESTIONS):
        return None
    output = entry["output"].strip()
    if "approximately" in output or " or " in output:
        return None
    answer = output.rsplit(" is ", 1)[-1]
    answer = re.sub(r"^(?:equal to|equivalent to) ", "", answer)
    answer = normalise(answer)
    return answer if answer and len(answer.split()) <= MAX_ANSWER_WORDS else None


def reply_is_correct(reply: str, answer: str, exact: bool = False) -> bool:
    """True if the normalised answer appears as whole words in the normalised reply (exact=True: is
    the whole reply). A reply that lists several candidates can pass the first test, not the second."""
    if not isinstance(reply, str) or not isinstance(answer, str) or not normalise(answer):
        raise ArgumentTypeError(f"reply and answer must be strings (answer not empty), got "
                                f"{reply!r} and {answer!r}")
    reply, answer = normalise(reply), normalise(answer)
    return reply == answer if exact else f" {answer} " in f" {reply} "


def automatic_score(entries: Sequence[dict], replies: Sequence[str], exact: bool = False) -> dict:
    """The share of checkable entries answered correctly: {"checked", "correct", "score"}.

    replies[i] is the model's reply to entries[i]; entries without a checkable answer are skipped.
    """
    entries = check_entries(entries)
    if isinstance(replies, str) or len(replies) != len(entries):
        raise InputError(f"replies must be a list with one reply per entry ({len(entries)}), got "
                         f"{len(replies) if not isinstance(replies, str) else 'a single string'}")
    results = [reply_is_correct(reply, answer, exact) for entry, reply in zip(entries, replies)
               if (answer := checkable_answer(entry)) is not None]
    correct = sum(results)
    return {"checked": len(results), "correct": correct,
            "score": correct / len(results) if results else float("nan")}
