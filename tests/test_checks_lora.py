"""The chapter 10 checkers for LoRALinear and lora_parameter_count: the reference passes, a stub
fails, and every mistake a checker claims to diagnose is planted and named."""

import copy
import itertools

import pytest
import torch
import torch.nn as nn
from checker_results import NOT_WRITTEN, all_passed, has

from gptcourse.checks.lora import check_lora_linear
from gptcourse.checks.lora_count import (
    MATCHES,
    PER_LAYER,
    _count,
    _count_cases,
    check_lora_parameter_count,
)
from gptcourse.lora import LoRALinear, inject_lora, trainable_parameters


# --- LoRALinear -------------------------------------------------------------------------------------
class Learner(nn.Module):
    """A learner's correct LoRALinear, written as the exercise asks; the mistakes below change one part."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.A = nn.Linear(base.in_features, r, bias=False)
        self.B = nn.Linear(r, base.out_features, bias=False)
        nn.init.zeros_(self.B.weight)
        self.scaling = alpha / r
        self.merged = False

    def update(self):
        return self.scaling * (self.B.weight @ self.A.weight)

    def forward(self, x):
        if self.merged:
            return self.base(x)
        return self.base(x) + self.scaling * self.B(self.A(x))

    @torch.no_grad()
    def merge(self):
        if self.merged:
            raise RuntimeError("merged already")
        self.old_weight = self.base.weight.clone()
        self.base.weight += self.update()
        self.merged = True

    @torch.no_grad()
    def unmerge(self):
        self.base.weight.copy_(self.old_weight)
        self.merged = False


def start(**changes):
    """A Learner whose __init__ ends with some changes (B random, A zero, a frozen part...)."""
    class Started(Learner):
        def __init__(self, base, r, alpha):
            super().__init__(base, r, alpha)
            with torch.no_grad():
                if "B" in changes:
                    self.B.weight.normal_()
                if "A" in changes:
                    self.A.weight.zero_() if changes["A"] == "zero" else self.A.weight.normal_()
            if changes.get("base") == "trainable":
                base.requires_grad_(True)
            if changes.get("base") == "bias trainable":
                base.bias.requires_grad_(True)
            if changes.get("AB") == "frozen":
                self.A.requires_grad_(False)
                self.B.requires_grad_(False)
            if "scaling" in changes:
                self.scaling = changes["scaling"](alpha, r)
    return Started


class WithBiases(Learner):
    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        self.A, self.B = nn.Linear(base.in_features, r), nn.Linear(r, base.out_features)
        nn.init.zeros_(self.B.weight)


class NoScalingAttribute(Learner):
    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        del self.scaling
        self.alpha, self.r = alpha, r

    def update(self):
        return self.alpha / self.r * (self.B.weight @ self.A.weight)

    def forward(self, x):
        return self.base(x) if self.merged else self.base(x) + self.alpha / self.r * self.B(self.A(x))


def forward_as(fn):
    """A Learner whose unmerged forward is fn(self, x)."""
    class Planted(Learner):
        def forward(self, x):
            return self.base(x) if self.merged else fn(self, x)
    return Planted


def merge_as(fn):
    """A Learner whose merge is `base.weight <- fn(self, weight)`, kept for unmerge as before."""
    class Planted(Learner):
        @torch.no_grad()
        def merge(self):
            self.old_weight = self.base.weight.clone()
            self.base.weight.copy_(fn(self, self.base.weight))
            self.merged = True
    return Planted


def unmerge_as(fn):
    class Planted(Learner):
        @torch.no_grad()
        def unmerge(self):
            fn(self)
    return Planted


class DoubleCounting(Learner):
    def forward(self, x):
        return self.base(x) + self.scaling * self.B(self.A(x))


class MergeScaledByAlpha(Learner):
    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        self.alpha = alpha

    @torch.no_grad()
    def merge(self):
        self.old_weight = self.base.weight.clone()
        self.base.weight += self.alpha * (self.B.weight @ self.A.weight)
        self.merged = True


class MergesTwice(Learner):
    @torch.no_grad()
    def merge(self):
        self.old_weight = self.base.weight.clone() if not self.merged else self.old_weight
        self.base.weight += self.update()
        self.merged = True


class SecondMergeDoesNothing(Learner):
    @torch.no_grad()
    def merge(self):
        if not self.merged:
            super().merge()


class MergeWithAutograd(Learner):
    def merge(self):
        self.old_weight = self.base.weight.detach().clone()
        self.base.weight += self.update()
        self.merged = True


class MergeAddInPlaceWithAutograd(MergeWithAutograd):
    def merge(self):
        self.old_weight = self.base.weight.detach().clone()
        self.base.weight.add_(self.update())
        self.merged = True


class MergeMakesNewParameter(Learner):
    @torch.no_grad()
    def merge(self):
        self.old_weight = self.base.weight.clone()
        self.base.weight = nn.Parameter(self.base.weight + self.update())
        self.merged = True


class MergeAtimesB(Learner):
    @torch.no_grad()
    def merge(self):
        self.old_weight = self.base.weight.clone()
        self.base.weight += self.scaling * (self.A.weight @ self.B.weight)
        self.merged = True


class NoGradPath(Learner):
    def forward(self, x):
        with torch.no_grad():
            update = self.scaling * self.B(self.A(x))
        return self.base(x) if self.merged else self.base(x) + update


class NotAModule:
    def __init__(self, base, r, alpha):
        self.base = base


class OtherName(Learner):
    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        self.layer = self.base
        del self.base


class ParameterAB(Learner):
    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        self.A = nn.Parameter(torch.zeros(r, base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))


class TransposedA(Learner):
    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        self.A = nn.Linear(r, base.in_features, bias=False)


def subtract_update(self):
    self.base.weight -= self.update()
    self.merged = False


def test_lora_linear_reference_passes_every_line(capsys):
    assert all_passed(check_lora_linear(LoRALinear), capsys)


def test_lora_linear_learner_version_and_a_refused_or_ignored_second_merge_pass(capsys):
    for cls in (Learner, SecondMergeDoesNothing):
        assert all_passed(check_lora_linear(cls), capsys)


def test_lora_linear_unmerge_by_subtracting_passes_with_a_note(capsys):
    result = check_lora_linear(unmerge_as(subtract_update))
    assert all_passed(result, capsys)
    note = [message for ok, message in result.findings if "within float rounding" in message]
    assert note and "keep a copy of the old weight" in note[0] and "as peft's unmerge does" in note[0]


def test_lora_linear_stub_fails():
    class StubInit(nn.Module):
        def __init__(self, base, r, alpha):
            raise NotImplementedError

    class StubForward(Learner):
        def forward(self, x):
            raise NotImplementedError

    class StubMerge(Learner):
        def merge(self):
            raise NotImplementedError

    for cls in (StubInit, StubForward, StubMerge):
        result = check_lora_linear(cls)
        assert not result.passed and has(result, NOT_WRITTEN), result.problems


@pytest.mark.parametrize("cls, words", [
    (start(B="random"), "B does not start at zero"),
    (start(A="zero"), "A and B both start at zero: then every gradient to A and B is zero"),
    (start(A="zero", B="random"), "A starts at zero and B random"),
    (start(A="randn"), "A starts too large"),
    (start(base="trainable"), "the base layer is not frozen"),
    (start(base="bias trainable"), "the base layer's bias still trains"),
    (start(AB="frozen"), "A and B are frozen"),
    (WithBiases, "A and B have a bias"),
    (NoScalingAttribute, "there is no self.scaling"),
    (start(scaling=lambda alpha, r: alpha), "self.scaling is alpha: it is alpha / r = 8"),
    (start(scaling=lambda alpha, r: alpha), "the update is scaled by alpha"),
    (start(scaling=lambda alpha, r: r / alpha), "self.scaling is r / alpha"),
    (start(scaling=lambda alpha, r: r / alpha), "the scale is upside down (r / alpha)"),
    (forward_as(lambda self, x: self.base(x) + self.B(self.A(x))), "the update is not scaled"),
    (forward_as(lambda self, x: self.base(x) + self.scaling * x @ (self.B.weight @ self.A.weight)),
     "the update is transposed (x @ (B @ A))"),
    (forward_as(lambda self, x: self.base(x) + self.scaling * self.A(self.B(x))),
     "the update is B.weight @ A.weight, (out, r) @ (r, in) = (out, in)"),
    (forward_as(lambda self, x: x @ self.base.weight.T + self.scaling * self.B(self.A(x))),
     "the base layer's bias is left out"),
    (forward_as(lambda self, x: self.base(x)), "the LoRA path is missing"),
    (forward_as(lambda self, x: self.scaling * self.B(self.A(x))), "the base layer's output is missing"),
    (NoGradPath, "no gradient reaches B"),
    (NoGradPath, "no gradient reaches A or B"),
    (merge_as(lambda self, w: w + self.B.weight @ self.A.weight), "merge() adds B @ A without the scale"),
    (MergeScaledByAlpha, "merge() scales the update by alpha"),
    (merge_as(lambda self, w: w - self.update()), "merge() subtracts the update"),
    (merge_as(lambda self, w: w), "merge() did not change base.weight"),
    (merge_as(lambda self, w: w + self.update().T), "merge() adds the transpose of the update"),
    (MergeAtimesB, "the shapes do not line up: the update is B.weight @ A.weight"),
    (MergeWithAutograd, "merge() changed base.weight while autograd was watching"),
    (MergeAddInPlaceWithAutograd, "hangs on the graph of A and B"),
    (MergeMakesNewParameter, "base.weight trains again"),
    (DoubleCounting, "while merged, forward still adds the LoRA path"),
    (unmerge_as(lambda self: None), "unmerge() did not change the weight back"),
    (unmerge_as(lambda self: (self.base.weight.sub_(self.B.weight @ self.A.weight),
                              setattr(self, "merged", False))), "unmerge() subtracts B @ A without the scale"),
    (unmerge_as(lambda self: self.base.weight.copy_(self.old_weight)), "forward must add the LoRA path again"),
    (MergesTwice, "a second merge() adds the update again"),
    (NotAModule, "make it a module"),
    (OtherName, "keep the layer you wrap as self.base"),
    (ParameterAB, "self.A and self.B should be layers"),
    (TransposedA, "A's weight should be (r, in) = (2, 8)"),
    (forward_as(lambda self, x: (self.base(x),)), "should return the output tensor, got tuple"),
])
def test_lora_linear_mistakes_are_named(cls, words):
    result = check_lora_linear(cls)
    assert not result.passed
    assert has(result, words), result.problems


def test_lora_linear_check_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    check_lora_linear(LoRALinear)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))


# --- lora_parameter_count ---------------------------------------------------------------------------
def learner_count(*, per_layer=lambda lin, r: r * (lin.in_features + lin.out_features),
                  match=lambda name, targets: any(name == t or name.endswith("." + t) for t in targets),
                  items=lambda model: model.named_modules(), result=int):
    """A learner's lora_parameter_count(model, target_names, r), with one part swapped out."""
    def lora_parameter_count(model, target_names, r):
        total = 0
        for name, module in items(model):
            if isinstance(module, nn.Linear) and match(name, target_names):
                total += per_layer(module, r)
        return result(total)
    return lora_parameter_count


def by_injecting(model, target_names, r):
    return trainable_parameters(inject_lora(model, target_names, r=r))


def by_injecting_a_copy(model, target_names, r):
    return trainable_parameters(inject_lora(copy.deepcopy(model), target_names, r=r))


def named_parameters_as_items(model):
    return ((name, module) for name, module in model.named_parameters())


def bias_count(lin):
    return 0 if lin.bias is None else lin.bias.numel()


def test_lora_parameter_count_reference_passes_every_line(capsys):
    assert all_passed(check_lora_parameter_count(by_injecting_a_copy), capsys)


def test_lora_parameter_count_learner_version_passes(capsys):
    assert all_passed(check_lora_parameter_count(learner_count()), capsys)


def test_lora_parameter_count_stub_fails():
    def lora_parameter_count(model, target_names, r):
        raise NotImplementedError

    result = check_lora_parameter_count(lora_parameter_count)
    assert not result.passed and has(result, NOT_WRITTEN)


@pytest.mark.parametrize("fn, words", [
    (learner_count(per_layer=lambda lin, r: lin.in_features * lin.out_features), "the size of each whole weight matrix"),
    (learner_count(per_layer=lambda lin, r: r * lin.in_features * lin.out_features), "r * in * out counts r full matrices"),
    (learner_count(per_layer=lambda lin, r: r * lin.in_features), "only A (r x in_features) is counted"),
    (learner_count(per_layer=lambda lin, r: r * lin.out_features), "only B (out_features x r) is counted"),
    (learner_count(per_layer=lambda lin, r: r * (lin.in_features + lin.out_features) + bias_count(lin)),
     "a bias is counted"),
    (learner_count(per_layer=lambda lin, r: r * (lin.in_features + lin.out_features)
                   + sum(p.numel() for p in lin.parameters())), "the base layer's own parameters are counted too"),
    (learner_count(per_layer=lambda lin, r: lin.in_features + lin.out_features), "r is left out"),
    (learner_count(per_layer=lambda lin, r: 8 * (lin.in_features + lin.out_features)), "r is fixed at 8"),
    (learner_count(match=lambda name, targets: True), "every linear layer is counted"),
    (learner_count(match=lambda name, targets: any(t in name for t in targets)),
     "a target matched inside a longer name ('W_query' in 'W_query_extra')"),
    (learner_count(match=lambda name, targets: any(name.endswith(t) for t in targets)),
     "a target matched the end of a longer name ('proj' in 'out_proj')"),
    (learner_count(match=lambda name, targets: name.split(".")[-1] in targets),
     "only the last part of each name is compared"),
    (learner_count(match=lambda name, targets: any(t in name for t in targets),
                   per_layer=lambda lin, r: r * lin.in_features),
     "two mistakes: a target matched inside a longer name ('W_query' in 'W_query_extra'): compare whole "
     "name parts: name == t or name.endswith('.' + t); and only A"),
    (learner_count(items=named_parameters_as_items), "no layer matched: named_modules() gives the layers' names"),
    (learner_count(items=lambda model: ((n, m) for n, m in model.named_modules() if n.endswith(".weight"))),
     "no layer matched"),
    (by_injecting, "changed the model (injected LoRA, or froze it)"),
    (learner_count(result=float), "returned a float: return an int"),
    (learner_count(result=str), "should return a whole number, got '512'"),
    (learner_count(result=lambda n: n / 3), "should return a whole number"),
])
def test_lora_parameter_count_mistakes_are_named(fn, words):
    result = check_lora_parameter_count(fn)
    assert not result.passed
    assert has(result, words), result.problems


def test_lora_parameter_count_a_tensor_count_is_accepted_as_a_number():
    result = check_lora_parameter_count(learner_count(result=torch.tensor))
    assert result.passed, result.problems


def test_every_way_of_counting_gives_its_own_numbers_on_the_checker_s_cases():
    cases = _count_cases()
    numbers = {(m, p): tuple(_count(model, targets, r, m, p) for _, model, targets, r in cases)
               for m, p in itertools.product(MATCHES, PER_LAYER)}
    assert len(set(numbers.values())) == len(numbers)
    expected = tuple(trainable_parameters(inject_lora(copy.deepcopy(model), targets, r=r))
                     for _, model, targets, r in cases)
    assert numbers["ref", "ref"] == expected


def test_lora_parameter_count_odd_return_values_do_not_crash_the_check():
    for value in (float("nan"), float("inf"), None, [512], torch.ones(2)):
        result = check_lora_parameter_count(lambda model, target_names, r, value=value: value)
        assert has(result, "should return a whole number"), result.problems


def test_lora_linear_a_scaling_of_the_wrong_kind_is_named():
    result = check_lora_linear(start(scaling=lambda alpha, r: [alpha / r]))
    assert has(result, "self.scaling should be the number alpha / r, got list"), result.problems


def test_lora_linear_an_unfrozen_base_is_named_once():
    result = check_lora_linear(start(base="trainable"))
    assert has(result, "the base layer is not frozen") and not has(result, "trains again"), result.problems
