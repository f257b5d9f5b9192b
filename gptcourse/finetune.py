"""Fine-tuning on (prompt, response) pairs: padded batches and a loss on the response tokens only.

The model reads prompt + response and, at every position, predicts the next token. We want it to
learn to *answer*, not to write prompts, so the targets of the prompt's positions (and of the
padding that makes a batch rectangular) are set to IGNORE_INDEX, which F.cross_entropy skips:

    tokens   p0  p1  p2  r0  r1  END
    inputs   p0  p1  p2  r0  r1           (the last token is only ever a target)
    targets  --  --  r0  r1  END          (-- = IGNORE_INDEX, on padding positions too)

Padding goes on the right: with causal attention no real token ever looks at a padding token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .chat import stream_tokens
from .loss import logits_of
from .progress import progress_bar
from .validate import (
    ArgumentTypeError,
    InputError,
    require_flag,
    require_generator,
    require_int,
    require_optional_int,
    require_positive_int,
)

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index


def _check_ids(name: str, ids) -> list[int]:
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise ArgumentTypeError(f"{name} must be a list of token ids, got {type(ids).__name__}")
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or i < 0]
    if bad:
        raise InputError(f"{name} must hold token ids (ints >= 0), got {bad[:3]!r}")
    if not ids:
        raise InputError(f"{name} is empty: every example needs at least one prompt token and one "
                         f"response token (the end-of-response token counts)")
    return list(ids)


def collate(batch: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
            ignore_index: int = IGNORE_INDEX, max_length: int | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), both (B, T) long: each prompt + response, shifted by one and right-padded.

    Targets are ignore_index on every prompt and padding position, so only the response tokens
    (its end token included, once) are learned. max_length cuts every row to its first
    max_length positions (what does not fit in the model's context is dropped).
    """
    if isinstance(batch, (str, bytes, dict)) or not isinstance(batch, Sequence) or not batch:
        raise InputError(f"batch must be a non-empty list of (prompt_ids, response_ids) pairs, "
                         f"got {batch!r:.80}")
    pad_id = require_int("pad_id", pad_id, low=0, hint=" (any real token id: it is never a target)")
    ignore_index = require_int("ignore_index", ignore_index, high=-1,
                               hint=" (a negative number, so it is never a real token id)")
    max_length = require_optional_int("max_length", max_length, low=1)
    rows = []
    for i, pair in enumerate(batch):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(f"batch[{i}] must be a pair (prompt_ids, response_ids), got {pair!r:.80}")
        prompt = _check_ids(f"batch[{i}] prompt_ids", pair[0])
        response = _check_ids(f"batch[{i}] response_ids", pair[1])
        tokens = prompt + response
        inputs = tokens[:-1]  # the last token is only ever a target
        # targets[t] = tokens[t + 1]: a response token iff t + 1 >= len(prompt).
        targets = [ignore_index] * (len(prompt) - 1) + response
        rows.append((inputs[:max_length], targets[:max_length]))
    T = max(len(inputs) for inputs, _ in rows)
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    y = torch.full((len(rows), T), ignore_index, dtype=torch.long)
    for i, (inputs, targets) in enumerate(rows):
        x[i, :len(inputs)] = torch.tensor(inputs)
        y[i, :len(targets)] = torch.tensor(targets)
    return x, y


def _device_of(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _check_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2
            and all(isinstance(t, torch.Tensor) for t in batch)):
        raise ArgumentTypeError("batch must be the pair (inputs, targets) that collate returns")
    inputs, targets = batch
    if inputs.shape != targets.shape or inputs.dim() != 2:
        raise InputError(f"inputs and targets must both be (batch, tokens), got {tuple(inputs.shape)} "
                         f"and {tuple(targets.shape)}")
    return inputs, targets


def masked_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over the response tokens of a collated batch (prompt and padding skipped)."""
    inputs, targets = _check_batch(batch)
    if not (targets != ignore_index).any():
        raise InputError("the batch has no response token to learn from (every target is "
                         "ignore_index): is max_length shorter than the prompts?")
    device = _device_of(model)
    logits = logits_of(model(inputs.to(device)))  # (B, T, vocab)
    return F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten(), ignore_index=ignore_index)


@torch.no_grad()
def response_loss(model: torch.nn.Module, loader, num_batches: int | None = None,
                  ignore_index: int = IGNORE_INDEX) -> float:
    """The loss per response token over a loader's batches (every token weighs the same)."""
    num_batches = require_optional_int("num_batches", num_batches, low=1)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = _device_of(model)
    try:
        for i, batch in enumerate(loader):
            if num_batches is not None and i >= num_batches:
                break
            inputs, targets = _check_batch(batch)
            targets = targets.to(device)
            logits = logits_of(model(inputs.to(device)))
            total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                     ignore_index=ignore_index, reduction="sum").item()
            count += int((targets != ignore_index).sum())
    finally:
        model.train(was_training)
    return total / count if count else math.nan


def instruction_loader(pairs: Sequence[tuple[list[int], list[int]]], batch_size: int, pad_id: int,
                       shuffle: bool = False, generator: torch.Generator | None = None,
                       max_length: int | None = None) -> DataLoader:
    """Batches of collated (inputs, targets) from tokenized pairs (seed `generator` to shuffle the same way)."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
        raise InputError("pairs must be a non-empty list of (prompt_ids, response_ids), "
                         "e.g. tokenize_entries(entries, tokenize_chat, tokenizer)")
    require_positive_int("batch_size", batch_size)
    require_flag("shuffle", shuffle)
    require_generator("generator", generator)
    collate(pairs[:1], pad_id, max_length=max_length)  # bad settings fail here, not in a worker
    return DataLoader(list(pairs), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=partial(collate, pad_id=pad_id, max_length=max_length))


def generate_replies(model: torch.nn.Module, prompts: Sequence[Sequence[int]], end_id: int,
                     max_new_tokens: int = 64, progress: bool = True) -> list[list[int]]:
    """The greedy reply ids to each prompt (KV cache), each stopped after end_id (not included)."""
    require_int("end_id", end_id, low=0)
    require_positive_int("max_new_tokens", max_new_tokens)
    replies = []
    for prompt in progress_bar(prompts, desc="replies", disable=not progress):
        ids = list(stream_tokens(model, prompt, max_new_tokens, stop_ids=[end_id]))
        replies.append(ids[:-1] if ids and ids[-1] == end_id else ids)
    return replies
