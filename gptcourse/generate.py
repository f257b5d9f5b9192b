"""Turning a trained model into text: greedy decoding, temperature and top-k sampling."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .loss import logits_of
from .tokenizers import text_to_token_ids, token_ids_to_text
from .validate import (
    require_generator,
    require_int,
    require_int_in_range,
    require_number,
    require_optional_int,
    require_positive_int,
)


def _require_prompt(idx: torch.Tensor, max_new_tokens: int) -> None:
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
        shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx must be a (batch, tokens) tensor of ids, got {shape}; "
                         f"add a batch dimension with idx.unsqueeze(0)")
    if idx.size(1) == 0:
        raise ValueError("the prompt is empty: give at least one token to start from")
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}; "
                         f"encode text with text_to_token_ids(text, tokenizer)")
    require_int("max_new_tokens", max_new_tokens, low=0)


def _context_size(model: torch.nn.Module, context_size: int | None) -> int:
    if context_size is None:
        cfg = getattr(model, "cfg", None)
        if cfg is None:
            raise ValueError("context_size is needed for a model without a .cfg")
        return cfg.context_length
    limit = getattr(getattr(model, "cfg", None), "context_length", None)
    if limit is None:
        return require_positive_int("context_size", context_size)
    # Checked before any token is generated: a larger window would fail inside the model later.
    return require_int_in_range("context_size", context_size, 1, limit, "context_length",
                                hint=" (None: the model's context_length)")


@torch.no_grad()
def generate_text_simple(model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int,
                         context_size: int | None = None) -> torch.Tensor:
    """Greedy decoding: append the most likely next token, `max_new_tokens` times.

    The model only sees the last `context_size` tokens (its context length by default).
    """
    _require_prompt(idx, max_new_tokens)
    context_size = _context_size(model, context_size)
    for _ in range(max_new_tokens):
        logits = logits_of(model(idx[:, -context_size:]))  # (B, T, V)
        next_id = logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
    return idx


def _require_temperature(temperature) -> None:
    require_number("temperature", temperature, low=0, hint=" (0 means greedy)")


def _require_top_k(top_k, vocab_size: int | None) -> None:
    require_optional_int("top_k", top_k, 1, vocab_size, "vocab_size", hint=" (None: no filter)")


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep exactly the `top_k` largest logits in each row; set the rest to -inf so softmax gives them 0."""
    _require_top_k(top_k, logits.size(-1))
    return _keep_top_k(logits, top_k)


def _keep_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    keep = torch.topk(logits, top_k, dim=-1).indices                       # (..., k)
    # -inf, not 0: exp(-inf) = 0 removes a token, while a logit of 0 would still give it a chance.
    filtered = torch.full_like(logits, float("-inf"))
    return filtered.scatter(-1, keep, logits.gather(-1, keep))


Sampler = Callable[[torch.Tensor], torch.Tensor]


def token_sampler(temperature: float = 0.0, top_k: int | None = None,
                  generator: torch.Generator | None = None, vocab_size: int | None = None) -> Sampler:
    """Check the sampling settings once; return sample(logits (B, V)) -> next ids (B, 1).

    A generation loop calls this once before its first token, so that no step checks the same
    settings again (sample_next is the one-call version).
    """
    _require_temperature(temperature)
    _require_top_k(top_k, vocab_size)
    require_generator("generator", generator)

    def sample(logits: torch.Tensor) -> torch.Tensor:
        if temperature == 0 or top_k == 1:
            return logits.argmax(dim=-1, keepdim=True)                          # (B, 1)
        if top_k is not None:
            logits = _keep_top_k(logits, top_k)
        # Dividing the logits (not the probabilities) sharpens (<1) or flattens (>1) the softmax.
        probs = torch.softmax(logits.float() / temperature, dim=-1)           # (B, V)
        if generator is not None and generator.device != probs.device:
            # Sample where the generator lives, so a seed gives the same text on CPU and GPU.
            return torch.multinomial(probs.to(generator.device), 1, generator=generator).to(logits.device)
        return torch.multinomial(probs, num_samples=1, generator=generator)   # (B, 1)

    return sample


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next id from (B, V) logits: argmax at temperature 0 (or top_k=1), else sample."""
    return token_sampler(temperature, top_k, generator, logits.size(-1))(logits)


@torch.no_grad()
def generate(model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int,
             context_size: int | None = None, temperature: float = 0.0, top_k: int | None = None,
             eos_id: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Generate up to `max_new_tokens` ids after the prompt `idx` (B, T); returns prompt + new ids.

    temperature 0 is greedy; top_k keeps only the k most likely tokens; generation stops early
    once every sequence has produced `eos_id` (sequences that ended are padded with eos_id).
    """
    _require_prompt(idx, max_new_tokens)
    context_size = _context_size(model, context_size)
    vocab_size = getattr(getattr(model, "cfg", None), "vocab_size", None)
    sample = token_sampler(temperature, top_k, generator, vocab_size)  # checked once, here
    require_optional_int("eos_id", eos_id, 0, None if vocab_size is None else vocab_size - 1,
                         hint=" (a token id)")
    param = next(model.parameters(), None)
    if param is not None:
        idx = idx.to(param.device)  # the prompt goes where the model is
    was_training = model.training
    model.eval()
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        logits = logits_of(model(idx[:, -context_size:]))[:, -1, :]  # (B, V): the last position
        next_id = sample(logits)                                     # (B, 1)
        if eos_id is not None:
            # Sequences that already ended keep producing eos, so the batch stays rectangular.
            next_id = next_id.masked_fill(finished.unsqueeze(1), eos_id)
            finished |= next_id.squeeze(1) == eos_id
        idx = torch.cat([idx, next_id], dim=1)
        if eos_id is not None and bool(finished.all()):
            break
    model.train(was_training)
    return idx


def generate_text(model: torch.nn.Module, tokenizer, prompt: str, max_new_tokens: int,
                  temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
                  eos_id: int | None = None) -> str:
    """Text in, text out: encode `prompt`, generate, decode prompt + continuation."""
    require_optional_int("seed", seed, low=0, hint=" (None: not seeded)")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    idx = text_to_token_ids(prompt, tokenizer)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                   eos_id=eos_id, generator=generator)
    return token_ids_to_text(out.cpu(), tokenizer)
