"""Checkers for chapter 3's attention functions: the causal mask's weights, and splitting/merging
heads. The masking mistakes are public: the Head checker (checks/head.py) names them too."""

from __future__ import annotations

import torch

from ..attention import causal_mask, merge_heads, split_heads
from . import Check, close, diagnose, shape_of, wrong_shape

NEG_INF = float("-inf")


# --- known mistakes, as code ---------------------------------------------------------------------
def _allowed(T: int, kind: str) -> torch.Tensor:
    """Which (query, key) pairs a mask lets through: the right one and some wrong ones."""
    ones = torch.ones(T, T, dtype=torch.bool)
    return {"causal": causal_mask(T), "no diagonal": torch.tril(ones, diagonal=-1),
            "one ahead": torch.tril(ones, diagonal=1), "upper": torch.triu(ones), "none": ones}[kind]


def weights_variant(scores: torch.Tensor, mask: str = "causal", fill: float = NEG_INF,
                    after: bool = False, dim: int = -1) -> torch.Tensor:
    """Masked softmax of `scores` (..., T, T), with one deliberate change when asked."""
    allowed = _allowed(scores.size(-1), mask)
    if after:  # softmax first, then mask: rows no longer sum to 1
        return torch.softmax(scores, dim=dim).masked_fill(~allowed, fill)
    return torch.softmax(scores.masked_fill(~allowed, fill), dim=dim)


HIDES_DIAGONAL = ("a token cannot see itself: the mask hides the diagonal. Keep it with "
                  "torch.tril(torch.ones(T, T)) (diagonal=0), so token t sees tokens 0..t")
MASK_MISTAKES: dict[str, dict] = {
    "masking after the softmax: the weights left no longer sum to 1. Fill the masked *scores* "
    "with float('-inf') first, then take the softmax": dict(after=True, fill=0.0),
    "masking after the softmax with -inf: mask the scores first, then take the softmax":
        dict(after=True),
    HIDES_DIAGONAL: dict(mask="no diagonal"),
    HIDES_DIAGONAL + " (with a finite fill value the first row even spreads over the future)":
        dict(mask="no diagonal", fill=-1e9),
    "tokens see the future: nothing is masked. Fill the scores above the diagonal with "
    "float('-inf') before the softmax": dict(mask="none"),
    "the mask is flipped: tokens see the future and not the past. Keep the lower triangle "
    "(torch.tril), where key <= query": dict(mask="upper"),
    "tokens see one step into the future: the mask keeps one diagonal too many. Use "
    "torch.tril(torch.ones(T, T)) with the default diagonal=0": dict(mask="one ahead"),
    "masked scores were set to 0, not -inf: exp(0) = 1, so future tokens still get weight. "
    "Use float('-inf')": dict(fill=0.0),
    "softmax over the wrong dimension: columns sum to 1. Use dim=-1, so each row (one query) "
    "is a distribution over the keys": dict(dim=-2),
}


def tensor_of_shape(check: Check, value, shape: tuple, what: str, sizes: dict[str, int],
                    hint: str = "") -> torch.Tensor:
    """`value` if it is a tensor of `shape`; else stop, naming what the wrong shape suggests."""
    if not isinstance(value, torch.Tensor):
        check.stop(f"{what} returned {type(value).__name__}: return a tensor")
    if tuple(value.shape) != shape:
        check.stop(wrong_shape(what, value, shape, sizes, hint))
    return value


def nan_hint(out: torch.Tensor) -> str | None:
    """What NaN or inf in an output says about the masking, if there are any."""
    if torch.isnan(out).any() or torch.isinf(out).any():
        return ("the output holds NaN or inf: some row has every score masked (" + HIDES_DIAGONAL
                + "), or -inf was used after the softmax")
    return None


# --- the causal mask -----------------------------------------------------------------------------
def check_causal_weights(causal_weights_fn) -> Check:
    """Check causal_weights(scores) -> softmax over the last dim with the future masked out."""
    with Check("causal_weights", seed=0) as check:
        gen = torch.Generator().manual_seed(0)
        scores = torch.randn(6, 6, generator=gen) * 2
        original = scores.clone()
        out = check.call("causal_weights(scores)", causal_weights_fn, scores)
        out = tensor_of_shape(check, out, (6, 6), "causal_weights(scores) for (6, 6) scores",
                              {"T": 6}, ": one weight per (query, key) pair")
        if not torch.equal(scores, original):
            check.fail("causal_weights changed the scores it was given (masked_fill_ with an "
                       "underscore works in place): use scores.masked_fill(...), which returns a copy")
        if not check.expect(close(out, weights_variant(original)),
                            "(6, 6) scores: every row sums to 1, nothing above the diagonal (no "
                            "token sees the future), and each token sees itself"):
            mistakes = {msg: (lambda kw=kw: weights_variant(original, **kw)) for msg, kw in MASK_MISTAKES.items()}
            check.stop(diagnose(out, mistakes, default=nan_hint(out) or _property_problem(out),
                                expected=weights_variant(original), sizes={"T": 6}))
        batch = torch.randn(2, 3, 5, 5, generator=gen)
        out = check.call("causal_weights(scores) on a batch of shape (2, 3, 5, 5)",
                       causal_weights_fn, batch, known={"must match the size": (
                           "it works on one (T, T) matrix but not on a batch: take T from "
                           "scores.size(-1) and the softmax over dim=-1")})
        if isinstance(out, torch.Tensor) and close(out, weights_variant(batch)):
            check.ok("a batch of shape (2, 3, 5, 5) works too: the mask broadcasts over batch and heads")
        else:
            check.fail("a batch of scores of shape (2, 3, 5, 5) gives wrong weights: take T from "
                       "scores.size(-1) and use the softmax over dim=-1 (the last one), not dim=1")
        # Softmax ignores a shift of every score, so these must give the usual weights; a finite
        # fill value above the scores lets the future take over.
        low = torch.randn(4, 4, generator=gen) - 1000
        out = check.call("causal_weights(scores near -1000)", causal_weights_fn, low)
        check.expect(isinstance(out, torch.Tensor) and close(out, weights_variant(low)),
                     "scores near -1000 stay masked too",
                     "with scores near -1000 the future gets weight: a finite fill value such as "
                     "-100 is larger than the scores. Use float('-inf')")
    return check


def _property_problem(w: torch.Tensor) -> str:
    if not torch.allclose(w.sum(dim=-1), torch.ones(w.shape[:-1]), atol=1e-5):
        return "rows do not sum to 1: take the softmax over dim=-1 after masking the scores"
    future = w.triu(diagonal=1)
    if 0 < future.abs().max() < 0.01:
        return ("the future still gets a little weight: a finite fill value such as -10 is not "
                "small enough. Use float('-inf')")
    if (future != 0).any():
        return "weights above the diagonal are not zero: tokens can see the future"
    if (w.diagonal(dim1=-2, dim2=-1) == 0).any():
        return HIDES_DIAGONAL
    return "the weights differ from softmax(scores masked with -inf above the diagonal)"


# --- splitting and merging heads ---------------------------------------------------------------------
def _split_mistakes(x: torch.Tensor, nh: int) -> dict[str, torch.Tensor]:
    B, T, C = x.shape
    hd = C // nh
    split = x.view(B, T, nh, hd)
    found = {"heads are not moved before tokens: add .transpose(1, 2) after the view": split}
    for i in range(4):
        for j in range(i + 1, 4):
            if (i, j) != (1, 2):
                found[f"transposed the wrong dimensions ({i}, {j}) of the (B, T, num_heads, head_dim) "
                      f"view: swap dims 1 and 2 (tokens and heads) with .transpose(1, 2)"] = split.transpose(i, j)
    found["viewed straight as (B, num_heads, T, head_dim): that mixes features of different tokens. "
          "View as (B, T, num_heads, head_dim) first, then .transpose(1, 2)"] = x.reshape(B, nh, T, hd)
    found["head h got features h, h + num_heads, ... (interleaved): view the last dimension as "
          "(num_heads, head_dim), not (head_dim, num_heads)"] = x.view(B, T, hd, nh).permute(0, 3, 1, 2)
    return found


NOT_CONTIGUOUS = {"view size is not compatible": (
    "after .transpose the tensor is not contiguous, so .view fails: call .contiguous() "
    "before .view (or use .reshape)")}


def check_split_merge(split_fn, merge_fn) -> Check:
    """Check split_heads(x, num_heads): (B, T, C) -> (B, nh, T, hd) and merge_heads back."""
    with Check("split_heads / merge_heads") as check:
        for B, T, nh, hd in [(2, 5, 3, 4), (1, 3, 2, 6)]:
            x = torch.arange(B * T * nh * hd, dtype=torch.float).view(B, T, nh * hd)
            what = f"split_heads(x of shape {(B, T, nh * hd)}, num_heads={nh})"
            out = check.call(what, split_fn, x, nh)
            if not isinstance(out, torch.Tensor):
                check.stop(f"{what} returned {type(out).__name__}: return a tensor")
            if not close(out, split_heads(x, nh)):
                check.stop(diagnose(out, _split_mistakes(x, nh), default=(
                    f"{what} gave shape {shape_of(out)}, expected (B, num_heads, T, head_dim) = "
                    f"{(B, nh, T, hd)} with head h holding features h*head_dim:(h+1)*head_dim"),
                    expected=split_heads(x, nh), sizes={"num_heads": nh, "head_dim": hd, "T": T}))
            check.ok(f"{what} has shape {(B, nh, T, hd)}, and head h holds its own slice of features")
        y = torch.arange(2 * 3 * 5 * 4, dtype=torch.float).view(2, 3, 5, 4)  # (B, nh, T, hd)
        out = check.call("merge_heads(y of shape (2, 3, 5, 4))", merge_fn, y, known=NOT_CONTIGUOUS)
        if not (isinstance(out, torch.Tensor) and close(out, merge_heads(y))):
            mistakes = {"merged without moving heads back behind tokens: .transpose(1, 2) first, "
                        "then .contiguous().view(B, T, C)": y.reshape(2, 5, 12)}
            for i, j in [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]:
                mistakes[f"transposed the wrong dimensions ({i}, {j}): undo the split with "
                         f".transpose(1, 2)"] = y.transpose(i, j).reshape(2, 5, 12)
            check.stop(diagnose(out, mistakes, default=(
                f"merge_heads gave {shape_of(out)}, expected (B, T, num_heads * head_dim) = (2, 5, 12) "
                f"with the heads side by side for each token"), expected=merge_heads(y),
                sizes={"num_heads": 3, "head_dim": 4, "T": 5}))
        check.ok("merge_heads puts the heads side by side again: (2, 3, 5, 4) -> (2, 5, 12)")
        x = torch.randn(2, 5, 12)
        back = check.call("merge_heads(split_heads(x, 3))", lambda: merge_fn(split_fn(x, 3)),
                        known=NOT_CONTIGUOUS)
        check.expect(close(back, x), "merge_heads(split_heads(x)) gives x back",
                     "merge_heads(split_heads(x)) does not give x back: merge must undo split exactly")
    return check
