"""The chapter 10 checkers for collate and masked_cross_entropy: the reference passes, a stub
fails, and every mistake a checker claims to diagnose is planted and named."""

import pytest
import torch
import torch.nn.functional as F
from checker_results import NOT_WRITTEN, all_passed, has

from gptcourse.checks.finetune import (
    COLLATE_CASES,
    COLLATE_MISTAKES,
    _collate_variant,
    check_collate,
    check_masked_cross_entropy,
)
from gptcourse.finetune import collate


# --- collate -------------------------------------------------------------------------------------
def learner_collate(*, shift="next", first_kept=lambda n: n - 1, invert=False, mask_with=-100,
                    pad_targets_with=-100, pad_inputs_with=None, left=False, drop_end=False,
                    keep_last=False, dtype=torch.long, fixed=None, as_list=False, mutate=False):
    """A learner's collate(batch, pad_id), with one mistake switched on by a keyword.
    first_kept(len(prompt)): the first target position that is kept."""
    def collate_(batch, pad_id):
        rows = []
        for prompt, response in batch:
            n_prompt = len(prompt)
            if mutate:
                prompt += response  # changes the caller's list
                tokens = prompt
            else:
                tokens = prompt + response
            if drop_end:
                tokens = tokens[:-1]
            if keep_last:
                inputs, targets = tokens, tokens[1:] + [-100]
            else:
                inputs, targets = {"next": (tokens[:-1], tokens[1:]), "none": (tokens[:-1], tokens[:-1]),
                                   "back": (tokens[1:], tokens[:-1])}[shift]
            targets = list(targets)
            keep = max(0, first_kept(n_prompt))
            for t in range(len(targets)):
                if (t < keep) != invert and targets[t] != -100:
                    targets[t] = mask_with
            rows.append((inputs, targets))
        T = fixed or max(len(inputs) for inputs, _ in rows)
        fill_x = pad_id if pad_inputs_with is None else pad_inputs_with
        xs, ys = [], []
        for inputs, targets in rows:
            gap = T - len(inputs)
            xs.append([fill_x] * gap + inputs if left else inputs + [fill_x] * gap)
            ys.append([pad_targets_with] * gap + targets if left else targets + [pad_targets_with] * gap)
        if as_list:
            return xs, ys
        return torch.tensor(xs, dtype=dtype), torch.tensor(ys, dtype=dtype)
    return collate_


def collate_with_full(batch, pad_id):
    """Another correct way: fill (B, T) tensors, then copy each row in."""
    rows = [(p + r)[:-1] for p, r in batch]
    T = max(map(len, rows))
    x = torch.full((len(batch), T), pad_id, dtype=torch.long)
    y = torch.full((len(batch), T), -100, dtype=torch.long)
    for i, (p, r) in enumerate(batch):
        tokens = p + r
        x[i, :len(tokens) - 1] = torch.tensor(tokens[:-1])
        y[i, len(p) - 1:len(tokens) - 1] = torch.tensor(r)
    return x, y


def test_collate_reference_passes_every_line(capsys):
    assert all_passed(check_collate(collate), capsys)


def test_collate_other_correct_versions_pass():
    for fn in (learner_collate(), collate_with_full, lambda batch, pad_id: collate(batch, pad_id, max_length=64)):
        result = check_collate(fn)
        assert result.passed, result.problems


def test_collate_stub_fails():
    def collate(batch, pad_id):
        raise NotImplementedError

    result = check_collate(collate)
    assert not result.passed and has(result, NOT_WRITTEN)
    assert result.problems[0].startswith("collate(batch, pad_id=1)")


@pytest.mark.parametrize("kwargs, words", [
    (dict(shift="none", first_kept=lambda n: n), "the targets are not shifted"),
    (dict(shift="back", first_kept=lambda n: n), "the shift goes the wrong way"),
    (dict(first_kept=lambda n: n), "the first response token is never learned"),
    (dict(first_kept=lambda n: n - 2), "the last prompt token is learned"),
    (dict(invert=True), "the response is masked instead of the prompt"),
    (dict(first_kept=lambda n: 0), "the prompt's targets are not masked"),
    (dict(shift="none", first_kept=lambda n: 0), "two mistakes: the targets are not shifted"),
    (dict(mask_with=0), "the prompt's targets are 0, a real token id"),
    (dict(mask_with=1), "the prompt's targets are pad_id, a real token id"),
    (dict(pad_targets_with=1), "the padding's targets are pad_id"),
    (dict(pad_targets_with=0), "the padding's targets are 0"),
    (dict(pad_inputs_with=0), "the inputs are padded with 0"),
    (dict(pad_inputs_with=-100), "the inputs are padded with -100"),
    (dict(left=True), "the rows are padded on the left"),
    (dict(drop_end=True), "the end token is never a target"),
    (dict(keep_last=True), "the inputs include the last token"),
    (dict(fixed=12), "every row is padded to 12 positions: pad to the longest row"),
    (dict(dtype=torch.float32), "inputs are torch.float32 and targets are torch.float32"),
    (dict(as_list=True), "returned lists: return tensors"),
    (dict(mutate=True), "changed the lists it was given"),
    (dict(mask_with=1, pad_targets_with=1), "two mistakes: the prompt's targets are pad_id"),
])
def test_collate_mistakes_are_named(kwargs, words):
    result = check_collate(learner_collate(**kwargs))
    assert not result.passed
    assert has(result, words), result.problems


def test_collate_float_ids_are_named_once_and_the_values_still_checked():
    result = check_collate(learner_collate(dtype=torch.float32))
    assert len(result.problems) == 1, result.problems
    result = check_collate(learner_collate(dtype=torch.float32, left=True))
    assert has(result, "torch.float32") and has(result, "padded on the left"), result.problems


def test_collate_a_repeated_mistake_is_explained_once():
    result = check_collate(learner_collate(first_kept=lambda n: n))
    assert sum("never learned" in p for p in result.problems) == 1
    assert has(result, "the same mistake"), result.problems


def test_collate_batch_of_one_and_equal_rows_are_checked():
    def fails_without_padding(batch, pad_id):
        if len({len(p) + len(r) for p, r in batch}) == 1:
            raise ValueError("nothing to pad")
        return collate(batch, pad_id)

    result = check_collate(fails_without_padding)
    assert has(result, "a batch of one") and has(result, "ValueError"), result.problems


@pytest.mark.parametrize("out, words", [
    (lambda x, y: x, "should return two tensors, (inputs, targets)"),
    (lambda x, y: (x.flatten(), y.flatten()), "should give two (B, T) tensors"),
    (lambda x, y: (x, "targets"), "should return two tensors, got Tensor, str"),
    (lambda x, y: (x, x.clone()), "the targets are the inputs themselves"),
])
def test_collate_wrong_return_values_are_named(out, words):
    result = check_collate(lambda batch, pad_id: out(*collate(batch, pad_id)))
    assert has(result, words), result.problems


def test_every_named_collate_mistake_gives_its_own_output():
    label, batch, pad_id = COLLATE_CASES[0]
    outputs = [_collate_variant(batch, pad_id, **kw) for ways in COLLATE_MISTAKES.values() for kw in ways]
    outputs.append(collate(batch, pad_id))
    for i, a in enumerate(outputs):
        for b in outputs[i + 1:]:
            assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


# --- masked_cross_entropy ---------------------------------------------------------------------------
def flat(logits, targets):
    return logits.flatten(0, 1), targets.flatten()


def per_position(logits, targets):
    return F.cross_entropy(*flat(logits, targets), reduction="none").view(targets.shape)


def reference_ce(logits, targets):
    return F.cross_entropy(*flat(logits, targets), ignore_index=-100)


def by_mask(logits, targets):
    kept = targets != -100
    return F.cross_entropy(logits[kept], targets[kept])


def by_weights(logits, targets):
    kept = (targets != -100).float()
    losses = F.cross_entropy(*flat(logits, targets.clamp(min=0)), reduction="none").view(targets.shape)
    return (losses * kept).sum() / kept.sum()


def clamped_in_place(logits, targets):
    targets[targets == -100] = 0
    return F.cross_entropy(*flat(logits, targets))


def by_gather(logits, targets):
    return -logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).mean()


def mean_of_rows(logits, targets):
    kept = (targets != -100).sum(1)
    return (per_position(logits, targets).sum(1) / kept).mean()


def test_masked_cross_entropy_reference_passes_every_line(capsys):
    assert all_passed(check_masked_cross_entropy(reference_ce), capsys)


def test_masked_cross_entropy_other_correct_versions_pass():
    for fn in (by_mask, by_weights, lambda l, t: F.cross_entropy(l.transpose(1, 2), t),
               lambda l, t: F.nll_loss(l.log_softmax(-1).flatten(0, 1), t.flatten())):
        result = check_masked_cross_entropy(fn)
        assert result.passed, result.problems


def test_masked_cross_entropy_stub_fails():
    def masked_cross_entropy(logits, targets):
        raise NotImplementedError

    result = check_masked_cross_entropy(masked_cross_entropy)
    assert not result.passed and has(result, NOT_WRITTEN)


@pytest.mark.parametrize("fn, words", [
    (lambda l, t: per_position(l, t).mean(), "the mean runs over every position"),
    (mean_of_rows, "the mean of each row's mean"),
    (lambda l, t: F.cross_entropy(*flat(l, t), reduction="sum"), "the losses are summed"),
    (lambda l, t: reference_ce(l[:, :-1], t[:, 1:]), "the targets are shifted again"),
    (lambda l, t: reference_ce(l[:, 1:], t[:, :-1]), "the targets are shifted again"),
    (lambda l, t: F.cross_entropy(*flat(l, t.clamp(min=0))), "the -100 targets became token 0"),
    (lambda l, t: F.cross_entropy(*flat(l, t.clamp(min=0))), "the prompt and padding positions get a gradient"),
    (clamped_in_place, "changed the targets it was given"),
    (clamped_in_place, "the -100 targets became token 0"),
    (lambda l, t: reference_ce(l.softmax(-1), t), "softmax is applied before cross_entropy"),
    (lambda l, t: F.nll_loss(*flat(l, t)), "F.nll_loss got raw logits"),
    (lambda l, t: F.cross_entropy(*flat(l, t), reduction="none"), "a loss per position"),
    (per_position, "reduction='none'"),
    (lambda l, t: reference_ce(l, t).item(), "returned a float: return the tensor itself"),
    (lambda l, t: reference_ce(l, t).item(), "no gradient reaches the logits"),
    (lambda l, t: reference_ce(l.detach(), t), "no gradient reaches the logits"),
    (lambda l, t: torch.zeros((), requires_grad=True), "no gradient reaches the response positions' logits"),
    (lambda l, t: l.sum() * 0, "no gradient reaches the response positions' logits"),
    (lambda l, t: [reference_ce(l, t)], "should return the loss as a tensor with one number, got list"),
    (by_gather, "a target of -100 was used as a token id"),
    (lambda l, t: F.cross_entropy(l, t), "flatten"),
    (lambda l, t: F.cross_entropy(l.flatten(0, 1)[:, :7], t.flatten()), "(1, 4, 11)"),
])
def test_masked_cross_entropy_mistakes_are_named(fn, words):
    result = check_masked_cross_entropy(fn)
    assert not result.passed
    assert has(result, words), result.problems


def test_masked_cross_entropy_check_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    check_masked_cross_entropy(reference_ce)
    check_collate(collate)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))
