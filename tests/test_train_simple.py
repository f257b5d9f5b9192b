"""Tests for the loss helpers (gptcourse.loss) and train_simple (gptcourse.train), used from chapter 2 on."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptcourse.bigram import BigramLanguageModel
from gptcourse.data import get_batch
from gptcourse.loss import calc_loss_batch, estimate_loss, logits_of
from gptcourse.train import train_simple


class PlainLogits(nn.Module):
    """A model that returns bare logits (B, T, V), as the GPT of later chapters does."""

    def __init__(self, vocab_size: int, dropout: float = 0.0):
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, idx):
        return self.dropout(self.table(idx))


class Uniform(nn.Module):
    """Equal scores for every token: its loss is exactly ln(vocab_size)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.vocab_size) + 0 * self.unused


def data(vocab_size=8, n=400):
    return torch.randint(vocab_size, (n,))


def test_logits_of_accepts_both_output_styles():
    logits = torch.randn(2, 3, 5)
    assert logits_of(logits) is logits
    assert logits_of((logits, None)) is logits


@pytest.mark.parametrize("model_class", [BigramLanguageModel, PlainLogits])
def test_calc_loss_batch_is_mean_cross_entropy(model_class):
    model = model_class(8)
    x, y = torch.randint(8, (4, 6)), torch.randint(8, (4, 6))
    loss = calc_loss_batch(model, x, y)
    logits = logits_of(model(x))
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 8), y.reshape(-1)))
    assert loss.requires_grad


def test_calc_loss_batch_matches_the_bigram_models_own_loss():
    model = BigramLanguageModel(8)
    x, y = torch.randint(8, (4, 6)), torch.randint(8, (4, 6))
    torch.testing.assert_close(calc_loss_batch(model, x, y), model(x, y)[1])


def test_estimate_loss_of_a_uniform_model_is_ln_vocab():
    result = estimate_loss(Uniform(8), {"train": data(), "val": data()}, block_size=4, batch_size=3,
                           eval_iters=2)
    assert set(result) == {"train", "val"}
    assert result["train"] == pytest.approx(math.log(8))
    assert result["val"] == pytest.approx(math.log(8))
    assert all(isinstance(v, float) for v in result.values())


def test_estimate_loss_averages_eval_iters_batches():
    model, split = BigramLanguageModel(8), data()
    result = estimate_loss(model, {"val": split}, 4, 3, eval_iters=5,
                           generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    losses = [calc_loss_batch(model, *get_batch(split, 4, 3, generator=gen)).item() for _ in range(5)]
    assert result["val"] == pytest.approx(sum(losses) / 5, abs=1e-6)


def test_estimate_loss_uses_eval_mode_and_restores_the_mode():
    model = PlainLogits(8, dropout=0.5)
    splits = {"val": data()}
    a = estimate_loss(model, splits, 4, 3, eval_iters=3, generator=torch.Generator().manual_seed(0))
    b = estimate_loss(model, splits, 4, 3, eval_iters=3, generator=torch.Generator().manual_seed(0))
    assert a == b  # dropout is off, so the same batches give the same loss
    assert model.training
    model.eval()
    estimate_loss(model, splits, 4, 3, eval_iters=1)
    assert not model.training


def test_estimate_loss_runs_without_gradients_in_eval_mode():
    seen = []

    class Spy(PlainLogits):
        def forward(self, idx):
            seen.append((torch.is_grad_enabled(), self.training))
            return super().forward(idx)

    estimate_loss(Spy(8), {"train": data(), "val": data()}, 4, 3, eval_iters=2)
    assert seen == [(False, False)] * 4  # 2 batches for each of 2 splits


def test_estimate_loss_rejects_zero_eval_iters():
    with pytest.raises(ValueError, match="eval_iters must be a positive int"):
        estimate_loss(BigramLanguageModel(8), {"val": data()}, 4, 3, eval_iters=0)


def test_train_simple_history_layout():
    model = BigramLanguageModel(8)
    history = train_simple(model, data(), data(), steps=25, block_size=4, batch_size=3,
                           eval_interval=10, eval_iters=2, progress=False)
    assert set(history) == {"step", "train", "val", "batch_loss"}
    assert history["step"] == [0, 10, 20, 25]
    assert len(history["train"]) == len(history["val"]) == 4
    assert len(history["batch_loss"]) == 25
    assert all(isinstance(v, float) for v in history["batch_loss"])


def test_train_simple_lowers_the_loss():
    train = torch.arange(200) % 5  # 0 1 2 3 4 0 1 ...: each id fully predicts the next
    model = BigramLanguageModel(5)
    history = train_simple(model, train, train, steps=150, block_size=8, batch_size=8, lr=0.1,
                           eval_interval=50, eval_iters=2, progress=False)
    assert history["val"][0] > 1.0
    assert history["val"][-1] < 0.1
    assert history["train"][-1] < history["train"][0]


def test_train_simple_is_repeatable_with_the_same_seeds():
    split = data(n=300)

    def run():
        torch.manual_seed(0)  # the model's initial weights
        return train_simple(BigramLanguageModel(8), split, split, steps=20, block_size=4,
                            batch_size=3, lr=0.05, eval_interval=5, eval_iters=2, seed=4,
                            progress=False)

    assert run() == run()


def test_train_simple_batches_do_not_depend_on_eval_interval():
    # Evaluation draws from its own generator, so evaluating more often trains on the same batches.
    split = data(n=300)
    losses = []
    for eval_interval in (3, 50):
        torch.manual_seed(0)
        h = train_simple(BigramLanguageModel(8), split, split, steps=12, block_size=4, batch_size=3,
                         eval_interval=eval_interval, eval_iters=2, progress=False)
        losses.append(h["batch_loss"])
    assert losses[0] == losses[1]


def test_train_simple_is_chapter_2s_loop_with_plain_adamw_up_to_rounding():
    # The loop written out as chapter 2 writes it, with PyTorch's per-tensor AdamW: train_simple
    # runs the fused kernel, which must take the same steps up to float rounding.
    split = data(n=300)
    settings = dict(steps=30, block_size=4, batch_size=3, lr=0.05, eval_interval=30, eval_iters=2, seed=4)
    torch.manual_seed(0)
    ours = BigramLanguageModel(8)
    torch.manual_seed(0)
    written_out = BigramLanguageModel(8)
    history = train_simple(ours, split, split, progress=False, **settings)
    optimizer = torch.optim.AdamW(written_out.parameters(), lr=settings["lr"], foreach=False)
    batch_gen = torch.Generator().manual_seed(settings["seed"])
    batch_losses = []
    for _ in range(settings["steps"]):
        x, y = get_batch(split, settings["block_size"], settings["batch_size"], generator=batch_gen)
        loss = calc_loss_batch(written_out, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        batch_losses.append(loss.item())
    torch.testing.assert_close(torch.tensor(history["batch_loss"]), torch.tensor(batch_losses))
    torch.testing.assert_close(ours.state_dict(), written_out.state_dict())


def test_train_simple_uses_the_fused_adamw_kernel_on_a_cpu(monkeypatch):
    made = []

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, params, **options):
            made.append(options)
            super().__init__(params, **options)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    train_simple(BigramLanguageModel(8), data(), data(), steps=2, block_size=4, batch_size=3,
                 eval_interval=2, eval_iters=1, progress=False)
    assert made == [{"lr": 1e-3, "fused": True}]


def test_train_simple_refuses_a_model_without_parameters():
    with pytest.raises(ValueError, match="has no parameters to train"):
        train_simple(nn.Identity(), data(), data(), steps=2, block_size=4, batch_size=3, progress=False)


def test_train_simple_works_with_plain_logits_models():
    history = train_simple(PlainLogits(8), data(), data(), steps=5, block_size=4, batch_size=3,
                           eval_interval=5, eval_iters=1, progress=False)
    assert len(history["step"]) == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps must be a positive int"),
        ({"eval_interval": 0}, "eval_interval must be a positive int"),
        ({"lr": 0.0}, "lr must be a positive number"),
    ],
)
def test_train_simple_bad_inputs(kwargs, match):
    args = {"steps": 5, "block_size": 4, "batch_size": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        train_simple(BigramLanguageModel(8), data(), data(), progress=False, **args)
