"""Checker for chapter 3, part of check_head: where the head applies dropout.

Dropout belongs on the attention weights, after the softmax: kept weights are scaled by
1 / (1 - p), dropped ones are exactly 0, and nothing is dropped in eval mode.
"""

from __future__ import annotations

import math

import torch

from . import Check, close


def examine_head_dropout(check: Check, head_class, x: torch.Tensor, no_dropout_out: torch.Tensor,
                       sizes: tuple[int, int, int]) -> None:
    """Part of check_head: dropout off in eval mode, and on the attention weights in training mode.

    sizes: (d_in, head_size, context_length) of the head that gave `no_dropout_out`.
    """
    d_in, head_size, context = sizes
    torch.manual_seed(0)  # the same initial weights as the head above
    head = check.call(f"Head({d_in}, {head_size}, {context}, dropout=0.5)",
                    head_class, d_in, head_size, context, 0.5)
    head.eval()
    first = check.call("head(x) in eval mode", head, x)
    again = head(x)
    if not (close(first, again) and close(first, no_dropout_out)):
        check.stop("dropout is active in eval mode: use self.dropout = nn.Dropout(dropout) (a module "
                   "that model.eval() switches off), not F.dropout(..., training=True)")
    check.ok("in eval mode nothing is dropped: the output is the same as without dropout")
    head.train()
    dropped = check.call("head(x) in training mode", head, x)
    if close(dropped, first):
        check.stop("with dropout=0.5 in training mode nothing changed: apply self.dropout to the "
                   "attention weights (after the softmax, before @ v)")
    if torch.all(torch.isclose(dropped, 2 * first) | (dropped == 0)):
        check.stop("dropout is applied to the head's output: apply it to the attention weights, "
                   "after the softmax and before @ v")
    _check_dropped_weights(check, head_class, d_in, context)


DROPOUT_ON_SCORES = ("dropout acts before the softmax (on the scores, or on q or k): the rows "
                     "still sum to 1 and no weight is dropped. Apply self.dropout to the weights, after the softmax "
                     "and before @ v")


def _check_dropped_weights(check: Check, head_class, d_in: int, context: int) -> None:
    """With v = the identity, head(x) *is* the (dropped) attention weights: look at them."""
    torch.manual_seed(0)
    head = check.call(f"Head({d_in}, {context}, {context}, dropout=0.5)",
                      head_class, d_in, context, context, 0.5)
    projections = [getattr(head, name, None) for name in ("query", "key", "value")]
    if any(tuple(getattr(p, "weight", torch.empty(0)).shape) != (context, d_in) for p in projections):
        return  # already reported with the first head
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, context, d_in, generator=gen) * 2
    x[:, :, :context] = torch.eye(context)  # token t carries the one-hot vector e_t ...
    with torch.no_grad():
        head.value.weight.copy_(torch.eye(context, d_in))  # ... and its value is e_t: v = I
        head.eval()
        weights = head(x)  # eval mode: weights @ I, the plain attention weights
        head.train()
        dropped = check.call("head(x) in training mode", head, x)
    if not isinstance(dropped, torch.Tensor) or dropped.shape != weights.shape:
        return
    if torch.isnan(dropped).any():
        check.stop("training mode gives NaN: dropout ran on the masked scores, and -inf * 0 is NaN. "
                   "Apply self.dropout to the weights, after the softmax and before @ v")
    if close(dropped.sum(dim=-1), torch.ones(dropped.shape[:-1])):
        check.stop(DROPOUT_ON_SCORES)
    kept = torch.isclose(dropped, 2 * weights, atol=1e-6)
    zeroed = dropped == 0
    if torch.all(kept | zeroed):
        # A dropped value (row of v = I) zeroes a whole column of weights at once.
        per_column = all(torch.all(zeroed[b][:, c] | (weights[b][:, c] == 0)) or
                         torch.all(kept[b][:, c]) for b in range(dropped.size(0))
                         for c in range(context))
        if per_column:
            check.stop("dropout acts on the values, not on the attention weights: whole "
                       "columns of weights vanish together. Apply self.dropout to the weights, after "
                       "the softmax and before @ v")
        check.ok("in training mode dropout zeroes single attention weights and scales the kept "
                 "ones by 1 / (1 - p); eval-mode rows sum to 1")
    elif torch.all(torch.isclose(dropped, weights, atol=1e-6) | zeroed):
        check.fail("the kept weights are not scaled by 1 / (1 - p): use nn.Dropout, which scales "
                   "them so the expected output stays the same")
    elif (factor := _common_factor(dropped, weights)) is not None:
        check.fail(_name_factor(check, head_class, d_in, context, x, factor))
    else:
        check.fail("in training mode the weights are neither kept (times 1 / (1 - p)) nor 0: apply "
                   "self.dropout once, to the weights after the softmax and before @ v")


def _name_factor(check: Check, head_class, d_in: int, context: int, x: torch.Tensor,
                 factor: float) -> str:
    """Kept weights scaled by `factor` at p = 0.5: dropout applied more than once, or a fixed rate?
    Build the head again with p = 0.2 and see how the factor moves."""
    times = math.log(factor) / math.log(2.0)  # 1 / (1 - 0.5) = 2 per application
    torch.manual_seed(0)
    head = check.call(f"Head({d_in}, {context}, {context}, dropout=0.2)",
                      head_class, d_in, context, context, 0.2)
    with torch.no_grad():
        head.value.weight.copy_(torch.eye(context, d_in))
        head.eval()
        weights = head(x)
        head.train()
        other = _common_factor(head(x), weights)
    if (other is not None and round(times) >= 2 and abs(times - round(times)) < 1e-3
            and math.isclose(other, 1.25 ** round(times), rel_tol=1e-3)):
        return (f"dropout is applied {round(times)} times: the kept weights are scaled by "
                f"(1 / (1 - p))^{round(times)}. Apply self.dropout once, to the weights after "
                f"the softmax and before @ v")
    if other is not None and math.isclose(other, factor, rel_tol=1e-3):
        return (f"the kept weights are scaled by {factor:.3g} whatever `dropout` is, as if p were "
                f"fixed at {1 - 1 / factor:.2g}: use the `dropout` argument, "
                f"self.dropout = nn.Dropout(dropout)")
    return (f"the kept weights are scaled by {factor:.3g}, not by 1 / (1 - p) = 2: apply "
            f"self.dropout = nn.Dropout(dropout) once, to the weights after the softmax")


def _common_factor(dropped: torch.Tensor, weights: torch.Tensor) -> float | None:
    """The one factor every kept weight was multiplied by, if there is one (dropped ones are 0)."""
    kept = (dropped != 0) & (weights > 1e-6)
    if not kept.any():
        return None
    ratios = dropped[kept] / weights[kept]
    factor = ratios.median().item()
    return factor if torch.allclose(ratios, torch.full_like(ratios, factor), rtol=1e-4) else None
