"""Checks at the edge, trust inside: the loops check their settings once, before the first step.

token_sampler, batch_sampler and lr_schedule check their arguments when they are made and
return a function that trusts them. sample_next, get_batch and lr_at are the one-call versions:
the same results, checked on every call. These tests prove both halves: equal results, and that
a loop of many steps runs each check only once.
"""

import pytest
import torch

import gptcourse.data as data_module
import gptcourse.generate as generate_module
from gptcourse.config import GPTConfig
from gptcourse.data import batch_sampler, get_batch
from gptcourse.generate import generate, sample_next, token_sampler
from gptcourse.kvcache import generate_cached
from gptcourse.model import GPTModel
from gptcourse.optim import lr_at, lr_schedule
from gptcourse.train import TrainSettings, train

CFG = GPTConfig(vocab_size=13, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


def counting(monkeypatch, module, name):
    """Replace module.name by a wrapper that counts its calls; returns the counter."""
    calls = {"n": 0}
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (1.0, None), (0.7, 3), (1.3, 1)])
def test_a_sampler_picks_what_sample_next_picks(temperature, top_k):
    logits = torch.randn(4, 13, generator=torch.Generator().manual_seed(1))
    sample = token_sampler(temperature, top_k, torch.Generator().manual_seed(5), vocab_size=13)
    expected = sample_next(logits, temperature, top_k, torch.Generator().manual_seed(5))
    assert torch.equal(sample(logits), expected)


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": -1.0}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 14}, "top_k"),
    ({"generator": 3}, "generator"),
])
def test_a_sampler_refuses_bad_settings_when_it_is_made(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        token_sampler(**{"vocab_size": 13, **kwargs})


@pytest.mark.parametrize("generate_fn", [generate, generate_cached])
def test_generation_checks_its_sampling_settings_once_not_per_token(monkeypatch, model, generate_fn):
    temperature_checks = counting(monkeypatch, generate_module, "_require_temperature")
    top_k_checks = counting(monkeypatch, generate_module, "_require_top_k")
    ids = torch.tensor([[1, 2, 3]])
    out = generate_fn(model, ids, 12, temperature=0.9, top_k=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 15)  # 12 tokens, some past the context: refills included
    assert temperature_checks["n"] == 1
    assert top_k_checks["n"] == 1


def test_a_batch_sampler_draws_what_get_batch_draws():
    data = torch.arange(100)
    draw = batch_sampler(data, 8, 4, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):  # the same generator, advanced alike
        x, y = draw()
        x_ref, y_ref = get_batch(data, 8, 4, generator=gen)
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_a_batch_sampler_refuses_data_too_short_when_it_is_made():
    with pytest.raises(ValueError, match="too short for block_size=8"):
        batch_sampler(torch.arange(8), 8, 4)


def test_the_schedule_gives_lr_at_for_every_step():
    args = dict(max_lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=100)
    schedule = lr_schedule(**args)
    assert [schedule(step) for step in range(120)] == [lr_at(step, **args) for step in range(120)]


@pytest.mark.parametrize("args, match", [
    (dict(max_lr=0.1, min_lr=1.0, warmup_iters=1, max_iters=10), "min_lr <= max_lr"),
    (dict(max_lr=1.0, min_lr=0.1, warmup_iters=20, max_iters=10), "warmup_iters <= max_iters"),
])
def test_the_schedule_refuses_bad_settings_when_it_is_made(args, match):
    with pytest.raises(ValueError, match=match):
        lr_schedule(**args)


def test_training_checks_its_data_once_not_per_step(monkeypatch, model):
    data_checks = counting(monkeypatch, data_module, "_as_id_tensor")
    ids = torch.randint(0, 13, (400,), generator=torch.Generator().manual_seed(0))
    settings = TrainSettings(max_iters=6, batch_size=2, warmup_iters=1, eval_interval=3, eval_iters=2)
    state = train(model.train(), ids[:300], ids[300:], settings, progress=False)
    assert state.step == 6
    # One check for the training batches, and one per split at each of the 3 estimates (steps
    # 0, 3 and the end): 7, however many steps and batches there are.
    assert data_checks["n"] == 1 + 3 * 2
