"""The full GPT model: embeddings, a stack of transformer blocks, a final LayerNorm, an output head."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import GPTConfig
from .layers import LayerNorm, TransformerBlock
from .tying import TiedEmbeddingMixin
from .validate import require_instance


class GPTModel(TiedEmbeddingMixin, nn.Module):
    """A GPT-2 style language model. forward(idx) maps (B, T) token ids to (B, T, vocab) logits.

    With cfg.tie_weights the output head is the token embedding matrix; `TiedEmbeddingMixin`
    (gptcourse/tying.py) keeps it so through moves and loads.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = require_instance("cfg", cfg, GPTConfig, hint=" (try GPTConfig(**cfg))")
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim, fast=cfg.fast)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        self.reset_parameters()
        if cfg.tie_weights:
            self.tie_weights()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 initialisation: normal(0, 0.02) weights, zero biases, smaller residual projections."""
        residual_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)  # each block adds two residual branches
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = residual_std if name.endswith(("att.out_proj", "ff.layers.2")) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def validate_input(self, idx: torch.Tensor) -> None:
        """Clear errors for ids the model cannot take (type, shape, length), before torch fails deep inside.

        The ids' values are not read here: that would be a full pass over idx on every training
        step (and a GPU sync). An id outside the vocabulary is reported by `embed_tokens` instead.
        """
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"idx must be a tensor of token ids, got {type(idx).__name__}")
        if idx.dtype not in (torch.long, torch.int32):
            raise TypeError(f"idx must hold integer token ids (torch.long), got {idx.dtype}")
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (batch, tokens), got {tuple(idx.shape)}; "
                             f"add a batch dimension with idx.unsqueeze(0)")
        T = idx.size(1)
        if T == 0:
            raise ValueError("idx has no tokens: give the model at least one token")
        if T > self.cfg.context_length:
            raise ValueError(
                f"input has {T} tokens but the model's context_length is {self.cfg.context_length}: "
                f"crop it to the last {self.cfg.context_length} tokens (idx[:, -{self.cfg.context_length}:])"
            )

    def embed_tokens(self, idx: torch.Tensor) -> torch.Tensor:
        """self.tok_emb(idx), with a clear error for an id outside the vocabulary."""
        try:
            return self.tok_emb(idx)  # (B, T, C)
        except IndexError:  # raised by the lookup itself on a CPU: no extra pass over the ids
            raise ValueError(f"token ids must be in 0..{self.cfg.vocab_size - 1}, got values from "
                             f"{idx.min().item()} to {idx.max().item()}") from None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.validate_input(idx)                      # once, here: the layers inside trust it
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.embed_tokens(idx) + self.pos_emb(pos)  # (B, T, C): what the token is + where it is
        x = self.drop_emb(x)
        x = self.trf_blocks(x)                        # (B, T, C)
        x = self.final_norm(x)
        return self.out_head(x)                       # (B, T, vocab_size)


def count_parameters(model: nn.Module, count_tied_once: bool = True) -> int:
    """Number of trainable values. With count_tied_once=False a shared matrix counts each time it is used."""
    params = model.named_parameters(remove_duplicate=count_tied_once)
    return sum(p.numel() for _, p in params)


def model_size_mb(model: nn.Module, dtype: torch.dtype = torch.float32, count_tied_once: bool = True) -> float:
    """Memory for the parameters in megabytes (1 MB = 1024**2 bytes) if stored as `dtype`."""
    bytes_per_value = torch.empty((), dtype=dtype).element_size()
    return count_parameters(model, count_tied_once) * bytes_per_value / 1024**2
