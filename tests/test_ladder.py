"""Tests for gptcourse.ladder: the rungs of chapters 3 and 4, their models and the shared recipe."""

import dataclasses

import pytest
import torch

from gptcourse.attention import MultiHeadAttention
from gptcourse.ladder import (
    LADDER_RECIPE,
    RUNGS,
    LadderModel,
    LadderRecipe,
    Rung,
    RungResult,
    train_rung,
)
from gptcourse.layers import GELU, FeedForward, LayerNorm

V, T, C = 65, 8, 32


def test_rungs_keep_their_names_and_order():
    assert list(RUNGS) == ["bigram + positions", "one head", "multi-head", "multi-head + feed-forward",
                           "blocks + shortcuts", "blocks + shortcuts + LayerNorm"]


def test_chapter3_rungs_are_unchanged():
    # Chapter 3's stored results depend on these exact models.
    assert RUNGS["bigram + positions"] == Rung()
    assert RUNGS["one head"] == Rung(attention="head")
    assert RUNGS["multi-head"] == Rung(attention="multi")


@pytest.mark.parametrize("name, n_params", [
    ("bigram + positions", 4481), ("one head", 8609), ("multi-head", 8609),
    ("multi-head + feed-forward", 16961), ("blocks + shortcuts", 29441),
    ("blocks + shortcuts + LayerNorm", 29761),
])
def test_rung_sizes(name, n_params):
    model = LadderModel(V, T, C, RUNGS[name])
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_each_rung_adds_what_its_name_says():
    modules = {name: list(LadderModel(V, T, C, rung).modules()) for name, rung in RUNGS.items()}
    n_ff = {name: sum(isinstance(m, FeedForward) for m in mods) for name, mods in modules.items()}
    n_ln = {name: sum(isinstance(m, LayerNorm) for m in mods) for name, mods in modules.items()}
    assert n_ff["multi-head"] == 0 and n_ff["multi-head + feed-forward"] == 1
    assert n_ff["blocks + shortcuts"] == RUNGS["blocks + shortcuts"].n_blocks >= 2
    assert n_ln["blocks + shortcuts"] == 0
    # Two per block (before attention, before the feed-forward) and one before the output head.
    assert n_ln["blocks + shortcuts + LayerNorm"] == 2 * RUNGS["blocks + shortcuts"].n_blocks + 1
    assert RUNGS["blocks + shortcuts"].shortcuts and not RUNGS["multi-head + feed-forward"].shortcuts


@pytest.mark.parametrize("name", list(RUNGS))
def test_every_rung_gives_causal_logits(name):
    torch.manual_seed(0)
    model = LadderModel(V, T, C, RUNGS[name]).eval()
    idx = torch.randint(V, (3, T))
    logits = model(idx)
    assert logits.shape == (3, T, V)
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % V
    torch.testing.assert_close(model(changed)[:, :-1], logits[:, :-1])


@pytest.mark.parametrize("name", ["multi-head + feed-forward", "blocks + shortcuts + LayerNorm"])
def test_fused_kernels_compute_the_same_as_the_written_out_modules(name):
    rung = RUNGS[name]
    assert rung.fast  # the later rungs train through the fast paths
    fused = LadderModel(V, T, C, rung)
    plain = LadderModel(V, T, C, dataclasses.replace(rung, fast=False))
    plain.load_state_dict(fused.state_dict())
    idx, targets = torch.randint(V, (4, T)), torch.randint(V, (4, T))
    torch.testing.assert_close(fused(idx), plain(idx), atol=1e-5, rtol=1e-4)
    # Training follows the gradient: it must be the same too.
    for model in (fused, plain):
        torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), targets.flatten()).backward()
    for (param_name, p), q in zip(fused.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=param_name)


def test_fast_switches_every_attention_layer_norm_and_gelu():
    rung = RUNGS["blocks + shortcuts + LayerNorm"]
    for fast in (True, False):
        model = LadderModel(V, T, C, dataclasses.replace(rung, fast=fast))
        flags = [m.fast for m in model.modules() if isinstance(m, (MultiHeadAttention, LayerNorm, GELU))]
        assert len(flags) == 3 * rung.n_blocks + 1 + rung.n_blocks  # attentions, LayerNorms, GELUs
        assert set(flags) == {fast}


def test_shortcuts_add_the_input_back():
    torch.manual_seed(0)
    with_sc = LadderModel(V, T, C, RUNGS["blocks + shortcuts"]).eval()
    block = with_sc.blocks[0]
    x = torch.randn(2, T, C)
    h = x + block.att(x)
    torch.testing.assert_close(block(x), h + block.ff(h))


def test_rung_and_model_errors():
    with pytest.raises(ValueError, match="attention must be 'none', 'head' or 'multi'"):
        Rung(attention="multihead")
    with pytest.raises(ValueError, match="n_blocks must be a positive int"):
        Rung(n_blocks=0)
    with pytest.raises(TypeError, match="fast must be True or False"):
        Rung(fast="yes")
    model = LadderModel(V, T, C, RUNGS["multi-head"])
    with pytest.raises(ValueError, match="input has 9 tokens but block_size is 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_recipe_is_the_chapter3_recipe():
    assert LADDER_RECIPE == LadderRecipe(block_size=8, emb_dim=32, batch_size=32, steps=1500,
                                         lr=3e-3, eval_iters=50, init_seed=1337, batch_seed=0)


def test_train_rung_is_repeatable_and_learns():
    gen = torch.Generator().manual_seed(0)
    # A repeating pattern with a little noise: easy to learn, so the loss must fall.
    ids = torch.arange(2000) % 7
    ids[torch.randint(2000, (100,), generator=gen)] = 3
    recipe = LadderRecipe(steps=40, lr=1e-2, eval_iters=4, emb_dim=16, block_size=6, batch_size=8)
    runs = [train_rung("blocks + shortcuts + LayerNorm", ids[:1600], ids[1600:], 7, recipe=recipe,
                       progress=False) for _ in range(2)]
    first, second = runs
    assert isinstance(first, RungResult) and first.name == "blocks + shortcuts + LayerNorm"
    assert first.history["step"] == [0, 40]
    assert first.val_loss == first.history["val"][-1] == second.val_loss
    assert first.val_loss < first.history["val"][0] - 0.3
    assert first.seconds > 0


def test_train_rung_names_unknown_rungs():
    ids = torch.zeros(100, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown rung 'two heads'"):
        train_rung("two heads", ids, ids, 5)
    with pytest.raises(TypeError, match="rung must be a Rung"):
        train_rung("mine", ids, ids, 5, rung={"n_blocks": 3})


def test_train_rung_takes_your_own_rung():
    ids = torch.arange(300) % 5
    recipe = LadderRecipe(steps=2, eval_iters=1, emb_dim=8, block_size=4, batch_size=2)
    rung = dataclasses.replace(RUNGS["blocks + shortcuts + LayerNorm"], n_blocks=3)
    result = train_rung("3 blocks", ids[:200], ids[200:], 5, recipe=recipe, progress=False, rung=rung)
    assert result.name == "3 blocks" and len(result.model.blocks) == 3


def test_one_head_and_four_heads_differ_only_in_the_split():
    # Chapter 3's "four heads beat one head" must compare the same parts: the same parameter
    # names and shapes (output projection included), only the number of heads differs.
    one = LadderModel(V, T, C, RUNGS["one head"])
    four = LadderModel(V, T, C, RUNGS["multi-head"])
    shapes = {name: tuple(p.shape) for name, p in one.named_parameters()}
    assert shapes == {name: tuple(p.shape) for name, p in four.named_parameters()}
    assert "blocks.0.att.out_proj.weight" in shapes
    assert (one.blocks[0].att.num_heads, four.blocks[0].att.num_heads) == (1, 4)
