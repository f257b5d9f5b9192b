"""Checker for chapter 3's Head module: its query/key/value projections, the scale of the scores,
the mask buffer, and where it applies dropout (on the attention weights, after the softmax).

The masking mistakes it names are the causal mask's, shared with checks/attention.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..attention import causal_attention_weights, causal_mask
from . import Check, close, diagnose, shape_of
from .attention import MASK_MISTAKES, nan_hint, tensor_of_shape, weights_variant

# --- one head ----------------------------------------------------------------------------------------
D_IN, HEAD_SIZE, CONTEXT = 32, 4, 8  # sqrt(32), 4 and sqrt(4) all differ: scale mistakes show
HEAD_SIZES = {"head_size": HEAD_SIZE, "d_in": D_IN, "context_length": CONTEXT}
SCALE_MISTAKES = {
    "no scaling: divide the scores by sqrt(head_size), or the softmax gets too peaky as heads grow": 1.0,
    "scaled by the embedding size: use sqrt(head_size) (the size of q and k), not sqrt(d_in)":
        math.sqrt(D_IN),
    "divided by head_size: divide by its square root, math.sqrt(head_size)": float(HEAD_SIZE),
}


def _other_scales() -> dict[str, float]:
    """Every other size in play, and its square root, as the divisor of the scores; and the
    right factor multiplied instead of divided."""
    right = math.sqrt(HEAD_SIZE)
    found = {}
    for name, n in HEAD_SIZES.items():
        for label, s in [(name, float(n)), (f"sqrt({name})", math.sqrt(n))]:
            if not any(math.isclose(s, t) for t in (right, *SCALE_MISTAKES.values())):
                found[f"the scores are divided by {label} = {s:.3g}: scale by the size of q and k, "
                      f"divide by sqrt(head_size) = {right:.3g}"] = s
    found["the scores are multiplied by sqrt(head_size): divide by it, scores / sqrt(head_size)"] = 1 / right
    return found


def check_head(head_class) -> Check:
    """Check a learner's Head(d_in, head_size, context_length, dropout) against the formula."""
    with Check("Head", seed=0) as check:
        head = check.call(f"Head({D_IN}, {HEAD_SIZE}, {CONTEXT}, dropout=0.0)",
                        head_class, D_IN, HEAD_SIZE, CONTEXT, 0.0)
        if not isinstance(head, nn.Module):
            check.stop(f"Head(...) made a {type(head).__name__}: write `class Head(nn.Module)` "
                       f"and call super().__init__() first")
        projections = _check_projections(check, head)
        _check_mask_buffer(check, head)
        x = torch.randn(2, CONTEXT, D_IN, generator=torch.Generator().manual_seed(1)) * 2
        head.eval()
        out = check.call("head(x)", head, x)
        looks_like_weights = isinstance(out, torch.Tensor) and out.shape == (2, CONTEXT, CONTEXT)
        out = tensor_of_shape(check, out, (2, CONTEXT, HEAD_SIZE), "head(x)", HEAD_SIZES,
                              ": return weights @ v, not the weights" if looks_like_weights
                              else ": (batch, tokens, head_size)")
        with torch.no_grad():
            q, k, v = (p(x) for p in projections)
            scores = q @ k.transpose(-2, -1)
            expected = causal_attention_weights(q, k, causal_mask(CONTEXT)) @ v  # the reference
        if not close(out, expected):
            mistakes = {msg: (lambda s=s: weights_variant(scores / s) @ v) for msg, s in SCALE_MISTAKES.items()}
            mistakes |= {msg: (lambda s=s: weights_variant(scores / s) @ v) for msg, s in _other_scales().items()}
            mistakes |= {msg: (lambda kw=kw: weights_variant(scores / math.sqrt(HEAD_SIZE), **kw) @ v)
                         for msg, kw in MASK_MISTAKES.items()}
            mistakes["scores are k @ q^T: use q @ k.transpose(-2, -1), queries in the rows"] = (
                lambda: weights_variant(scores.transpose(-2, -1) / math.sqrt(HEAD_SIZE)) @ v)
            check.stop(diagnose(out, mistakes, default=_leak(head, x) or nan_hint(out) or
                                "the output differs from softmax(masked q @ k^T / sqrt(head_size)) @ v",
                                expected=expected, sizes=HEAD_SIZES))
        check.ok("head(x) matches softmax(q k^T / sqrt(head_size), future masked) @ v")
        short = check.call("head(x) with 5 tokens (fewer than context_length)", head, x[:, :5],
                         known={"must match the size": "cut the mask to the input's length: "
                                "self.mask[:T, :T] with T = x.size(1)"})
        check.expect(close(short, expected[:, :5]), "works on sequences shorter than context_length",
                     "with 5 tokens the output differs: cut the mask with self.mask[:T, :T]")
        _check_dropout(check, head_class, x, out)
    return check


def _check_projections(check: Check, head) -> list[nn.Module]:
    projections = [getattr(head, name, None) for name in ("query", "key", "value")]
    if any(getattr(p, "weight", None) is None or not callable(p) for p in projections):
        check.stop("name the projections self.query, self.key and self.value "
                   "(nn.Linear(d_in, head_size, bias=False)) so the checker can follow them")
    for name, p in zip(("query", "key", "value"), projections):
        if tuple(p.weight.shape) != (HEAD_SIZE, D_IN):
            check.stop(f"self.{name}.weight has shape {shape_of(p.weight)}, expected "
                       f"{(HEAD_SIZE, D_IN)}: use nn.Linear(d_in, head_size, bias=False)")
    check.expect(all(getattr(p, "bias", None) is None for p in projections),
                 "query, key and value are nn.Linear(d_in, head_size) without bias",
                 "query/key/value have a bias: the head uses nn.Linear(d_in, head_size, bias=False)")
    return projections


def _check_mask_buffer(check: Check, head: nn.Module) -> None:
    if any(p.shape == (CONTEXT, CONTEXT) for p in head.parameters()):
        check.fail("the mask is an nn.Parameter, so the optimizer would train it: register it with "
                   "self.register_buffer('mask', torch.tril(...)) instead")
    elif not any(b.shape == (CONTEXT, CONTEXT) for b in head.buffers()):
        check.fail("no (context_length, context_length) buffer found: register the mask with "
                   "self.register_buffer('mask', torch.tril(torch.ones(context_length, context_length)))")
    else:
        check.ok("the mask is a (context_length, context_length) buffer: it moves with .to(device) "
                 "and is never trained")


def _leak(head: nn.Module, x: torch.Tensor) -> str | None:
    """A diagnosis if changing token 5 changes the output of an earlier token."""
    changed = x.clone()
    changed[:, 5] = torch.randn(2, D_IN, generator=torch.Generator().manual_seed(2)) * 3
    try:
        leaks = not close(head(x)[:, :5], head(changed)[:, :5])
    except Exception:  # the learner's head already failed once; no second diagnosis
        return None
    return ("changing token 5 changed the outputs of earlier tokens: they can see the future. "
            "Mask every score above the diagonal") if leaks else None


# --- dropout ------------------------------------------------------------------------------------
def _check_dropout(check: Check, head_class, x: torch.Tensor, no_dropout_out: torch.Tensor) -> None:
    """Dropout off in eval mode, and on the attention weights in training mode.

    Dropout belongs on the attention weights, after the softmax: kept weights are scaled by
    1 / (1 - p), dropped ones are exactly 0, and nothing is dropped in eval mode.
    """
    torch.manual_seed(0)  # the same initial weights as the head above
    head = check.call(f"Head({D_IN}, {HEAD_SIZE}, {CONTEXT}, dropout=0.5)",
                      head_class, D_IN, HEAD_SIZE, CONTEXT, 0.5)
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
    _check_dropped_weights(check, head_class)


DROPOUT_ON_SCORES = ("dropout acts before the softmax (on the scores, or on q or k): the rows "
                     "still sum to 1 and no weight is dropped. Apply self.dropout to the weights, after the softmax "
                     "and before @ v")


def _check_dropped_weights(check: Check, head_class) -> None:
    """With v = the identity, head(x) *is* the (dropped) attention weights: look at them."""
    torch.manual_seed(0)
    head = check.call(f"Head({D_IN}, {CONTEXT}, {CONTEXT}, dropout=0.5)",
                      head_class, D_IN, CONTEXT, CONTEXT, 0.5)
    projections = [getattr(head, name, None) for name in ("query", "key", "value")]
    if any(tuple(getattr(p, "weight", torch.empty(0)).shape) != (CONTEXT, D_IN) for p in projections):
        return  # already reported with the first head
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, CONTEXT, D_IN, generator=gen) * 2
    x[:, :, :CONTEXT] = torch.eye(CONTEXT)  # token t carries the one-hot vector e_t ...
    with torch.no_grad():
        head.value.weight.copy_(torch.eye(CONTEXT, D_IN))  # ... and its value is e_t: v = I
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
                         for c in range(CONTEXT))
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
        check.fail(_name_factor(check, head_class, x, factor))
    else:
        check.fail("in training mode the weights are neither kept (times 1 / (1 - p)) nor 0: apply "
                   "self.dropout once, to the weights after the softmax and before @ v")


def _name_factor(check: Check, head_class, x: torch.Tensor, factor: float) -> str:
    """Kept weights scaled by `factor` at p = 0.5: dropout applied more than once, or a fixed rate?
    Build the head again with p = 0.2 and see how the factor moves."""
    times = math.log(factor) / math.log(2.0)  # 1 / (1 - 0.5) = 2 per application
    torch.manual_seed(0)
    head = check.call(f"Head({D_IN}, {CONTEXT}, {CONTEXT}, dropout=0.2)",
                      head_class, D_IN, CONTEXT, CONTEXT, 0.2)
    with torch.no_grad():
        head.value.weight.copy_(torch.eye(CONTEXT, D_IN))
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
