"""The bigram language model: predict the next token from the previous one only.

Two ways to build it:
- counting: tally how often each token follows each other token, then normalise the rows
  into probabilities. Its negative log-likelihood on the training ids is the lowest loss any
  bigram model can reach, the floor the neural version should approach.
- neural: `BigramLanguageModel`, a (vocab_size, vocab_size) table of scores learned by
  gradient descent, with the same interface as the GPT of later chapters.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .validate import require_int, require_number, require_positive_int


def _require_ids(ids, name: str, vocab_size: int, dims: int) -> torch.Tensor:
    """Validate a tensor of token ids (integer dtype, `dims` dimensions, inside the vocabulary)."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}; "
                        f"wrap it with torch.tensor(..., dtype=torch.long)")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {ids.dtype}; "
                        f"convert with {name}.long()")
    if ids.dim() != dims:
        want = "(T,)" if dims == 1 else "(B, T)"
        fix = " (add a batch dimension with .unsqueeze(0))" if dims == 2 and ids.dim() == 1 else ""
        raise ValueError(f"{name} must have shape {want}, got {tuple(ids.shape)}{fix}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{name} holds ids from {ids.min().item()} to {ids.max().item()}, outside "
                         f"the vocabulary 0..{vocab_size - 1}: encode with the same tokenizer "
                         f"that set vocab_size")
    return ids.long()


# --- counting ------------------------------------------------------------------------------
def bigram_counts(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """counts[a, b] = how often id b directly follows id a in `ids`. Shape (V, V), dtype long."""
    vocab_size = require_positive_int("vocab_size", vocab_size)
    ids = _require_ids(ids, "ids", vocab_size, dims=1)
    if len(ids) < 2:
        raise ValueError(f"ids has {len(ids)} token(s): a bigram needs at least 2")
    # Each pair (a, b) gets one number a * V + b, so one bincount tallies every pair at once.
    pair_index = ids[:-1] * vocab_size + ids[1:]  # (T-1,)
    return torch.bincount(pair_index, minlength=vocab_size * vocab_size).view(vocab_size, vocab_size)


def bigram_probs(counts: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Row-normalised probabilities P(next = b | previous = a), after adding `smoothing` to every count.

    A row with no counts at all (an id never followed by anything) becomes uniform.
    """
    if not isinstance(counts, torch.Tensor) or counts.dim() != 2 or counts.size(0) != counts.size(1):
        shape = tuple(counts.shape) if isinstance(counts, torch.Tensor) else type(counts).__name__
        raise ValueError(f"counts must be a square (V, V) tensor from bigram_counts, got {shape}")
    require_number("smoothing", smoothing, low=0, hint=" (it is added to every count)")
    if (counts < 0).any():
        raise ValueError("counts must be >= 0: they are how often each pair occurs")
    scores = counts.double() + smoothing  # float64: sums over a million counts stay exact
    totals = scores.sum(dim=1, keepdim=True)  # (V, 1)
    # 0 / 0 for a never-seen row: no evidence, so spread the probability evenly.
    probs = torch.where(totals > 0, scores / totals, 1.0 / counts.size(1))
    return probs.float()


def bigram_nll(probs: torch.Tensor, ids: torch.Tensor) -> float:
    """Average negative log-likelihood of every next id in `ids` under a (V, V) bigram table.

    It is infinite if some pair in `ids` has probability 0 (use smoothing for unseen pairs).
    """
    if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or probs.size(0) != probs.size(1):
        shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise ValueError(f"probs must be a square (V, V) tensor of probabilities, got {shape}")
    ids = _require_ids(ids, "ids", probs.size(0), dims=1)
    if len(ids) < 2:
        raise ValueError(f"ids has {len(ids)} token(s): a bigram needs at least 2")
    p = probs[ids[:-1], ids[1:]].double()  # (T-1,) the probability of each actual next id
    return -torch.log(p).mean().item()


def counting_baseline(
    train_ids: torch.Tensor, splits: dict[str, torch.Tensor], vocab_size: int, smoothing: float = 1.0
) -> dict[str, float]:
    """Count bigrams on `train_ids`, then the average NLL on each named split."""
    probs = bigram_probs(bigram_counts(train_ids, vocab_size), smoothing)
    return {name: bigram_nll(probs, ids) for name, ids in splits.items()}


# --- the neural bigram ---------------------------------------------------------------------
class BigramLanguageModel(nn.Module):
    """A lookup table of next-token scores: row `a` holds the logits for what follows token a."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = require_positive_int("vocab_size", vocab_size)
        self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab_size) for each position, and the mean cross-entropy if targets are given."""
        idx = _require_ids(idx, "idx", self.vocab_size, dims=2)
        if idx.size(1) == 0:
            raise ValueError("idx has no tokens (shape (B, 0)): give at least one token per row")
        logits = self.token_embedding_table(idx)  # (B, T, C) with C = vocab_size
        if targets is None:
            return logits, None
        targets = _require_ids(targets, "targets", self.vocab_size, dims=2)
        if targets.shape != idx.shape:
            raise ValueError(f"targets must have the same shape as idx {tuple(idx.shape)}, "
                             f"got {tuple(targets.shape)}")
        B, T, C = logits.shape
        # cross_entropy wants scores (N, C) and class ids (N,): every position is one example.
        loss = F.cross_entropy(logits.view(B * T, C), targets.view(B * T))
        return logits, loss

    @torch.no_grad()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Extend idx (B, T) by `max_new_tokens` sampled ids; returns (B, T + max_new_tokens)."""
        require_int("max_new_tokens", max_new_tokens, low=0)
        idx = _require_ids(idx, "idx", self.vocab_size, dims=2)
        if idx.size(1) == 0:
            raise ValueError("idx has no tokens (shape (B, 0)): start from at least one token, "
                             "for example torch.zeros((1, 1), dtype=torch.long)")
        for _ in range(max_new_tokens):
            # A bigram reads only the last token, but we pass the whole context so the same loop
            # works for the models of later chapters.
            logits, _ = self(idx)  # (B, T, C)
            logits = logits[:, -1, :]  # (B, C): the scores for the next token
            probs = F.softmax(logits, dim=-1)  # (B, C)
            idx_next = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)  # (B, T + 1)
        return idx
