"""Tests for `plan_run`, the new-or-resume decision of `gptcourse train`, called with plain
arguments (no argparse, no training): what it plans, and what it refuses with which flag to change."""

import dataclasses

import pytest
import torch
from test_cli import CORPUS

from gptcourse.checkpoint import CheckpointError, save_checkpoint
from gptcourse.config import PRESETS
from gptcourse.model import GPTModel
from gptcourse.train import TrainSettings, new_state
from gptcourse.train_plan import RUN_DEFAULTS, TrainPlan, plan_run
from gptcourse.validate import InputError

SMALL = {"n_layers": 1, "emb_dim": 16, "n_heads": 2, "context_length": 16}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "speech.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return str(path)


def saved_run(out, corpus, steps_done=20, max_iters=20) -> TrainPlan:
    """A run folder whose ckpt.pt says `steps_done` of `max_iters` steps are done (nothing trained)."""
    plan = plan_run(out, corpus=corpus, model_changes=SMALL,
                    settings_changes={"max_iters": max_iters, "batch_size": 4})
    model = GPTModel(plan.config)
    state = dataclasses.replace(new_state(model, plan.settings), step=steps_done)
    save_checkpoint(out / "ckpt.pt", model, state, settings=plan.settings, tokenizer=plan.tokenizer,
                    extra=plan.run_info)
    return plan


def test_a_new_run_takes_the_defaults_and_the_changes_given(tmp_path, corpus):
    plan = plan_run(tmp_path / "run", corpus=corpus, model_changes={"n_layers": 1, "drop_rate": 0.2},
                    settings_changes={"lr": 1e-3})
    assert not plan.resuming and plan.checkpoint is None and plan.notes == ()
    assert plan.config == PRESETS["cpu-small"].replace(n_layers=1, drop_rate=0.2,
                                                       vocab_size=len(set(CORPUS)))
    assert plan.settings == TrainSettings(lr=1e-3)
    assert plan.run_info == {**RUN_DEFAULTS, "corpus": corpus}
    assert plan.text == CORPUS and plan.tokenizer.decode(plan.train_ids[:5].tolist()) == CORPUS[:5]
    assert len(plan.train_ids) + len(plan.val_ids) == len(CORPUS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.settings = TrainSettings()  # a plan is decided once


def test_a_short_run_gets_a_short_warm_up_unless_one_is_given(tmp_path, corpus):
    def warmup(**settings):
        return plan_run(tmp_path, corpus=corpus, settings_changes=settings).settings.warmup_iters

    assert warmup(max_iters=20) == 2  # a tenth of the run, not the default 50
    assert warmup(max_iters=20, warmup_iters=5) == 5
    assert warmup(max_iters=500) == TrainSettings().warmup_iters


def test_a_folder_holding_a_run_needs_resume_or_force(tmp_path, corpus):
    saved_run(tmp_path, corpus)
    with pytest.raises(InputError, match="already holds a run: add --resume to continue it, --force"):
        plan_run(tmp_path, corpus=corpus)
    assert not plan_run(tmp_path, corpus=corpus, force=True).resuming


def test_resume_plans_the_saved_run(tmp_path, corpus):
    new = saved_run(tmp_path, corpus, steps_done=10)
    plan = plan_run(tmp_path, resume=True)
    assert plan.resuming and plan.checkpoint["step"] == 10 and plan.notes == ()
    assert (plan.config, plan.settings, plan.run_info) == (new.config, new.settings, new.run_info)
    assert plan.tokenizer.chars == new.tokenizer.chars  # the saved vocabulary, not a new one
    assert torch.equal(plan.val_ids, new.val_ids)


@pytest.mark.parametrize("max_iters, note", [
    (30, "Extending the run from 20 to 30 steps (the learning-rate schedule stretches to the new end)."),
    (15, "Shortening the run from 20 to 15 steps (the learning-rate schedule stretches to the new end)."),
])
def test_resume_can_extend_or_shorten_the_run(tmp_path, corpus, max_iters, note):
    saved_run(tmp_path, corpus, steps_done=10)
    plan = plan_run(tmp_path, resume=True, settings_changes={"max_iters": max_iters})
    assert plan.settings.max_iters == max_iters and plan.notes == (note,)
    assert plan_run(tmp_path, resume=True, settings_changes={"max_iters": 20}).notes == ()


def test_resume_refuses_max_iters_not_above_the_steps_done(tmp_path, corpus):
    saved_run(tmp_path, corpus, steps_done=10)
    with pytest.raises(InputError, match="--max-iters 10 is not more than the 10 steps this run has "
                                         "done: pass a larger --max-iters"):
        plan_run(tmp_path, resume=True, settings_changes={"max_iters": 10})


@pytest.mark.parametrize("changes, flags", [
    ({"corpus": "other.txt"}, "--corpus"),
    ({"tokenizer": "gpt2", "preset": "gpt2-small"}, "--tokenizer, --preset"),
    ({"model_changes": {"drop_rate": 0.1}}, "--drop-rate"),
    ({"settings_changes": {"lr": 0.1, "max_iters": 30}}, "--lr"),  # --max-iters may change
])
def test_resume_refuses_a_changed_run_naming_each_flag(tmp_path, corpus, changes, flags):
    saved_run(tmp_path, corpus)
    with pytest.raises(InputError, match=f"--resume continues the saved run with its own data and "
                                         f"settings; drop {flags} \\(only --max-iters, --device"):
        plan_run(tmp_path, resume=True, **changes)


def test_resume_without_a_run_or_of_a_bare_model_says_why(tmp_path, corpus):
    with pytest.raises(CheckpointError, match="no checkpoint at .*train one first"):
        plan_run(tmp_path, resume=True)
    plan = plan_run(tmp_path, corpus=corpus, model_changes=SMALL)
    save_checkpoint(tmp_path / "ckpt.pt", GPTModel(plan.config), tokenizer=plan.tokenizer)
    with pytest.raises(CheckpointError, match="holds only a model, not a training state"):
        plan_run(tmp_path, resume=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"model_changes": {"emb_dim": 16, "n_heads": 3}}, "divisible"),
    ({"settings_changes": {"max_iters": 10, "warmup_iters": 20}}, "warmup_iters .* must not exceed"),
    ({"model_changes": {"context_length": 100_000}},
     r"--context-length 100000 needs windows of 100001 tokens, but the corpus leaves only \d+"),
    ({"encoding": "klingon"}, "'klingon' is not an encoding Python knows"),
])
def test_a_new_run_refuses_what_cannot_work_as_one_input_error(tmp_path, corpus, kwargs, message):
    with pytest.raises(InputError, match=message):
        plan_run(tmp_path, corpus=corpus, **kwargs)
