"""Turning a trained model into text: greedy decoding, temperature and top-k sampling."""

from __future__ import annotations

import torch

from .train import logits_of


def _check_prompt(idx: torch.Tensor, max_new_tokens: int) -> None:
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
        shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx must be a (batch, tokens) tensor of ids, got {shape}; "
                         f"add a batch dimension with idx.unsqueeze(0)")
    if idx.size(1) == 0:
        raise ValueError("the prompt is empty: give at least one token to start from")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")


def _context_size(model: torch.nn.Module, context_size: int | None) -> int:
    if context_size is None:
        cfg = getattr(model, "cfg", None)
        if cfg is None:
            raise ValueError("context_size is needed for a model without a .cfg")
        return cfg.context_length
    if not isinstance(context_size, int) or context_size < 1:
        raise ValueError(f"context_size must be a positive int, got {context_size!r}")
    return context_size


@torch.no_grad()
def generate_text_simple(model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int,
                         context_size: int | None = None) -> torch.Tensor:
    """Greedy decoding: append the most likely next token, `max_new_tokens` times.

    The model only sees the last `context_size` tokens (its context length by default).
    """
    _check_prompt(idx, max_new_tokens)
    context_size = _context_size(model, context_size)
    for _ in range(max_new_tokens):
        logits = logits_of(model(idx[:, -context_size:]))  # (B, T, V)
        next_id = logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
    return idx


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the `top_k` largest logits in each row; set the rest to -inf so softmax gives them 0."""
    kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next id from (B, V) logits: argmax at temperature 0, else sample."""
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    # Dividing the logits (not the probabilities) sharpens (<1) or flattens (>1) the softmax.
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int,
             context_size: int | None = None, temperature: float = 0.0, top_k: int | None = None,
             eos_id: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Generate up to `max_new_tokens` ids after the prompt `idx` (B, T).

    temperature 0 is greedy; top_k keeps only the k most likely tokens; generation stops early
    when every sequence has produced `eos_id`.
    """
    _check_prompt(idx, max_new_tokens)
    context_size = _context_size(model, context_size)
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 means greedy), got {temperature!r}")
    vocab_size = None
    if top_k is not None:
        cfg = getattr(model, "cfg", None)
        vocab_size = getattr(cfg, "vocab_size", None)
        if not isinstance(top_k, int) or top_k < 1 or (vocab_size is not None and top_k > vocab_size):
            upper = vocab_size if vocab_size is not None else "the vocabulary size"
            raise ValueError(f"top_k must be an int between 1 and {upper}, got {top_k!r}")
    was_training = model.training
    model.eval()
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        logits = logits_of(model(idx[:, -context_size:]))[:, -1, :]  # (B, V)
        if top_k is not None and top_k > logits.size(-1):
            raise ValueError(f"top_k must be an int between 1 and {logits.size(-1)}, got {top_k!r}")
        next_id = sample_next(logits, temperature, top_k, generator)  # (B, 1)
        if eos_id is not None:
            # Sequences that already ended keep producing eos, so the batch stays rectangular.
            next_id = torch.where(finished.unsqueeze(1), torch.full_like(next_id, eos_id), next_id)
            finished |= next_id.squeeze(1) == eos_id
        idx = torch.cat([idx, next_id], dim=1)
        if eos_id is not None and bool(finished.all()):
            break
    model.train(was_training)
    return idx
