"""The chapter 9 checkers: the reference passes, a stub fails, and every mistake a checker claims
to diagnose is planted and named."""

import pytest
import torch
import torch.nn as nn

from gptcourse.chat import DEFAULT_SYSTEM, IM_END, IM_START, render_chat
from gptcourse.checks import PASS_MARK, Check
from gptcourse.checks.llm import (
    check_chat_template,
    check_expand_kv,
    check_rmsnorm,
    check_rope,
    expand_kv,
)
from gptcourse.llama import RMSNorm
from gptcourse.rope import apply_rope, rope_angles

NOT_WRITTEN = "not written yet"


def has(result: Check, words: str) -> bool:
    return any(words in problem for problem in result.problems)


def all_passed(result: Check, capsys) -> bool:
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return result.passed and bool(lines) and all(line.startswith(PASS_MARK) for line in lines)


def stub(*args, **kwargs):
    raise NotImplementedError


# --- RMSNorm -------------------------------------------------------------------------------------
class PlantedRMSNorm(nn.Module):
    """An RMSNorm with switches for the usual mistakes."""

    def __init__(self, emb_dim, eps=1e-5, *, center=False, eps_outside=False, power=2, absolute=False,
                 reduce="mean", dim=-1, no_eps=False, use_weight=True, bias=False, name="weight",
                 fixed_eps=None, plain=False, start=1.0, no_keepdim=False):
        super().__init__()
        self.eps = eps if fixed_eps is None else fixed_eps
        self.cfg = dict(center=center, eps_outside=eps_outside, power=power, absolute=absolute,
                        reduce=reduce, dim=dim, no_eps=no_eps, use_weight=use_weight, name=name,
                        no_keepdim=no_keepdim)
        weight = torch.full((emb_dim,), start)
        setattr(self, name, weight if plain else nn.Parameter(weight))
        if bias:
            self.bias = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        c = self.cfg
        keep = not c["no_keepdim"]
        top = x - x.mean(dim=-1, keepdim=True) if c["center"] == "numerator" else x
        if c["center"] == "all":
            x = top = x - x.mean(dim=-1, keepdim=True)
        v = x.abs() if c["absolute"] else x
        v = v.pow(c["power"])
        if c["reduce"] == "mean":
            ms = v.mean(dim=c["dim"], keepdim=keep)
        elif c["reduce"] == "sum":
            ms = v.sum(dim=c["dim"], keepdim=keep)
        else:  # "n-1"
            ms = v.sum(dim=c["dim"], keepdim=keep) / (x.size(-1) - 1)
        eps = 0.0 if c["no_eps"] else self.eps
        norm = top / (ms.sqrt() + eps) if c["eps_outside"] else top / torch.sqrt(ms + eps)
        out = norm * getattr(self, c["name"]) if c["use_weight"] else norm
        return out + self.bias if hasattr(self, "bias") else out


def planted(**kwargs):
    return lambda emb_dim, eps=1e-5: PlantedRMSNorm(emb_dim, eps, **kwargs)


class LayerNormCopy(nn.Module):
    """Chapter 4's LayerNorm handed in as RMSNorm."""

    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.scale, self.shift = nn.Parameter(torch.ones(emb_dim)), nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - x.mean(dim=-1, keepdim=True)) / torch.sqrt(var + self.eps) + self.shift


class VarInRoot(RMSNorm):
    def forward(self, x):
        return x * torch.rsqrt(x.var(dim=-1, keepdim=True, unbiased=False) + self.eps) * self.weight


class MultipliedByRoot(RMSNorm):
    def forward(self, x):
        return x * torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class MeanOfX(RMSNorm):
    def forward(self, x):
        return x * torch.rsqrt(x.mean(dim=-1, keepdim=True) + self.eps) * self.weight


class NoRoot(RMSNorm):
    def forward(self, x):
        return x / (x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class WeightAdded(RMSNorm):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) + self.weight


class WeightFirst(RMSNorm):
    def forward(self, x):
        x = x * self.weight
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


class TorchDefaultEps(RMSNorm):
    def forward(self, x):
        return nn.functional.rms_norm(x, (x.size(-1),), self.weight)


class WrittenDifferently(nn.Module):
    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(emb_dim))

    def forward(self, x):
        rms = torch.sqrt((x * x).sum(-1, keepdim=True) / x.shape[-1] + self.eps)
        return self.weight * (x / rms)


class NotAModule:
    def __init__(self, emb_dim, eps=1e-5):
        self.weight = torch.ones(emb_dim)


def test_rmsnorm_reference_passes_every_line(capsys):
    assert all_passed(check_rmsnorm(RMSNorm), capsys)


def test_rmsnorm_planted_correct_version_and_other_spellings_pass():
    for cls in (planted(), WrittenDifferently,
                lambda emb_dim, eps=1e-5: nn.RMSNorm(emb_dim, eps=eps)):
        result = check_rmsnorm(cls)
        assert result.passed, result.problems


def test_rmsnorm_stub_fails():
    class Stub(nn.Module):
        def __init__(self, emb_dim, eps=1e-5):
            raise NotImplementedError

    class StubForward(RMSNorm):
        def forward(self, x):
            raise NotImplementedError

    for cls in (Stub, StubForward):
        result = check_rmsnorm(cls)
        assert not result.passed and has(result, NOT_WRITTEN), result.problems


@pytest.mark.parametrize("cls, words", [
    (LayerNormCopy, "this is LayerNorm: it subtracts the mean"),
    (LayerNormCopy, "the scale is called `scale`: name it `weight`"),
    (LayerNormCopy, "RMSNorm has no shift or bias: remove `shift`"),
    (planted(center="all"), "this is LayerNorm: it subtracts the mean"),
    (planted(center="numerator"), "the mean is subtracted from x"),
    (VarInRoot, "x.var() subtracts the mean"),
    (planted(eps_outside=True), "eps is added outside the square root"),
    (planted(power=1, absolute=True), "x is not squared"),
    (planted(power=1, absolute=True), "not of mean |x|"),
    (MeanOfX, "not of mean x"),
    (NoRoot, "there is no square root"),
    (MultipliedByRoot, "multiplied by the root mean square instead of divided"),
    (planted(reduce="sum"), "the squares are summed, not averaged"),
    (planted(reduce="n-1"), "divided by n - 1"),
    (planted(dim=-2), "wrong dimension (the tokens, dim=-2)"),
    (planted(dim=0), "the batch dimension (dim=0)"),
    (planted(dim=(0, 1, 2)), "the whole tensor"),
    (planted(no_eps=True), "a row of zeros gives 0 / 0 = NaN"),
    (planted(fixed_eps=1e-6), "eps is 1e-06, not the eps given to __init__"),
    (TorchDefaultEps, "torch.finfo(float32).eps"),
    (planted(use_weight=False), "the weight is never used in forward"),
    (WeightAdded, "the weight is added, not multiplied"),
    (WeightFirst, "the weight is applied before normalising"),
    (planted(bias=True), "RMSNorm has no shift or bias: remove `bias`"),
    (planted(name="gain"), "the scale is called `gain`: name it `weight`"),
    (planted(plain=True), "plain tensor"),
    (planted(start=0.0), "should start as ones"),
    (planted(no_keepdim=True), "keepdim=True"),
    (NotAModule, "make it a module"),
    (lambda emb_dim, eps=1e-5: nn.Identity(), "no `weight`: RMSNorm has a trainable scale"),
])
def test_rmsnorm_mistakes_are_named(cls, words):
    result = check_rmsnorm(cls)
    assert not result.passed
    assert has(result, words), result.problems


def test_rmsnorm_a_weight_not_starting_as_ones_is_the_only_finding():
    result = check_rmsnorm(planted(start=0.0))
    assert len(result.problems) == 1 and has(result, "should start as ones"), result.problems


def test_rmsnorm_ignoring_the_given_eps_is_named():
    result = check_rmsnorm(lambda emb_dim, eps=1e-5: RMSNorm(emb_dim))
    assert has(result, "eps given to __init__ is not used"), result.problems
    assert has(check_rmsnorm(lambda emb_dim: RMSNorm(emb_dim)), "keep the signature RMSNorm(emb_dim, eps=1e-5)")


def test_rmsnorm_nan_for_a_zero_row_is_named_even_with_another_mistake():
    result = check_rmsnorm(planted(no_eps=True, reduce="sum"))
    assert has(result, "holds NaN"), result.problems


def test_rmsnorm_check_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    check_rmsnorm(RMSNorm)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))


# --- RoPE ----------------------------------------------------------------------------------------
def planted_angles(exponent="2i/d", layout="cat", start=0, swap=False, fixed_base=None):
    """A learner's rope_angles with one mistake switched on by a keyword."""
    def rope_angles_(head_dim, n_positions, base=10_000.0):
        base = fixed_base or base
        pairs = torch.arange(0, head_dim, 2).float()
        freqs = {"2i/d": 1.0 / base ** (pairs / head_dim),
                 "i/d": 1.0 / base ** (torch.arange(head_dim // 2).float() / head_dim),
                 "+": base ** (pairs / head_dim),
                 "per number": 1.0 / base ** (torch.arange(head_dim).float() / head_dim)}[exponent]
        angles = torch.arange(start, start + n_positions).float()[:, None] * freqs[None, :]
        if layout == "cat":
            angles = torch.cat([angles, angles], dim=-1)
        elif layout == "interleave":
            angles = torch.stack([angles, angles], dim=-1).flatten(-2)
        elif layout == "stack":
            angles = torch.stack([angles, angles], dim=-1)
        elif layout == "transposed":
            angles = torch.cat([angles, angles], dim=-1).T
        return (angles.sin(), angles.cos()) if swap else (angles.cos(), angles.sin())
    return rope_angles_


def rotate_pairs(x):
    return torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)


def planted_apply(turn="half", sign=1.0, swap=False, sin_term=True):
    """A learner's apply_rope with one mistake switched on by a keyword."""
    def apply_rope_(x, cos, sin):
        half = x.size(-1) // 2
        if turn == "half":
            rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        elif turn == "wrong half":  # the minus on the first half: a turn the other way
            rotated = torch.cat([x[..., half:], -x[..., :half]], dim=-1)
        elif turn == "no minus":
            rotated = torch.cat([x[..., half:], x[..., :half]], dim=-1)
        elif turn == "pairs":
            rotated = rotate_pairs(x)
        else:
            rotated = x
        c, s = (sin, cos) if swap else (cos, sin)
        return x * c + sign * rotated * s if sin_term else x * c
    return apply_rope_


def test_rope_reference_passes_every_line(capsys):
    assert all_passed(check_rope(rope_angles, apply_rope), capsys)


def test_rope_planted_correct_versions_pass():
    result = check_rope(planted_angles(), planted_apply())
    assert result.passed, result.problems


def test_rope_stubs_fail_and_each_is_named():
    def rope_angles(head_dim, n_positions, base=10_000.0):
        raise NotImplementedError

    def apply_rope(x, cos, sin):
        raise NotImplementedError

    result = check_rope(rope_angles, apply_rope)
    assert not result.passed
    assert [p.split(":")[0].split("(")[0] for p in result.problems] == ["rope_angles", "apply_rope"]
    assert all(NOT_WRITTEN in p for p in result.problems)
    # one written, the other not: the written one is still checked
    from gptcourse.rope import apply_rope as reference_apply
    result = check_rope(rope_angles, reference_apply)
    assert has(result, NOT_WRITTEN) and len(result.problems) == 1
    assert any("turns each pair" in message for ok, message in result.findings if ok)


@pytest.mark.parametrize("angles, words", [
    (planted_angles(exponent="i/d"), "the exponent is i / head_dim: it is 2i / head_dim"),
    (planted_angles(exponent="+"), "the frequencies grow instead of shrinking"),
    (planted_angles(exponent="per number", layout="none"), "one frequency per number"),
    (planted_angles(exponent="per number"), "one frequency per number, then doubled"),
    (planted_angles(layout="none"), "the angles are not repeated for the second half"),
    (planted_angles(layout="stack"), "torch.stack made a new last dimension"),
    (planted_angles(layout="interleave"), "the angles are interleaved"),
    (planted_angles(layout="transposed"), "rows and columns are swapped"),
    (planted_angles(swap=True), "cos and sin are swapped: return angles.cos(), angles.sin()"),
    (planted_angles(start=1), "the positions start at 1"),
    (planted_angles(fixed_base=10_000.0), "ignores its base"),
    (lambda *args: torch.stack(rope_angles(*args)), "should return two tensors, cos and sin"),
])
def test_rope_angle_mistakes_are_named(angles, words):
    result = check_rope(angles, apply_rope)
    assert not result.passed
    assert has(result, words), result.problems


@pytest.mark.parametrize("apply, words", [
    (planted_apply(turn="wrong half"), "the rotation goes the wrong way"),
    (planted_apply(sign=-1.0), "the rotation goes the wrong way"),
    (planted_apply(turn="no minus"), "rotate_half has lost its minus sign"),
    (planted_apply(turn="pairs"), "pairs neighbouring numbers (2i, 2i+1)"),
    (planted_apply(turn="none"), "rotate_half is missing"),
    (planted_apply(swap=True), "cos and sin are swapped: apply_rope is x * cos"),
    (planted_apply(sin_term=False), "the sin term is missing"),
    (lambda x, cos, sin: apply_rope(x, cos, sin)[..., :4], "apply_rope(x, cos, sin) has the wrong shape"),
])
def test_rope_apply_mistakes_are_named(apply, words):
    result = check_rope(rope_angles, apply)
    assert not result.passed
    assert has(result, words), result.problems


def test_rope_cos_that_does_not_broadcast_is_explained():
    def apply_half_cos(x, cos, sin):
        return x * cos[..., : x.size(-1) // 2 + 1] + x

    result = check_rope(rope_angles, apply_half_cos)
    assert has(result, "cos and sin must broadcast against x"), result.problems


def test_rope_properties_fail_where_the_turn_is_not_a_rotation():
    lengths, relative = "changes the vectors' lengths", "changes when both tokens move"
    no_minus = check_rope(rope_angles, planted_apply(turn="no minus"))
    assert has(no_minus, lengths) and has(no_minus, relative), no_minus.problems
    # interleaved angles with rotate-half: each pair's two numbers turn by different angles
    mixed = check_rope(planted_angles(layout="interleave"), apply_rope)
    assert has(mixed, "with your angles, apply_rope changes the vectors' lengths"), mixed.problems
    assert has(mixed, "with your angles, the score q_m . k_n changes"), mixed.problems


def test_rope_interleaved_convention_throughout_keeps_the_properties_but_is_named():
    result = check_rope(planted_angles(layout="interleave"), planted_apply(turn="pairs"))
    assert has(result, "the angles are interleaved") and has(result, "pairs neighbouring numbers")
    passed = [message for ok, message in result.findings if ok]
    assert any("keeps its length" in m for m in passed) and any("depends only on m - n" in m for m in passed)


def test_rope_wrong_way_still_relative_and_positions_from_1_still_relative():
    for angles, apply in [(rope_angles, planted_apply(sign=-1.0)), (planted_angles(start=1), apply_rope)]:
        result = check_rope(angles, apply)
        passed = [message for ok, message in result.findings if ok]
        assert not result.passed and any("depends only on m - n" in m for m in passed)


def test_rope_properties_use_the_reference_angles_when_the_learners_are_unusable():
    result = check_rope(planted_angles(layout="none"), apply_rope)
    assert any("with the reference angles" in message for ok, message in result.findings if ok)


# --- expand_kv -------------------------------------------------------------------------------------
def tiled(kv, n_heads):
    return kv.repeat(1, n_heads // kv.size(1), 1, 1)


def tiled_by_expand(kv, n_heads):
    B, n_kv, T, hd = kv.shape
    return kv[:, None].expand(B, n_heads // n_kv, n_kv, T, hd).reshape(B, n_heads, T, hd)


def grouped_by_expand(kv, n_heads):
    B, n_kv, T, hd = kv.shape
    return kv[:, :, None].expand(B, n_kv, n_heads // n_kv, T, hd).reshape(B, n_heads, T, hd)


def by_index(kv, n_heads):
    group = n_heads // kv.size(1)
    return kv[:, [h // group for h in range(n_heads)]]


def index_by_n_kv(kv, n_heads):
    return kv[:, [h // kv.size(1) for h in range(n_heads)]]


def repeated_on(dim):
    return lambda kv, n_heads: kv.repeat_interleave(n_heads // kv.size(1), dim=dim)


def mixed_positions(kv, n_heads):
    return kv.repeat_interleave(n_heads // kv.size(1), dim=2).reshape(kv.size(0), n_heads, kv.size(2), -1)


def reversed_groups(kv, n_heads):
    return kv.flip(1).repeat_interleave(n_heads // kv.size(1), dim=1)


def test_expand_kv_reference_passes_every_line(capsys):
    assert all_passed(check_expand_kv(expand_kv), capsys)


def test_expand_kv_other_correct_versions_pass():
    for fn in (grouped_by_expand, by_index, lambda kv, n: torch.repeat_interleave(kv, n // kv.shape[1], 1)):
        result = check_expand_kv(fn)
        assert result.passed, result.problems


def test_expand_kv_stub_fails():
    def expand_kv(kv, n_heads):
        raise NotImplementedError

    result = check_expand_kv(expand_kv)
    assert not result.passed and has(result, NOT_WRITTEN)
    assert result.problems[0].startswith("expand_kv(")


def test_reference_expand_kv_refuses_bad_input():
    with pytest.raises(ValueError, match="not a multiple"):
        expand_kv(torch.zeros(1, 3, 2, 4), 4)
    with pytest.raises(ValueError, match="n_kv_heads, T, head_dim"):
        expand_kv(torch.zeros(3, 2, 4), 6)


@pytest.mark.parametrize("fn, words", [
    (tiled, "the heads are tiled (.repeat"),
    (tiled_by_expand, "query head h reads kv head h % n_kv_heads"),
    (repeated_on(2), "the repeat runs along dimension 2"),
    (repeated_on(0), "the repeat runs along dimension 0"),
    (repeated_on(-1), "the repeat runs along dimension 3"),
    (lambda kv, n_heads: kv.repeat_interleave(kv.size(1), dim=1), "repeated n_kv_heads = 3 times"),
    (lambda kv, n_heads: kv.repeat_interleave(n_heads, dim=1), "repeated n_heads = 12 times"),
    (lambda kv, n_heads: kv.repeat_interleave(kv.size(1) // n_heads, dim=1), "the group size is 0"),
    (lambda kv, n_heads: kv, "the keys come back unexpanded"),
    (index_by_n_kv, "not h // n_kv_heads"),
    (lambda kv, n_heads: kv.repeat_interleave(n_heads / kv.size(1), dim=1), "integer division"),
    (mixed_positions, "not whole copies of key/value heads"),
    (lambda kv, n: kv[:, :, None].expand(-1, -1, n // kv.size(1), -1, -1), "still a dimension of its own: reshape"),
    (lambda kv, n: kv[:, None].expand(-1, n // kv.size(1), -1, -1, -1), "and before the kv heads"),
    (reversed_groups, "query heads read kv heads [2, 2, 2, 2, 1"),
])
def test_expand_kv_mistakes_are_named(fn, words):
    result = check_expand_kv(fn)
    assert not result.passed
    assert has(result, words), result.problems


# --- the chat template -----------------------------------------------------------------------------
def planted_render(system="default", end_nl="\n", role_nl="\n", role=str, prompt_role=None, prompt="asked",
                   prompt_nl="\n", start=IM_START, end=IM_END, strip=False, order=None,
                   default_gen=True, mutate=False, system_text=DEFAULT_SYSTEM, as_list=False):
    """A learner's render_chat with one mistake switched on by a keyword."""
    def render_chat_(messages, add_generation_prompt=default_gen):
        given = bool(messages) and messages[0]["role"] == "system"
        system_message = {"role": "system", "content": system_text}
        if mutate and not given:
            messages.insert(0, system_message)
            msgs = messages
        elif system == "always" or system == "default" and not given:
            msgs = [system_message, *messages]
        else:
            msgs = list(messages)
        if order is not None:
            msgs = order(msgs)
        parts = [f"{start}{role(m['role'])}{role_nl}{m['content'].strip() if strip else m['content']}{end}{end_nl}"
                 for m in msgs]
        if prompt == "always" or prompt == "asked" and add_generation_prompt:
            parts.append(f"{start}{(prompt_role or role)('assistant')}{prompt_nl}")
        return parts if as_list else "".join(parts)
    return render_chat_


def test_chat_template_reference_passes_every_line(capsys):
    assert all_passed(check_chat_template(render_chat), capsys)


def test_chat_template_planted_correct_version_passes():
    result = check_chat_template(planted_render())
    assert result.passed, result.problems


def test_chat_template_stub_fails():
    def render_chat(messages, add_generation_prompt=True):
        raise NotImplementedError

    result = check_chat_template(render_chat)
    assert not result.passed and has(result, NOT_WRITTEN)
    assert result.problems[0].startswith("render_chat(messages")


@pytest.mark.parametrize("kwargs, words", [
    (dict(system="never"), "there is no default system message"),
    (dict(system="always"), "a default system message is added although"),
    (dict(end_nl=""), "the newline after <|im_end|> is missing"),
    (dict(role_nl=""), "the newline between the role and the content is missing"),
    (dict(role_nl="", prompt_nl=""), "the newline between the role and the content is missing"),
    (dict(role=str.capitalize), "the role is capitalised"),
    (dict(role=str.capitalize, prompt_role=str), "the role is capitalised"),
    (dict(role=str.upper), "the letter case differs"),
    (dict(prompt="never"), "the generation prompt is missing"),
    (dict(prompt="always"), "the generation prompt is added although add_generation_prompt=False"),
    (dict(prompt_nl=""), "the generation prompt lacks its newline"),
    (dict(start="<im_start>"), "the marker <|im_start|> is missing or misspelled"),
    (dict(end="<|im_end>"), "the marker <|im_end|> is missing or misspelled"),
    (dict(end=IM_END + IM_END), "the marker <|im_end|> comes too often"),
    (dict(start="<|im_start|"), "write the special markers exactly"),
    (dict(order=lambda msgs: msgs[::-1]), "the messages are in reverse order"),
    (dict(order=lambda msgs: msgs[1:] + msgs[:1]), "the messages are in the wrong order"),
    (dict(strip=True), "the contents are stripped"),
    (dict(default_gen=False), "add_generation_prompt should default to True"),
    (dict(mutate=True), "changed the list it was given"),
    (dict(system_text="You are a helpful assistant."), "the default system message is not SmolLM2's"),
    (dict(as_list=True), "should return one string"),
])
def test_chat_template_mistakes_are_named(kwargs, words):
    result = check_chat_template(planted_render(**kwargs))
    assert not result.passed
    assert has(result, words), result.problems


def test_chat_template_renamed_keyword_is_named():
    def render_chat_renamed(messages, add_prompt=True):
        return render_chat(messages, add_prompt)

    result = check_chat_template(render_chat_renamed)
    assert has(result, "keep the signature render_chat(messages, add_generation_prompt=True)"), result.problems


@pytest.mark.parametrize("kwargs, shown", [
    (dict(end_nl=""), "(at character 97: got 'Face<|im_end|><|im_start|>us', expected "
                      "'Face<|im_end|>\\n<|im_start|>u')"),
    (dict(start="<im_start>"), "(at character 1: got '<im_start>syste', expected '<|im_start|>sys')"),
    (dict(prompt_nl=""), "got 'art|>assistant', expected 'art|>assistant\\n')"),
])
def test_chat_template_findings_show_the_first_difference(kwargs, shown):
    result = check_chat_template(planted_render(**kwargs))
    assert result.problems[0].endswith(shown), result.problems


def test_chat_template_a_mistake_is_explained_once():
    result = check_chat_template(planted_render(end_nl=""))
    assert len(result.problems) == 3 and sum("newline after <|im_end|>" in p for p in result.problems) == 1
    assert all("the same mistake (at character 46" in p for p in result.problems[1:]), result.problems


# --- every named mistake is told apart from the others on the checkers' inputs ---------------------
def test_every_named_mistake_gives_its_own_output():
    from gptcourse.checks import close
    from gptcourse.checks.llm import (
        ANGLE_MISTAKES,
        CONVERSATION,
        ONE_QUESTION,
        TEMPLATE_MISTAKES,
        _angles,
        _apply_mistakes,
        _render,
        _rms_input,
        _rmsnorm_mistakes,
    )

    def distinct(values):
        values = [v() if callable(v) else v for v in values]
        return all(not close(a, b, atol=1e-4) for i, a in enumerate(values) for b in values[i + 1:])

    x = _rms_input()
    assert distinct(_rmsnorm_mistakes(x).values())
    assert distinct([_angles(8, 5, 10_000.0, **kw) for kw in ANGLE_MISTAKES.values()])
    xr = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(0))
    assert distinct(_apply_mistakes(xr, *rope_angles(8, 5, 10_000.0)).values())
    for messages, gen in [(ONE_QUESTION, True), (CONVERSATION, True), (CONVERSATION, False)]:
        want = render_chat(messages, gen)
        # a mistake that cannot show in this case gives the right text; the others all differ
        texts = {_render(messages, gen, **ways[0]) for ways in TEMPLATE_MISTAKES.values()} - {want}
        shown = [m for m, ways in TEMPLATE_MISTAKES.items() if _render(messages, gen, **ways[0]) != want]
        assert len(texts) == len(shown)
