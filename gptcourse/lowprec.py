"""Low-precision decoding: fewer bytes per weight, because a cached decode step is spent reading weights.

A cached step multiplies one token's vector by every weight matrix once, so its time is about
(bytes of weights) / (memory bandwidth). Storing the weights in fewer bytes is the lever:
  bf16  2 bytes per weight: the model converted with .to(torch.bfloat16). Fast only on CPUs
        with bf16 arithmetic; elsewhere PyTorch converts on the fly.
  int8  1 byte per weight in every Linear layer, with one scale per layer, and the activations
        quantised on the fly at each call (PyTorch's dynamic quantisation, fbgemm kernels).
Both change the logits a little; `greedy_agreement` measures how often the greedy choice
stays the same as fp32's. `weight_reading_floor` times the floor itself: every weight read once.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

from .fastdecode import side_by_side
from .kvcache import generate_cached
from .model import GPTModel
from .validate import (
    ArgumentTypeError,
    InputError,
    require_instance,
    require_int,
    require_positive_int,
)


def _require_ids(name: str, ids, model: GPTModel) -> None:
    """A tensor of token ids that `model` can read."""
    if not isinstance(ids, torch.Tensor):
        raise ArgumentTypeError(f"{name} must be a tensor of token ids of shape (1, tokens), got "
                                f"{type(ids).__name__}; e.g. text_to_token_ids(text, tokenizer)")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ArgumentTypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= model.cfg.vocab_size):
        raise InputError(f"{name} holds ids outside 0..{model.cfg.vocab_size - 1}, the model's "
                         f"vocabulary")

LOW_PRECISION = ("bf16", "int8")


def low_precision_copy(model: GPTModel, kind: str) -> GPTModel:
    """A copy of `model` for decoding with `kind` weights ("bf16" or "int8"); the model is unchanged."""
    require_instance("model", model, GPTModel)
    if not isinstance(kind, str):
        raise ArgumentTypeError(f"kind must be one of {LOW_PRECISION} (a str), got {kind!r}")
    if kind not in LOW_PRECISION:
        raise InputError(f"kind must be one of {LOW_PRECISION}, got {kind!r}")
    if kind == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16).eval()
    if not torch.backends.quantized.supported_engines or "fbgemm" not in torch.backends.quantized.supported_engines:
        raise RuntimeError("int8 decoding needs PyTorch's fbgemm quantised kernels (x86 CPUs); use 'bf16'")
    with warnings.catch_warnings():
        # PyTorch marks torch.ao.quantization as moving to the torchao package; it still works,
        # and it is the int8 CPU path that ships with PyTorch itself.
        warnings.simplefilter("ignore")
        # The copy's output head becomes its own int8 matrix; the embedding stays float (a lookup
        # reads one row per token, not the whole matrix).
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8,
                                                      inplace=False).eval()


@dataclass(frozen=True)
class Agreement:
    """How often `other`'s greedy token equals the reference's, as shares of the new tokens.

    forced: fed the reference's own tokens, `other` predicts the same next token this often
            (a disagreement does not carry over to later positions).
    free:   generating on its own from the prompt, `other` produces the same token this often
            (after a first difference the two texts usually part ways).
    """

    forced: float
    free: float


@torch.no_grad()
def greedy_agreement(reference: GPTModel, other: GPTModel, prompt: torch.Tensor, max_new_tokens: int,
                     reference_tokens: torch.Tensor | None = None) -> Agreement:
    """Compare the greedy tokens of `other` with those of `reference` after `prompt` (1, T)."""
    require_instance("reference", reference, GPTModel)
    require_instance("other", other, GPTModel, hint=" (e.g. low_precision_copy(reference, 'bf16'))")
    n = require_int("max_new_tokens", max_new_tokens, low=1)
    _require_ids("prompt", prompt, reference)
    if prompt.dim() != 2 or prompt.size(0) != 1 or prompt.size(1) == 0:
        raise InputError(f"prompt must have shape (1, tokens) with at least one token, got "
                         f"{tuple(prompt.shape)}")
    T = prompt.size(1)
    if T + n > reference.cfg.context_length:
        raise InputError(f"prompt plus max_new_tokens must fit the context length "
                         f"{reference.cfg.context_length}, got {T} + {n}")
    if reference_tokens is None:
        reference_tokens = generate_cached(reference, prompt, n)
    else:
        _require_ids("reference_tokens", reference_tokens, reference)
        # The prompt and then exactly the n tokens to compare: only the prompt would leave
        # nothing to compare (an average over no tokens is NaN, not an agreement).
        if tuple(reference_tokens.shape) != (1, T + n) or \
                not torch.equal(reference_tokens[:, :T], prompt):
            raise InputError(f"reference_tokens must be the prompt followed by the reference's "
                             f"{n} new tokens, shape (1, {T + n}), as generate_cached(reference, "
                             f"prompt, {n}) returns; got shape {tuple(reference_tokens.shape)}")
    new = reference_tokens[:, T:]                                     # (1, n)
    # Position t's logits predict token t + 1: the predictions for the n new tokens sit at T-1 ..
    forced = other(reference_tokens[:, :-1])[:, T - 1:].argmax(dim=-1)  # (1, n)
    free = generate_cached(other, prompt, n)[:, T:]
    return Agreement(forced=(forced == new).float().mean().item(), free=(free == new).float().mean().item())


@torch.no_grad()
def weight_reading_floor(model: torch.nn.Module, repeats: int = 5, passes: int = 1) -> tuple[float, int]:
    """The floor of a cached step: (seconds, bytes) to run every Linear layer once on one token.

    That reads every weight matrix once and does nothing else, so no cached step can be faster.
    Each layer runs as a long generation's default path reads it (`fastdecode.side_by_side`:
    some float32 weights input-major on a CPU). The seconds are the best of `repeats` runs, each
    the mean of `passes` passes in a row (to compare with the mean time per token of a whole
    generation, use as many passes as tokens); the bytes are what those layers' weights take.
    Layers quantised to int8 count as Linear layers, at their own size.
    """
    require_positive_int("repeats", repeats)
    require_positive_int("passes", passes)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) or _is_int8_linear(m)]
    if not layers:
        raise ValueError("the model has no Linear layers, so there is no weight-reading floor to time")
    products = [side_by_side([layer]) for layer in layers]
    # An int8 layer takes float input and does its own quantisation.
    inputs = [torch.zeros(1, 1, layer.in_features, dtype=layer.weight.dtype, device=layer.weight.device)
              if isinstance(layer, torch.nn.Linear) else torch.zeros(1, 1, layer.in_features)
              for layer in layers]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(passes):
            for product, x in zip(products, inputs):
                product(x)
        best = min(best, (time.perf_counter() - start) / passes)
    return best, sum(_weight_bytes(layer) for layer in layers)


def _is_int8_linear(module: torch.nn.Module) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized") and hasattr(module, "in_features")


def _weight_bytes(layer: torch.nn.Module) -> int:
    if isinstance(layer, torch.nn.Linear):
        return sum(p.numel() * p.element_size() for p in layer.parameters())
    weight, bias = layer.weight(), layer.bias()
    return weight.numel() * weight.element_size() + (0 if bias is None else bias.numel() * bias.element_size())
