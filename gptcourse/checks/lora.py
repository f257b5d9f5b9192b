"""Checker for chapter 10's LoRALinear: its start, forward, gradients, merge and unmerge.
(Counting what LoRA adds to a whole model is another exercise: checks/lora_count.py.)"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..lora import LoRALinear as ReferenceLoRALinear
from . import Check, as_number, close, learner_name

# --- LoRALinear ----------------------------------------------------------------------------------------
FORMULA = "base(x) + scaling * B(A(x)), with scaling = alpha / r"
# (in, out, r, alpha). The square layer comes first: there a transposed update gives wrong numbers
# (which are named); other layers refuse it with an error.
LAYERS = [(8, 8, 2, 16.0), (12, 10, 4, 8.0), (6, 9, 3, 5.0)]
UPDATE = "the update is B.weight @ A.weight, (out, r) @ (r, in) = (out, in), the shape of base.weight"
LORA_ERRORS = {
    "cannot be multiplied": f"a matrix product got shapes that do not fit: {UPDATE}; in forward, "
        "self.B(self.A(x))",
    "must match the size of tensor": f"the shapes do not line up: {UPDATE}",
    "Cannot assign non-leaf Tensor": "merge() changed base.weight while autograd was watching: do "
        "it in place under torch.no_grad() (put @torch.no_grad() above def merge)",
    "leaf Variable that requires grad": "merge() changed base.weight while autograd was watching: "
        "do it in place under torch.no_grad() (put @torch.no_grad() above def merge)",
}


def _base(n_in: int, n_out: int, seed: int) -> nn.Linear:
    """A seeded linear layer with a bias that is not zero (so that a lost bias shows)."""
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, n_in, generator=gen) * 0.3)
        layer.bias.copy_(torch.randn(n_out, generator=gen))
    return layer


def _structure(check: Check, layer, base: nn.Linear, r: int, name: str) -> None:
    """self.base, and A and B as nn.Linear of the right shapes; stops when they cannot be compared.
    A bias on A or B is zeroed, so that what follows is checked as if there were none."""
    n_in, n_out = base.in_features, base.out_features
    mine = getattr(layer, "base", None)
    if not isinstance(mine, nn.Linear) or not torch.equal(mine.weight, base.weight):
        check.stop(f"keep the layer you wrap as self.base (self.base = base): {name} reads "
                   f"base(x), and merge() changes base.weight")
    A, B = getattr(layer, "A", None), getattr(layer, "B", None)
    if not (isinstance(A, nn.Linear) and isinstance(B, nn.Linear)):
        check.stop(f"self.A and self.B should be layers: self.A = nn.Linear({n_in}, {r}, bias=False), "
                   f"self.B = nn.Linear({r}, {n_out}, bias=False)")
    if A.weight.shape != (r, n_in) or B.weight.shape != (n_out, r):
        check.stop(f"A's weight should be (r, in) = {(r, n_in)} and B's (out, r) = {(n_out, r)}, got "
                   f"{tuple(A.weight.shape)} and {tuple(B.weight.shape)}: self.A = nn.Linear(in_features, r, "
                   f"bias=False), self.B = nn.Linear(r, out_features, bias=False)")
    with torch.no_grad():
        for part in (A, B):
            if part.bias is not None:
                part.bias.zero_()


def _training_setup(check: Check, layer, r: int, alpha: float) -> None:
    """Only A and B train, with no bias; the base is frozen; scaling = alpha / r."""
    A, B, base = layer.A, layer.B, layer.base
    if A.bias is not None or B.bias is not None:
        check.fail("A and B have a bias, which would be trained too: nn.Linear(..., bias=False). "
                   "LoRA's update is the product B A alone")
    if base.weight.requires_grad:
        check.fail("the base layer is not frozen: training would change the big weight, which LoRA "
                   "keeps as it is. Call base.requires_grad_(False) in __init__")
    elif base.bias is not None and base.bias.requires_grad:
        check.fail("the base layer's bias still trains: freeze the whole layer, base.requires_grad_(False)")
    if not (A.weight.requires_grad and B.weight.requires_grad):
        check.fail("A and B are frozen: they are what LoRA trains; freeze only the base")
    scaling = getattr(layer, "scaling", None)
    number = as_number(scaling)
    if scaling is None:
        check.fail("there is no self.scaling: store self.scaling = alpha / r")
    elif number is None:
        check.fail(f"self.scaling should be the number alpha / r, got {type(scaling).__name__}")
    elif not math.isclose(number, alpha / r):
        found = {alpha: "alpha", r / alpha: "r / alpha", 1.0: "1"}.get(number, f"{number:g}")
        check.fail(f"self.scaling is {found}: it is alpha / r = {alpha / r:g}")


def _start(check: Check, layer, base: nn.Linear, name: str) -> None:
    """At creation: B zero and A random as nn.Linear's default, so the output is the base's and the
    gradient reaches B."""
    A, B = layer.A.weight, layer.B.weight
    bound = 1 / math.sqrt(base.in_features)  # kaiming_uniform_(a=sqrt(5)), nn.Linear's default
    if not B.count_nonzero() and not A.count_nonzero():
        check.fail("A and B both start at zero: then every gradient to A and B is zero too, and "
                   "LoRA never learns. Keep A random (nn.Linear's default) and only B at zero")
        return
    if B.count_nonzero():
        check.fail("A starts at zero and B random: the other way round, B at zero "
                   "(nn.init.zeros_(self.B.weight)) and A random, as in the LoRA paper and peft"
                   if not A.count_nonzero() else
                   "B does not start at zero, so a new layer changes the model's output: "
                   "nn.init.zeros_(self.B.weight), then training starts from the model as it was")
        return
    if A.abs().max() > bound * (1 + 1e-6):
        check.fail(f"A starts too large (up to {A.abs().max().item():.3g}): keep nn.Linear's default "
                   f"start, uniform within ±1 / sqrt(in_features) = ±{bound:.3g}")
    x = torch.randn(5, base.in_features, generator=torch.Generator().manual_seed(30))
    out = check.call(f"{name}(...)(x)", layer, x)
    if isinstance(out, torch.Tensor) and close(out, base(x)):
        if out.requires_grad:
            out.sum().backward()
        reached = layer.B.weight.grad is not None and bool(layer.B.weight.grad.count_nonzero())
        check.expect(reached, "a new layer gives the base layer's output (B starts at zero, A random), "
                     "and the first gradient reaches B", "a new layer gives the base layer's output, but "
                     "no gradient reaches B: forward must use self.B(self.A(x)) with autograd on")
        layer.zero_grad(set_to_none=True)


def _forward_mistakes(x, base: nn.Linear, A, B, r: int, alpha: float) -> dict:
    lora, s = B(A(x)), alpha / r
    mistakes = {
        f"the update is not scaled: {FORMULA}": base(x) + lora,
        f"the update is scaled by alpha: the scale is alpha / r = {s:g}": base(x) + alpha * lora,
        f"the scale is upside down (r / alpha): it is alpha / r = {s:g}": base(x) + r / alpha * lora,
        f"the base layer's bias is left out (x @ base.weight.T): call self.base(x), which adds it; {FORMULA}":
            x @ base.weight.T + s * lora,
        f"the LoRA path is missing: forward adds it to the base layer, {FORMULA}": base(x),
        f"the base layer's output is missing: {FORMULA}": s * lora,
    }
    if base.in_features == base.out_features:
        mistakes[f"the update is transposed (x @ (B @ A)): {UPDATE}; in forward use self.B(self.A(x))"] = (
            base(x) + s * x @ (B.weight @ A.weight))
    return mistakes


def _matching(value, mistakes: dict, default: str) -> str:
    return next((m for m, v in mistakes.items() if close(value, v, atol=1e-5)), default)


def _same_weights(check: Check, layer, reference: ReferenceLoRALinear, seed: int) -> None:
    """Random A and B (B no longer zero), the same in both, so every path shows in the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        reference.A.weight.copy_(torch.randn(reference.A.weight.shape, generator=gen) * 0.5)
        reference.B.weight.copy_(torch.randn(reference.B.weight.shape, generator=gen) * 0.5)
        layer.A.weight.copy_(reference.A.weight)
        layer.B.weight.copy_(reference.B.weight)


def _check_forward(check: Check, layer, reference, base: nn.Linear, r: int, alpha: float, label: str) -> None:
    gen = torch.Generator().manual_seed(31)
    for shape in ((5, base.in_features), (2, 3, base.in_features)):
        x = torch.randn(shape, generator=gen)
        out = check.call(f"{label}(x) on a {shape} input", layer, x)
        if not isinstance(out, torch.Tensor):
            check.stop(f"{label}(x) should return the output tensor, got {type(out).__name__}")
        expected = reference(x)
        if not (isinstance(out, torch.Tensor) and close(out, expected, atol=1e-5)):
            with torch.no_grad():
                mistakes = _forward_mistakes(x, reference.base, reference.A, reference.B, r, alpha)
            check.stop(f"{label} on a {shape} input: " + _matching(out, mistakes, f"the output "
                                                                   f"differs from {FORMULA}"))
    layer.zero_grad(set_to_none=True)
    if out.requires_grad:
        out.sum().backward()
    expected.sum().backward()
    grads = [layer.A.weight.grad, layer.B.weight.grad]
    if any(g is None for g in grads):
        check.stop(f"{label}: no gradient reaches A or B: forward must use self.A and self.B with "
                   f"autograd on (no torch.no_grad(), .detach() or .data)")
    if not all(close(g, ref.grad, atol=1e-5) for g, ref in zip(grads, (reference.A.weight, reference.B.weight))):
        check.stop(f"{label}: the output is right but the gradients of A and B differ from the reference's")


def _merge_mistakes(W0, A, B, r: int, alpha: float) -> dict:
    update, s = B @ A, alpha / r
    mistakes = {
        "merge() adds B @ A without the scale: add scaling * (B.weight @ A.weight)": W0 + update,
        f"merge() scales the update by alpha: the scale is alpha / r = {s:g}": W0 + alpha * update,
        "merge() subtracts the update: add it": W0 - s * update,
        "merge() did not change base.weight: add scaling * (B.weight @ A.weight) to it, in place "
        "under torch.no_grad()": W0,
    }
    if update.shape[0] == update.shape[1]:
        mistakes[f"merge() adds the transpose of the update: {UPDATE}"] = W0 + s * update.T
    return mistakes


def _merge(check: Check, layer, what: str) -> None:
    """Call merge() or unmerge() as a learner would, outside torch.no_grad(): the weight must not
    join A and B's graph."""
    was_frozen = not layer.base.weight.requires_grad  # an unfrozen base is reported already
    check.call(what, getattr(layer, what.rsplit(".", 1)[-1].rstrip("()")))
    weight = layer.base.weight
    if weight.grad_fn is not None:
        check.stop(f"{what} ran with autograd watching, so base.weight now hangs on the graph of A "
                   f"and B: do it in place under torch.no_grad() (put @torch.no_grad() above the def)")
    if was_frozen and weight.requires_grad:
        check.stop(f"after {what} base.weight trains again: change it in place under "
                   f"torch.no_grad() rather than making a new nn.Parameter")


def _check_merge(check: Check, layer, reference, r: int, alpha: float, label: str) -> tuple[bool, float]:
    """merge() folds the update into the weight, the merged forward adds nothing, unmerge() undoes
    it. Returns whether the old weight came back bit for bit, and the largest difference."""
    x = torch.randn(4, reference.base.in_features, generator=torch.Generator().manual_seed(32))
    s, bias = alpha / r, reference.base.bias
    A, B = reference.A.weight.detach(), reference.B.weight.detach()
    with torch.no_grad():
        before, W0 = reference(x), layer.base.weight.detach().clone()
    _merge(check, layer, f"{label}.merge()")
    with torch.no_grad():
        W1 = layer.base.weight.detach().clone()
        if not close(W1, W0 + s * B @ A, atol=1e-5):
            check.stop(f"{label}: " + _matching(W1, _merge_mistakes(W0, A, B, r, alpha), "after merge() "
                       "base.weight should be the old weight + scaling * (B.weight @ A.weight)"))
        merged = check.call(f"{label}(x) while merged", layer, x)
        if close(merged, F.linear(x, W1, bias) + s * x @ A.T @ B.T, atol=1e-5):
            check.stop(f"{label}: while merged, forward still adds the LoRA path, so the update counts "
                       f"twice: keep a flag (self.merged = True in merge()) and return self.base(x) alone")
        if not close(merged, before, atol=1e-5):
            check.stop(f"{label}: while merged the output should not change (base(x) with the merged weight)")
    _merge(check, layer, f"{label}.unmerge()")
    with torch.no_grad():
        W2 = layer.base.weight.detach().clone()
        if not close(W2, W0, atol=1e-5):
            check.stop(f"{label}: " + _matching(W2, {
                "unmerge() did not change the weight back: restore the weight merge() kept (or "
                "subtract the same update)": W1,
                "unmerge() subtracts B @ A without the scale: undo exactly what merge() added": W1 - B @ A,
            }, "after unmerge() base.weight should be the weight from before merge()"))
        after = check.call(f"{label}(x) after unmerge()", layer, x)
        if not close(after, before, atol=1e-5):
            check.stop(f"{label}: after unmerge() forward must add the LoRA path again (reset the flag "
                       f"in unmerge()): {FORMULA}" if close(after, F.linear(x, W0, bias)) else
                       f"{label}: after unmerge() the output differs from before merge()")
    return torch.equal(W2, W0), (W2 - W0).abs().max().item()


def _check_merge_twice(check: Check, lora_class, name: str) -> None:
    n_in, n_out, r, alpha = LAYERS[0]
    base = _base(n_in, n_out, seed=40)
    layer, reference = lora_class(base, r, alpha), ReferenceLoRALinear(copy.deepcopy(base), r, alpha)
    _same_weights(check, layer, reference, seed=41)
    with torch.no_grad():
        layer.merge()
        once = layer.base.weight.detach().clone()
        try:
            layer.merge()
        except Exception:  # refusing is right
            check.ok("merge() refuses to merge twice")
            return
    check.expect(close(layer.base.weight, once, atol=1e-6), "a second merge() changes nothing",
                 "a second merge() adds the update again: remember that the layer is merged (a flag) "
                 "and refuse (raise an error) or do nothing")


def check_lora_linear(lora_class) -> Check:
    """Check a learner's LoRALinear(base, r, alpha): start, forward, gradients, merge and unmerge."""
    name = learner_name(lora_class, "LoRALinear")
    with Check(name, seed=0, known=LORA_ERRORS) as check:
        exact, rounding = True, 0.0
        for i, (n_in, n_out, r, alpha) in enumerate(LAYERS):
            label = f"{name}(nn.Linear({n_in}, {n_out}), r={r}, alpha={alpha:g})"
            base = _base(n_in, n_out, seed=20 + i)
            reference = ReferenceLoRALinear(copy.deepcopy(base), r, alpha)
            layer = check.call(label, lora_class, base, r, alpha)
            if not isinstance(layer, nn.Module):
                check.stop(f"{label} is a {type(layer).__name__}: make it a module, class {name}(nn.Module), "
                           f"with super().__init__() first in __init__")
            _structure(check, layer, base, r, name)
            if i == 0:  # what a new layer trains and how it starts: said once
                _training_setup(check, layer, r, alpha)
                _start(check, layer, base, name)
            _same_weights(check, layer, reference, seed=33 + i)
            _check_forward(check, layer, reference, base, r, alpha, label)
            layer_exact, layer_rounding = _check_merge(check, layer, reference, r, alpha, label)
            exact, rounding = exact and layer_exact, max(rounding, layer_rounding)
        check.ok(f"on 2-D and 3-D inputs, for {len(LAYERS)} layer sizes, r and alpha, the output and "
                 f"the gradients of A and B equal the reference's: {FORMULA}")
        check.ok("merge() folds scaling * (B.weight @ A.weight) into base.weight; while merged the "
                 "output is the same, with the LoRA path skipped")
        check.ok("unmerge() restores the old weight bit for bit" if exact else
                 f"unmerge() restores the old weight to within float rounding (up to {rounding:.0e}): "
                 f"subtracting the update leaves a little rounding behind, as peft's unmerge does. "
                 f"To restore it exactly, keep a copy of the old weight in merge()")
        _check_merge_twice(check, lora_class, name)
    return check
