"""The default decode path (gptcourse.fastdecode) against the explicit reference: the same logits
to float rounding, the same greedy tokens, any Linear layer it does not copy called as it is."""

import pytest
import torch
import torch.nn as nn
from test_kvcache import CFG
from test_kvcache import make_model as random_model  # the same random model as the KV-cache tests

import gptcourse.kvcache
from gptcourse.fastdecode import (
    COPIES_PAY_BACK_FROM,
    DecodePlan,
    input_major,
    reads_faster_transposed,
    side_by_side,
)
from gptcourse.generate import generate, generate_text, generate_text_simple
from gptcourse.kvcache import KVCache, forward_with_cache, generate_cached, generate_text_cached
from gptcourse.model import GPTModel
from gptcourse.tokenizers import CharTokenizer


def make_model(dtype=torch.float32, **changes) -> GPTModel:
    """test_kvcache's small random model, in float32: the dtype the fast path runs in."""
    return random_model(dtype, **changes)


class ShiftedLinear(nn.Linear):
    """A Linear layer of another kind (as a LoRA layer is): its output is not x @ W.T + b."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 0.5


# float32 takes the copied, input-major products; float64 the model's own weights.
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 4e-5), (torch.float64, 1e-12)],
                         ids=["float32", "float64"])
@pytest.mark.parametrize("changes", [{}, {"fast": True},
                                     {"qkv_bias": False, "tie_weights": False}],
                         ids=["explicit", "fused-config", "no-bias-untied"])
@pytest.mark.parametrize("copy", [True, False], ids=["copies", "in-place"])
def test_default_step_gives_the_reference_logits(dtype, atol, changes, copy):
    model = make_model(dtype, **changes)
    idx = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(1))
    plan = DecodePlan(model, copy=copy)
    fast, reference = KVCache(CFG.n_layers, capacity=16), KVCache(CFG.n_layers)
    with torch.no_grad():
        full = model(idx)
        for a, b in [(0, 5), (5, 6), (6, 13), (13, 14), (14, 16)]:
            expected = forward_with_cache(model, idx[:, a:b], reference)  # the model's own modules
            actual = plan.forward(idx[:, a:b], fast, last_only=False)
            torch.testing.assert_close(actual, expected, atol=atol, rtol=0)
            torch.testing.assert_close(actual, full[:, a:b], atol=atol, rtol=0)
        for a, b in zip(fast.keys + fast.values, reference.keys + reference.values):
            torch.testing.assert_close(a, b, atol=atol, rtol=0)  # the same cache contents
    last = plan.forward(idx[:, :3], KVCache(CFG.n_layers))
    assert last.shape == (2, 1, 97)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("context_size", [None, 5])
@pytest.mark.parametrize("n", [COPIES_PAY_BACK_FROM - 2, COPIES_PAY_BACK_FROM + 8],
                         ids=["in-place", "copies"])
def test_default_generation_gives_the_reference_greedy_tokens(dtype, context_size, n):
    """Within and past the context length (where the cache is rebuilt), batch of 2."""
    model = make_model(dtype)
    prompt = torch.randint(0, 97, (2, 3), generator=torch.Generator().manual_seed(6))
    expected = generate_text_simple(model, prompt, n, context_size=context_size)
    assert len(set(expected[:, 3:].flatten().tolist())) > 4  # a varied continuation
    reference = generate_cached(model, prompt, n, context_size=context_size, fast=False)
    default = generate_cached(model, prompt, n, context_size=context_size)
    assert torch.equal(reference, expected) and torch.equal(default, expected)


def test_default_sampling_gives_the_tokens_of_generate_with_the_same_seed():
    model = make_model(torch.float64)
    prompt = torch.randint(0, 97, (3, 2), generator=torch.Generator().manual_seed(3))
    kwargs = dict(temperature=0.8, top_k=20)
    expected = generate(model, prompt, 30, generator=torch.Generator().manual_seed(1), **kwargs)
    actual = generate_cached(model, prompt, 30, generator=torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(actual, expected)


def test_generate_text_cached_writes_generate_texts_text():
    model = make_model(torch.float64)
    tokenizer = CharTokenizer("".join(map(chr, range(32, 32 + 97))))  # 97 characters, "a" among them
    for kwargs in (dict(), dict(temperature=1.0, top_k=5, seed=4)):
        expected = generate_text(model, tokenizer, "abc", 20, **kwargs)
        assert generate_text_cached(model, tokenizer, "abc", 20, **kwargs) == expected
    with pytest.raises(ValueError, match="seed must be None or an int >= 0"):
        generate_text_cached(model, tokenizer, "abc", 2, seed=-1)


def test_other_linear_layers_are_called_as_they_are():
    """A layer that is not a plain nn.Linear (LoRA, int8) keeps its own forward in the plan."""
    model = make_model()
    block = model.trf_blocks[1]
    for parent, name in [(block.att, "W_value"), (block.att, "out_proj"), (block.ff.layers, "0")]:
        old = getattr(parent, name)
        new = ShiftedLinear(old.in_features, old.out_features)
        new.load_state_dict(old.state_dict())
        setattr(parent, name, new)
    prompt = torch.randint(0, 97, (1, 4), generator=torch.Generator().manual_seed(5))
    reference = generate_cached(model, prompt, 10, fast=False)
    assert not torch.equal(reference, generate_cached(make_model(), prompt, 10))  # the shift matters
    assert torch.equal(generate_cached(model, prompt, 10), reference)


def test_side_by_side_equals_the_layers_outputs_concatenated():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8)
    groups = [
        [nn.Linear(8, 8), nn.Linear(8, 8, bias=False), nn.Linear(8, 16)],  # copied: one product
        [nn.Linear(8, 8, bias=False)],                                      # copied, no bias
        [nn.Linear(8, 4)],                                                  # long rows: as it is
        [nn.Linear(8, 8).double()],                                         # float64: as it is
        [nn.Linear(8, 8), ShiftedLinear(8, 8)],                             # another kind: called
    ]
    for group in groups:
        before = [layer.weight.clone() for layer in group]
        inputs = x.to(group[0].weight.dtype)
        with torch.no_grad():
            expected = torch.cat([layer(inputs) for layer in group], dim=-1)
            torch.testing.assert_close(side_by_side(group)(inputs), expected)
            torch.testing.assert_close(side_by_side(group, copy=False)(inputs), expected)
        assert all(torch.equal(layer.weight, w) for layer, w in zip(group, before))  # copies only


def test_reads_faster_transposed_picks_short_rows_of_plain_float32_cpu_linears():
    assert reads_faster_transposed(nn.Linear(768, 2304))       # query, key, value; expansion
    assert reads_faster_transposed(nn.Linear(768, 768))        # the attention's output
    assert reads_faster_transposed(nn.Linear(768, 50257, bias=False))  # the output head
    assert not reads_faster_transposed(nn.Linear(3072, 768))   # the projection: long rows
    assert not reads_faster_transposed(nn.Linear(8, 8).double())
    assert not reads_faster_transposed(nn.Linear(8, 8).to(torch.bfloat16))
    assert not reads_faster_transposed(ShiftedLinear(8, 8))
    assert not reads_faster_transposed(nn.LayerNorm(8))


def test_dropout_stays_off_and_training_mode_comes_back():
    """generate_cached runs in eval mode (the plan has no dropout calls) and restores the mode."""
    model = make_model(torch.float64, drop_rate=0.5).train()
    prompt = torch.randint(0, 97, (1, 3), generator=torch.Generator().manual_seed(6))
    expected = generate_text_simple(model.eval(), prompt, 12)
    model.train()
    assert torch.equal(generate_cached(model, prompt, 12), expected)
    assert model.training


def test_input_major_stores_the_matrices_side_by_side_transposed():
    weights = [torch.randn(130, 7), torch.randn(5, 7)]  # more rows than one block of 64
    out = input_major(weights)
    assert out.is_contiguous() and torch.equal(out, torch.cat(weights).t())


def test_generations_copy_weights_only_from_the_length_where_copies_pay_back(monkeypatch):
    made = []
    monkeypatch.setattr(gptcourse.kvcache, "DecodePlan",
                        lambda model, copy: made.append(copy) or DecodePlan(model, copy))
    model, prompt = make_model(context_length=64), torch.zeros(1, 2, dtype=torch.long)
    for n in (COPIES_PAY_BACK_FROM - 1, COPIES_PAY_BACK_FROM):
        generate_cached(model, prompt, n)
    generate_cached(model, prompt, COPIES_PAY_BACK_FROM, fast=False)  # no plan at all
    assert made == [False, True]
