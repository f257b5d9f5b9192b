"""GPTConfig: defaults, presets, validation with clear errors, replace() and get_config()."""

import dataclasses

import pytest

from gptcourse.config import PRESETS, GPTConfig, get_config


def test_defaults_are_gpt2_small():
    cfg = GPTConfig()
    assert (cfg.vocab_size, cfg.context_length, cfg.emb_dim, cfg.n_heads, cfg.n_layers) == (50257, 1024, 768, 12, 12)
    assert cfg.drop_rate == 0.1 and cfg.tie_weights and not cfg.qkv_bias
    assert cfg.head_dim == 64
    assert get_config("gpt2-small") == cfg


@pytest.mark.parametrize("name, emb_dim, n_heads, n_layers", [
    ("gpt2-medium", 1024, 16, 24), ("gpt2-large", 1280, 20, 36), ("gpt2-xl", 1600, 25, 48)])
def test_gpt2_presets(name, emb_dim, n_heads, n_layers):
    cfg = get_config(name)
    assert (cfg.emb_dim, cfg.n_heads, cfg.n_layers) == (emb_dim, n_heads, n_layers)
    assert (cfg.vocab_size, cfg.context_length) == (50257, 1024)
    assert cfg.head_dim == 64


def test_cpu_preset_is_small():
    cfg = get_config("cpu-small")
    assert cfg.emb_dim <= 256 and cfg.n_layers <= 8 and cfg.context_length <= 256
    assert set(PRESETS) >= {"gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "cpu-small"}


@pytest.mark.parametrize("field", ["vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"])
@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "8"])
def test_sizes_must_be_positive_ints(field, bad):
    with pytest.raises(ValueError, match=f"{field} must be a positive int"):
        GPTConfig(**{field: bad})


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_drop_rate_range(bad):
    with pytest.raises(ValueError, match=r"drop_rate must be a number in \[0, 1\)"):
        GPTConfig(drop_rate=bad)


def test_drop_rate_type():
    with pytest.raises(TypeError, match="drop_rate must be a number"):
        GPTConfig(drop_rate="0.1")
    assert GPTConfig(drop_rate=0).drop_rate == 0  # an int 0 is fine


@pytest.mark.parametrize("field", ["qkv_bias", "tie_weights", "fast"])
def test_switches_must_be_bool(field):
    with pytest.raises(TypeError, match=f"{field} must be True or False"):
        GPTConfig(**{field: 1})


def test_heads_must_divide_embedding():
    with pytest.raises(ValueError, match="emb_dim=768 is not divisible by n_heads=7"):
        GPTConfig(n_heads=7)


def test_replace_checks_again_and_names_unknown_fields():
    cfg = GPTConfig()
    small = cfg.replace(emb_dim=128, n_heads=4)
    assert small.emb_dim == 128 and cfg.emb_dim == 768  # a copy; the original is unchanged
    with pytest.raises(ValueError, match="not divisible"):
        cfg.replace(n_heads=5)
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['n_embd'\]"):
        cfg.replace(n_embd=128)


def test_config_is_frozen_and_round_trips_through_a_dict():
    cfg = get_config("cpu-small")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.emb_dim = 3
    assert GPTConfig(**cfg.to_dict()) == cfg


def test_get_config_overrides_and_errors():
    assert get_config("gpt2-small", drop_rate=0.0).drop_rate == 0.0
    assert PRESETS["gpt2-small"].drop_rate == 0.1  # presets are not changed by overrides
    with pytest.raises(ValueError, match="unknown preset 'gpt3'; choose one of"):
        get_config("gpt3")


def test_numpy_ints_are_accepted_and_stored_as_python_ints():
    import numpy as np
    cfg = GPTConfig(vocab_size=np.int64(65), n_layers=np.int32(2))
    assert cfg.vocab_size == 65 and type(cfg.vocab_size) is int and type(cfg.n_layers) is int
    assert cfg == GPTConfig(vocab_size=65, n_layers=2)  # so configs compare and save as before
