"""What `gptcourse finetune` trains and on what: the model, its prompt format, the tokenized data.

- LoRA on SmolLM2-135M-Instruct, with its own chat template (instruct.tokenize_chat);
- full fine-tuning of a course GPTModel from `gptcourse train`, with the Alpaca layout
  (instruct.tokenize_alpaca) and the checkpoint's own tokenizer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial

import torch

from .chat import IM_END
from .checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    tokenizer_from_vocab,
    tokenizer_to_vocab,
)
from .config import GPTConfig
from .finetune_run import fit_to_window
from .instruct import (
    alpaca_prompt,
    load_instruction_data,
    special_id,
    split_entries,
    tokenize_alpaca,
    tokenize_chat,
)
from .llama import LlamaConfig, LlamaModel
from .lora import DEFAULT_TARGETS, inject_lora, trainable_parameters
from .model import GPTModel, count_parameters
from .tokenizers import END_OF_TEXT, CharTokenizer
from .validate import InputError

# A short system message instead of SmolLM2's own (about 20 tokens). Measured on the training
# entries: prompts shrink from 44 to 31 tokens on average, so a step costs about a fifth less;
# and the base model's validation loss is lower with it (1.06 against 1.13 on 16 entries), as
# the data's answers are short. `gptcourse chat` must then be given the same --system.
DEFAULT_SYSTEM = "Answer briefly."
# SmolLM2's rows are at most about 100 tokens in this data; longer rows of other data are cut.
SMOLLM2_MAX_LENGTH = 256

Setup = tuple[torch.nn.Module, object, Callable, int, str]  # model, tokenizer, tokenize, pad id, description


def check_lora_flags(targets: list[str] | None, r: int | None, alpha: float | None) -> None:
    """Try --targets and --lora-r on SmolLM2's shape (on the meta device: no memory, no loading)."""
    with torch.device("meta"):
        try:
            inject_lora(LlamaModel(LlamaConfig()), targets or DEFAULT_TARGETS, r=1, alpha=1.0)
        except InputError as exc:
            raise InputError(f"--targets: {exc}") from None
        try:
            inject_lora(LlamaModel(LlamaConfig()), targets or DEFAULT_TARGETS, r=r or 8, alpha=alpha or 16.0)
        except InputError as exc:
            raise InputError(f"--lora-r: {exc}") from None


def smollm2_lora(settings: dict) -> Setup:
    """SmolLM2 with LoRA layers injected (A seeded by --seed), prompts in its chat template."""
    # Looked up when called, so that a test can put a small model in the place of the 135M one.
    from . import smollm2

    model, tokenizer = smollm2.load_smollm2()
    torch.manual_seed(settings["seed"])
    inject_lora(model, settings["targets"], settings["lora_r"], settings["lora_alpha"])
    if settings["max_length"] is None:
        settings["max_length"] = SMOLLM2_MAX_LENGTH
    trainable, total = trainable_parameters(model), count_parameters(model)
    describe = (f"LoRA on SmolLM2-135M-Instruct (r={settings['lora_r']}, alpha={settings['lora_alpha']:g} "
                f"on {', '.join(settings['targets'])}): {trainable:,} trainable of {total:,} parameters "
                f"({100 * trainable / total:.2f}%)")
    tokenize = partial(tokenize_chat, tokenizer=tokenizer, system=settings["system"])
    return model, tokenizer, tokenize, special_id(tokenizer, IM_END), describe


def course_gpt(settings: dict, extra: dict) -> Setup:
    """The course GPT of --checkpoint, all weights trainable, prompts in the Alpaca layout.

    Its config and tokenizer go into `extra` (saved in the state), so a resumed run rebuilds
    the model from the state alone.
    """
    if "model_config" in extra:
        model = GPTModel(GPTConfig.from_dict(extra["model_config"]))
        tokenizer = tokenizer_from_vocab(extra["tokenizer"])
    else:
        model, tokenizer = model_from_checkpoint(load_checkpoint(settings["checkpoint"]))
        if tokenizer is None:
            raise InputError(f"--checkpoint {settings['checkpoint']} holds no tokenizer, so the "
                             f"instructions cannot become its ids: use a checkpoint from gptcourse train")
        extra.update(model_config=model.cfg.to_dict(), tokenizer=tokenizer_to_vocab(tokenizer))
    context = model.cfg.context_length
    if settings["max_length"] is None:
        settings["max_length"] = context
    if settings["max_length"] > context:
        raise InputError(f"--max-length {settings['max_length']} is longer than the model's context "
                         f"({context} tokens): use at most --max-length {context}")
    if isinstance(tokenizer, CharTokenizer):
        # A character tokenizer has no end-of-text token, and its vocabulary is fixed by the
        # model's size: a newline ends every answer instead.
        layout = set(alpaca_prompt({"instruction": "a", "input": "a", "output": "a"})) | {"\n"}
        missing = sorted(layout - tokenizer.stoi.keys())
        if missing:
            raise InputError(f"the character tokenizer of --checkpoint cannot write {''.join(missing)!r}, "
                             f"which the Alpaca prompt needs, so no entry can be encoded: fine-tune a "
                             f"model trained with --tokenizer gpt2, or on a text that has these characters")
        end_id = tokenizer.stoi["\n"]
    else:
        end_id = special_id(tokenizer, END_OF_TEXT)
    torch.manual_seed(settings["seed"])  # the dropout masks, if the model has dropout
    describe = (f"Full fine-tuning of {settings['checkpoint']}: all {count_parameters(model):,} "
                f"parameters, context {context}")
    return model.train(), tokenizer, partial(tokenize_alpaca, tokenizer=tokenizer, end_id=end_id), end_id, describe


def instruction_pairs(tokenize: Callable, settings: dict, tokenizer) -> tuple[list, list]:
    """(prompt, response) ids of the training entries and of the first --val-entries validation ones.

    The split holds every checkable question out (instruct.split_entries), so the questions that
    are scored are never trained on. Entries with characters a character tokenizer lacks are dropped.
    """
    splits = split_entries(load_instruction_data(), hold_out_checkable=True)
    known = set(tokenizer.stoi) if isinstance(tokenizer, CharTokenizer) else None

    def unknown_chars(entry: dict) -> set[str]:
        return set("".join(entry.values())) - known if known is not None else set()

    dropped = [chars for e in splits.train + splits.val if (chars := unknown_chars(e))]
    if dropped:
        counts = Counter(ch for chars in dropped for ch in chars)
        common = "".join(ch for ch, _ in counts.most_common(8))
        print(f"Dropped {len(dropped)} of {len(splits.train) + len(splits.val)} training and validation "
              f"entries: their text has characters the checkpoint's tokenizer does not know (most "
              f"often {common!r}).")
    train = [e for e in splits.train if not unknown_chars(e)]
    val = [e for e in splits.val if not unknown_chars(e)]
    if not train or not val:
        raise InputError(f"no {'training' if not train else 'validation'} entry is left that the "
                         f"--checkpoint's tokenizer can encode: use a model trained with --tokenizer gpt2")
    width = settings["max_length"]
    pairs = [tokenize(e) for e in train] + [tokenize(e) for e in val[:settings["val_entries"]]]
    cut = sum(len(p) + len(r) - 1 > width for p, r in pairs)
    if cut:
        print(f"{cut} entries are longer than --max-length {width}: their prompts keep their last "
              f"tokens (as generation does), and answers that still do not fit are cut.")
    pairs = [fit_to_window(p, r, width) for p, r in pairs]
    return pairs[:len(train)], pairs[len(train):]
