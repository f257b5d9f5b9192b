"""Weight tying that stays tied: the output head and the token embedding share one matrix.

Tying itself is one line (`model.out_head.weight = model.tok_emb.weight`, chapter 5). Keeping it
takes care in two places, which `TiedEmbeddingMixin` handles so that `GPTModel` can read like the
notebook's version:

- Moving between device types (to or from "meta", `to_empty`): PyTorch converts each module's
  parameters one module at a time and, when the new tensor cannot take the old one's place,
  wraps each result in a new Parameter: one for the embedding and another for the head.
- Loading with `load_state_dict(..., assign=True)`, which puts in a new Parameter per name.

Both would leave the model silently holding two matrices. The mixin ties them again afterwards,
using only PyTorch's public methods, and refuses a state dict whose two matrices differ.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class TiedEmbeddingMixin:
    """For an nn.Module with `tok_emb` (nn.Embedding) and `out_head` (nn.Linear) of the same shape."""

    tok_emb: nn.Embedding
    out_head: nn.Linear

    def tie_weights(self) -> None:
        """Make the output head use the very same Parameter as the token embedding (shared storage)."""
        # Both are (vocab_size, emb_dim): row i embeds token i and also scores token i.
        self.out_head.weight = self.tok_emb.weight

    @property
    def weights_tied(self) -> bool:
        """True if the output head and the token embedding are one and the same Parameter."""
        return self.out_head.weight is self.tok_emb.weight

    def _tie_again_if(self, was_tied: bool) -> None:
        if was_tied and not self.weights_tied:
            self.tie_weights()

    def to(self, *args, **kwargs):
        """nn.Module.to, keeping the head tied to the embedding (see the top of this module)."""
        was_tied = self.weights_tied
        result = super().to(*args, **kwargs)
        self._tie_again_if(was_tied)
        return result

    def to_empty(self, *, device, recurse: bool = True):
        """nn.Module.to_empty, keeping the head tied to the embedding."""
        was_tied = self.weights_tied
        result = super().to_empty(device=device, recurse=recurse)
        self._tie_again_if(was_tied)
        return result

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """nn.Module.load_state_dict, made safe for tied weights.

        With tying on, a state dict whose head differs from its embedding cannot fit (one matrix
        cannot hold two values), so it is refused instead of silently keeping one of them.
        """
        was_tied = self.weights_tied
        if was_tied and "tok_emb.weight" in state_dict and "out_head.weight" in state_dict:
            if _differ(state_dict["tok_emb.weight"], state_dict["out_head.weight"]):
                raise ValueError(
                    "state_dict has different 'tok_emb.weight' and 'out_head.weight', but this model "
                    "ties them: build the model with cfg.replace(tie_weights=False) to load it"
                )
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._tie_again_if(was_tied)  # assign=True puts in a new Parameter per name
        return result


def _differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True if two same-shaped tensors hold different values (meta tensors hold none)."""
    if a is b or a.shape != b.shape or "meta" in (a.device.type, b.device.type):
        return False  # a shape mismatch is reported by load_state_dict itself
    return not torch.equal(a, b.to(a.device, a.dtype))
