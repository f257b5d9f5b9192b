"""Checkers for chapter 10's fine-tuning exercises: collate (padded batches whose targets skip the
prompt) and masked_cross_entropy (the loss on the response tokens only)."""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F

from ..finetune import IGNORE_INDEX
from ..finetune import collate as reference_collate
from . import Check, all_equal, learner_name, shape_of

# --- collate ---------------------------------------------------------------------------------------
COLLATE_RULE = ("tokens = prompt + response, inputs = tokens[:-1], targets = tokens[1:] with the "
                "prompt's targets -100: [-100] * (len(prompt) - 1) + response")
# (what the case is, batch, pad_id). The first has rows of three lengths, the longest in the middle.
COLLATE_CASES = [
    ("three rows of different lengths", [([5, 6, 7], [8, 9, 2]), ([13, 14, 15, 16], [17, 18, 19, 2]),
                                         ([10, 11], [12, 2])], 1),
    ("a batch of one", [([20, 21, 22, 23], [24, 2])], 1),
    ("two rows of equal length (nothing to pad)", [([3, 4], [5, 6, 2]), ([7, 8, 9], [10, 2])], 11),
    ("a one-token prompt and a response that is only the end token, pad_id=7",
     [([3, 4, 5], [2]), ([6], [8, 9, 10, 2])], 7),
]
MASK_IT = "mask them with -100, the target F.cross_entropy skips"
COLLATE_MISTAKES = {
    "the targets are not shifted: targets[t] is the token after inputs[t] (tokens[1:]), not the "
    "same token": [dict(shift="none"), dict(shift="none_full")],
    "the shift goes the wrong way: inputs = tokens[:-1] and targets = tokens[1:], so that each "
    "target is the next token": [dict(shift="back")],
    "the first response token is never learned (the mask is one position too long): targets[t] "
    "is kept when t + 1 >= len(prompt), that is [-100] * (len(prompt) - 1) + response": [dict(offset=1)],
    "the last prompt token is learned (the mask is one position short): the first kept target is "
    "the first response token, [-100] * (len(prompt) - 1) + response": [dict(offset=-1)],
    "the response is masked instead of the prompt: -100 goes on the prompt's targets, and the "
    "response's targets are kept": [dict(invert=True)],
    "the prompt's targets are not masked, so the model would learn to write prompts too: set them "
    "to -100, [-100] * (len(prompt) - 1) + response": [dict(masked=False)],
    f"the prompt's targets are 0, a real token id: {MASK_IT}": [dict(mask=0)],
    f"the prompt's targets are pad_id, a real token id: {MASK_IT}": [dict(mask="pad")],
    "the padding's targets are pad_id, so the model would learn to write padding: pad the "
    "targets with -100": [dict(target_pad="pad")],
    "the padding's targets are 0, a real token id: pad the targets with -100": [dict(target_pad=0)],
    "the inputs are padded with 0: pad them with the pad_id given": [dict(input_pad=0)],
    "the inputs are padded with -100, which no embedding can read: pad the inputs with pad_id "
    "(only the targets get -100)": [dict(input_pad=IGNORE_INDEX)],
    "the rows are padded on the left: pad on the right, so that every row starts at position 0 "
    "and, with causal attention, no real token looks at padding": [dict(left=True)],
    "the end token is never a target (the response is cut short): tokens = prompt + response, "
    "whole; only the inputs drop the last token": [dict(end="drop")],
    "the inputs include the last token, which is only ever a target: inputs = tokens[:-1] (each "
    "row is one position too long)": [dict(end="input")],
}


def _collate_variant(batch, pad_id: int, *, shift: str = "next", offset: int = 0, invert: bool = False,
                     masked: bool = True, mask=IGNORE_INDEX, target_pad=IGNORE_INDEX, input_pad="pad", left: bool = False,
                     end: str = "keep") -> tuple[torch.Tensor, torch.Tensor]:
    """collate with one deliberate change, to recognise a learner's mistake (the defaults give the
    reference). mask, target_pad and input_pad are a number, or "pad" for pad_id."""
    def value(v):
        return pad_id if v == "pad" else v

    rows = []
    for prompt, response in batch:
        tokens = list(prompt) + list(response[:-1] if end == "drop" else response)
        n = len(tokens)
        # `where[t]` is the index in `tokens` of the target at position t.
        inputs, where = {"next": (tokens[:-1], range(1, n)), "none": (tokens[:-1], range(n - 1)),
                         "none_full": (tokens, range(n)), "back": (tokens[1:], range(n - 1))}[shift]
        if end == "input":
            inputs, where = tokens, range(1, n + 1)
        first_kept = len(prompt) + offset if masked else 0
        targets = [IGNORE_INDEX if i >= n else tokens[i] if (i >= first_kept) != invert
                   else value(mask) for i in where]
        rows.append((inputs, targets))
    T = max(len(inputs) for inputs, _ in rows)
    xs, ys = [], []
    for inputs, targets in rows:
        x_pad, y_pad = [value(input_pad)] * (T - len(inputs)), [value(target_pad)] * (T - len(targets))
        xs.append(x_pad + inputs if left else inputs + x_pad)
        ys.append(y_pad + targets if left else targets + y_pad)
    return torch.tensor(xs), torch.tensor(ys)


def _collate_diagnosis(out, batch, pad_id: int) -> str | None:
    """The named mistake (or two) whose output equals the learner's, else None."""
    singles = [(m, kw) for m, ways in COLLATE_MISTAKES.items() for kw in ways]
    for message, kw in singles:
        if all_equal(out, _collate_variant(batch, pad_id, **kw)):
            return message
    for (m1, kw1), (m2, kw2) in itertools.combinations(singles, 2):
        if m1 != m2 and not kw1.keys() & kw2.keys() and all_equal(out, _collate_variant(batch, pad_id, **kw1, **kw2)):
            return f"two mistakes: {m1}; and {m2}"
    return None


def _collate_output(check: Check, what: str, out, said: set[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The learner's (inputs, targets) as two long 2-D tensors; stops on what cannot be compared."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        check.stop(f"{what} should return two tensors, (inputs, targets); got {type(out).__name__}")
    if any(isinstance(part, list) for part in out):
        check.stop(f"{what} returned lists: return tensors, torch.tensor(rows) once every row is "
                   f"padded to the same length")
    if not all(isinstance(part, torch.Tensor) for part in out):
        check.stop(f"{what} should return two tensors, got {', '.join(type(p).__name__ for p in out)}")
    wrong_dtype = [f"{part} are {t.dtype}" for part, t in zip(("inputs", "targets"), out) if t.dtype != torch.long]
    if wrong_dtype and "dtype" not in said:
        said.add("dtype")
        check.fail(f"{' and '.join(wrong_dtype)}: token ids are whole numbers, torch.long (an "
                   f"embedding and F.cross_entropy need it; torch.full(..., dtype=torch.long))")
    if any(t.dim() != 2 for t in out):
        check.stop(f"{what} should give two (B, T) tensors, one row per example; got "
                   f"{shape_of(out[0])} and {shape_of(out[1])}")
    return out[0].long(), out[1].long()


def _check_collate_case(check: Check, name: str, collate, label: str, batch, pad_id: int,
                        said: set[str]) -> None:
    given = copy.deepcopy(batch)
    what = f"{name}(batch, pad_id={pad_id}) on {label}"
    out = check.call(what, collate, given, pad_id)
    if given != batch and "changed" not in said:
        said.add("changed")
        check.fail(f"{what} changed the lists it was given (prompt += response, or .extend): build "
                   f"a new list, tokens = prompt + response")
    out = _collate_output(check, what, out, said)
    expected = reference_collate(batch, pad_id)
    if all_equal(out, expected):
        check.ok(f"{label}: inputs and targets equal the reference")
        return
    diagnosis = _collate_diagnosis(out, batch, pad_id) if not torch.equal(out[0], out[1]) else (
        "the targets are the inputs themselves: targets = tokens[1:] (the next token at each "
        "position), with the prompt and the padding set to -100")
    (B, T), got = expected[0].shape, tuple(out[0].shape)
    if diagnosis is None and got[0] == B and got[1] > T and out[1].shape == out[0].shape and all_equal(
            (out[0][:, :T], out[1][:, :T]), expected):
        diagnosis = (f"every row is padded to {got[1]} positions: pad to the longest row of the "
                     f"batch ({T} here), so that a batch is no longer than it needs to be")
    if diagnosis is None:
        part = "inputs" if not all_equal(out[:1], expected[:1]) else "targets"
        index = 0 if part == "inputs" else 1
        diagnosis = (f"the {part} differ from the reference (got {out[index].tolist()}, expected "
                     f"{expected[index].tolist()}): {COLLATE_RULE}, rows padded on the right")
    check.fail(f"{label}: {'the same mistake' if diagnosis in said else diagnosis}")
    said.add(diagnosis)


def check_collate(collate) -> Check:
    """Check a learner's collate(batch, pad_id) -> (inputs, targets), both (B, T) torch.long."""
    name = learner_name(collate, "collate")
    with Check(name, seed=0) as check:
        said: set[str] = set()  # a mistake is explained once; later cases only say where
        for label, batch, pad_id in COLLATE_CASES:
            _check_collate_case(check, name, collate, label, batch, pad_id, said)
    return check


# --- masked_cross_entropy -----------------------------------------------------------------------------
CE_RULE = "F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)"
CE_ERRORS = {
    "-100 is out of bounds": "a target of -100 was used as a token id: leave the ignored positions out "
        f"(ignore_index=-100, or a mask targets != -100): {CE_RULE}",
}
# Three responses of different lengths (3, 2 and 1 kept targets); row 1 learns token 0 once.
CE_TARGETS = torch.tensor([[-100, -100, 3, 1, 5], [-100, 4, 0, -100, -100], [-100, -100, -100, -100, 6]])


def _ce_mistakes(logits: torch.Tensor, targets: torch.Tensor) -> dict:
    flat, flat_targets = logits.flatten(0, 1), targets.flatten()
    per_position = F.cross_entropy(flat, flat_targets, reduction="none")  # 0 where ignored
    kept_per_row = (targets != IGNORE_INDEX).sum(1)

    def shifted(a: slice, b: slice) -> torch.Tensor:
        return F.cross_entropy(logits[:, a].flatten(0, 1), targets[:, b].flatten())

    again = ("the targets are shifted again: collate has shifted them already, so logits[:, t] and "
             f"targets[:, t] belong together as they are: {CE_RULE}")
    return {
        "the mean runs over every position, the ignored ones counted as zero loss: divide by the "
        "number of kept targets (ignore_index=-100 with reduction='mean' does it)":
            per_position.sum() / per_position.numel(),
        "this is the mean of each row's mean, so a short response weighs as much as a long one: "
        "average over every kept target of the batch at once, " + CE_RULE:
            (per_position.view(targets.shape).sum(1) / kept_per_row).mean(),
        "the losses are summed, not averaged: take the mean over the kept targets (reduction="
        "'mean', the default)": per_position.sum(),
        again: shifted(slice(None, -1), slice(1, None)),
        again + " (and the other way)": shifted(slice(1, None), slice(None, -1)),
        "the -100 targets became token 0 and are learned: keep them -100 and let ignore_index=-100 "
        "skip them": F.cross_entropy(flat, flat_targets.clamp(min=0)),
        "softmax is applied before cross_entropy, which applies log_softmax itself: pass the raw "
        "logits": F.cross_entropy(flat.softmax(-1), flat_targets),
        "F.nll_loss got raw logits, but it wants log-probabilities: use F.cross_entropy on the "
        "logits (or log_softmax first)": F.nll_loss(flat, flat_targets),
    }


def _once(check: Check, said: set[str], message: str) -> None:
    """A failure said once; later cases that show it again add nothing."""
    if message not in said:
        said.add(message)
        check.fail(message)


def _ce_value(check: Check, name: str, what: str, out, said: set[str]) -> torch.Tensor:
    """The learner's loss as a one-number tensor; stops when it is not one."""
    if isinstance(out, float):
        _once(check, said, f"{name} returned a float: return the tensor itself (no .item()), so "
                           f"that loss.backward() can train the model")
        return torch.tensor(out)
    if not isinstance(out, torch.Tensor):
        check.stop(f"{what} should return the loss as a tensor with one number, got {type(out).__name__}")
    if out.numel() != 1:
        check.stop(f"{what} returned a tensor of shape {tuple(out.shape)}, a loss per position "
                   f"(reduction='none'?): return one number, the mean over the kept targets, {CE_RULE}")
    return out.reshape(())


def _check_ce_case(check: Check, name: str, fn, logits: torch.Tensor, targets: torch.Tensor,
                   said: set[str]) -> None:
    label = f"logits {tuple(logits.shape)}"
    what = f"{name}({label}, targets {tuple(targets.shape)})"
    mine, given = logits.clone().requires_grad_(True), targets.clone()
    out = check.call(what, fn, mine, given)
    if not torch.equal(given, targets):
        _once(check, said, f"{name} changed the targets it was given (an in-place change such as "
                           f"targets[...] = 0 or clamp_): leave them as they are")
    value = _ce_value(check, name, what, out, said)
    reference_logits = logits.clone().requires_grad_(True)
    expected = F.cross_entropy(reference_logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    right = bool(torch.isclose(value.detach().double(), expected.detach().double(), rtol=1e-5, atol=1e-6))
    if right:
        check.ok(f"{label}: the mean cross-entropy over the {int((targets != IGNORE_INDEX).sum())} "
                 f"response targets")
    else:
        mistakes = _ce_mistakes(logits, targets)
        diagnosis = next((m for m, v in mistakes.items() if torch.isclose(value.detach().double(), v.double(),
                                                                          rtol=1e-5, atol=1e-6)),
                         f"the loss is {value.item():.4f}, expected {expected.item():.4f}: {CE_RULE}")
        check.fail(f"{label}: {'the same mistake' if diagnosis in said else diagnosis}")
        said.add(diagnosis)
    if not said & {"gradient"}:
        said.add("gradient")  # checked on the first case only
        _check_ce_gradient(check, what, out, mine, reference_logits, expected, targets, right)


def _check_ce_gradient(check: Check, what: str, out, mine: torch.Tensor, reference_logits: torch.Tensor,
                       expected: torch.Tensor, targets: torch.Tensor, right: bool) -> None:
    """The ignored positions get exactly zero gradient; the rest the reference's."""
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        check.fail(f"no gradient reaches the logits from {what}: compute the loss from the logits "
                   f"themselves, without .item(), .detach() or torch.no_grad()")
        return
    check.call(f"{what}.backward()", out.sum().backward)
    expected.backward()
    grad = mine.grad
    ignored = targets == IGNORE_INDEX
    if grad is None or not grad[~ignored].count_nonzero():
        check.fail(f"no gradient reaches the response positions' logits from {what}: compute the "
                   f"loss from the logits themselves, without .item(), .detach() or torch.no_grad()")
    elif grad[ignored].count_nonzero():
        check.fail("the prompt and padding positions get a gradient, so they are learned too: their "
                   "loss must not depend on the logits at all (ignore_index=-100 skips them)")
    elif right:
        check.expect(torch.allclose(grad, reference_logits.grad, atol=1e-6),
                     "the prompt and padding positions get exactly zero gradient; the response "
                     "positions get the reference's", "the gradient differs from the reference's "
                     "although the loss is right: compute the loss from logits with differentiable "
                     "operations only")
    else:
        check.ok("the prompt and padding positions get exactly zero gradient")


def check_masked_cross_entropy(masked_cross_entropy) -> Check:
    """Check a learner's masked_cross_entropy(logits, targets) -> the mean loss over kept targets."""
    name = learner_name(masked_cross_entropy, "masked_cross_entropy")
    with Check(name, seed=0, known=CE_ERRORS) as check:
        gen = torch.Generator().manual_seed(21)
        said: set[str] = set()  # a mistake is explained once
        logits = torch.randn(3, 5, 7, generator=gen) * 2
        _check_ce_case(check, name, masked_cross_entropy, logits, CE_TARGETS, said)
        other = torch.randn(1, 4, 11, generator=gen)  # other sizes, and a target of the last id
        _check_ce_case(check, name, masked_cross_entropy, other, torch.tensor([[-100, 3, 10, 0]]), said)
    return check
