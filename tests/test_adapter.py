"""A LoRA adapter saved alone: identical logits after a round trip, misfits and damage refused."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from gptcourse import adapter as adapter_module
from gptcourse.adapter import (
    AdapterError,
    adapter_bytes,
    base_model_bytes,
    load_adapter,
    save_adapter,
)
from gptcourse.config import GPTConfig
from gptcourse.llama import LlamaConfig, LlamaModel
from gptcourse.lora import inject_lora, lora_layers, merge_lora, trainable_parameters
from gptcourse.model import GPTModel, count_parameters

TINY = LlamaConfig(vocab_size=64, context_length=32, emb_dim=32, n_heads=4, n_kv_heads=2,
                   n_layers=2, hidden_dim=48)


def trained(model: torch.nn.Module, **lora) -> torch.nn.Module:
    """The model with LoRA injected and A, B moved away from their start (as training would)."""
    inject_lora(model, **lora)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.A.weight.normal_()
            layer.B.weight.normal_(0.0, 0.1)
    return model


def logits(model: torch.nn.Module, vocab_size: int) -> torch.Tensor:
    idx = torch.arange(12).remainder(vocab_size).view(1, 12)
    with torch.no_grad():
        return model(idx)


def test_round_trip_gives_identical_logits(tmp_path):
    base = LlamaModel(TINY)
    fresh = copy.deepcopy(base)  # the same base weights, no LoRA
    tuned = trained(base, r=4, alpha=8)
    path = save_adapter(tmp_path / "adapter.pt", tuned, extra={"steps": 10})
    load_adapter(path, fresh)
    assert [n for n, _ in lora_layers(fresh)] == [n for n, _ in lora_layers(tuned)]
    assert torch.equal(logits(fresh, 64), logits(tuned, 64))
    assert trainable_parameters(fresh) == trainable_parameters(tuned)
    assert not any(p.requires_grad for n, p in fresh.named_parameters() if ".base." in n)


def test_round_trip_into_a_model_that_has_lora_already(tmp_path):
    base = GPTModel(GPTConfig(vocab_size=50, context_length=16, emb_dim=16, n_heads=2, n_layers=2,
                              drop_rate=0.0))
    fresh = inject_lora(copy.deepcopy(base), ("W_query", "ff.layers.2"), r=2, alpha=4)
    tuned = trained(base, target_names=("W_query", "ff.layers.2"), r=2, alpha=4)
    load_adapter(save_adapter(tmp_path / "a.pt", tuned), fresh)
    assert torch.equal(logits(fresh, 50), logits(tuned, 50))


def test_sizes_adapter_versus_full_model(tmp_path):
    model = LlamaModel(TINY)
    full = count_parameters(model) * 4  # float32, the tied matrix once
    inject_lora(model, r=4, alpha=8)
    assert adapter_bytes(model) == 4 * trainable_parameters(model)
    assert base_model_bytes(model) == full
    size = save_adapter(tmp_path / "adapter.pt", model).stat().st_size
    assert adapter_bytes(model) < size < adapter_bytes(model) + 20_000  # the tensors and a small header


def test_a_model_of_another_shape_is_refused_and_left_untouched(tmp_path):
    path = save_adapter(tmp_path / "adapter.pt", trained(LlamaModel(TINY), r=4, alpha=8))
    wider = LlamaModel(TINY.replace(emb_dim=48, n_heads=4))
    with pytest.raises(AdapterError, match="another shape.*emb_dim=32 there but 48 here"):
        load_adapter(path, wider)
    assert not any(True for _ in lora_layers(wider))
    with pytest.raises(AdapterError, match="trained for a LlamaModel, not a GPTModel"):
        load_adapter(path, GPTModel(GPTConfig(vocab_size=64, context_length=32, emb_dim=32,
                                              n_heads=4, n_layers=2)))
    other_r = inject_lora(LlamaModel(TINY), r=2, alpha=8)
    with pytest.raises(AdapterError, match="another r/alpha"):
        load_adapter(path, other_r)


def test_shapes_are_checked_even_when_the_config_is_not_stored(tmp_path, monkeypatch):
    tuned = trained(LlamaModel(TINY), r=4, alpha=8)
    path = save_adapter(tmp_path / "adapter.pt", tuned)
    payload = torch.load(path, weights_only=True)
    payload["model_config"] = None  # as for a model without a config
    payload["sha256"] = adapter_module.payload_checksum(payload)
    torch.save(payload, path)
    with pytest.raises(AdapterError, match=r"W_query.A is \(4, 32\) in the file but the layer needs \(4, 48\)"):
        load_adapter(path, LlamaModel(TINY.replace(emb_dim=48, n_heads=4)))


def test_damaged_cut_and_foreign_files_are_refused(tmp_path):
    path = save_adapter(tmp_path / "adapter.pt", trained(LlamaModel(TINY), r=4, alpha=8))
    payload = torch.load(path, weights_only=True)
    payload["adapter"]["trf_blocks.0.att.W_query.B.weight"][0, 0] += 1.0  # a changed weight
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(AdapterError, match="damaged: its contents do not match the checksum"):
        load_adapter(tmp_path / "edited.pt", LlamaModel(TINY))
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterError, match="could not be read as an adapter"):
        load_adapter(tmp_path / "cut.pt", LlamaModel(TINY))
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(AdapterError, match="not a gptcourse LoRA adapter"):
        load_adapter(tmp_path / "other.pt", LlamaModel(TINY))
    # A reference to a function: weights_only=True refuses it instead of importing it.
    torch.save({"format": "gptcourse-lora-adapter", "hook": os.getcwd}, tmp_path / "code.pt")
    with pytest.raises(AdapterError, match=r"could not be read as an adapter \(UnpicklingError\)"):
        load_adapter(tmp_path / "code.pt", LlamaModel(TINY))
    with pytest.raises(AdapterError, match="no adapter file"):
        load_adapter(tmp_path / "missing.pt", LlamaModel(TINY))


def test_save_is_atomic(tmp_path, monkeypatch):
    model = trained(LlamaModel(TINY), r=4, alpha=8)
    path = save_adapter(tmp_path / "adapter.pt", model)
    before = path.read_bytes()

    def broken_save(obj, handle):
        handle.write(b"half a file")
        raise OSError("no space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(AdapterError, match="could not save"):
        save_adapter(path, model)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.pt"]  # no temporary file left


def test_bad_saves_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(tmp_path / "a.pt", LlamaModel(TINY))
    with pytest.raises(ValueError, match="is a folder"):
        save_adapter(tmp_path, inject_lora(LlamaModel(TINY)))
    with pytest.raises(ValueError, match="merged"):
        save_adapter(tmp_path / "a.pt", merge_lora(inject_lora(LlamaModel(TINY))))


def test_smollm2_adapter_round_trip(tmp_path):
    """SmolLM2-135M with LoRA on q and v: the adapter is 1/70 of the model and reloads exactly."""
    smollm2 = pytest.importorskip("gptcourse.smollm2")
    try:
        model, tokenizer = smollm2.load_smollm2()
    except smollm2.ModelUnavailableError as exc:
        pytest.skip(str(exc))
    fresh = copy.deepcopy(model)
    trained(model, r=8, alpha=16)
    cfg = model.cfg
    kv = cfg.n_kv_heads * cfg.head_dim
    assert trainable_parameters(model) == cfg.n_layers * 8 * ((576 + 576) + (576 + kv)) == 460_800
    path = save_adapter(tmp_path / "adapter.pt", model)
    assert base_model_bytes(model) == 134_515_008 * 4
    assert path.stat().st_size < base_model_bytes(model) / 250
    load_adapter(path, fresh)
    idx = torch.tensor([tokenizer.encode("The capital of France is")])
    with torch.no_grad():
        assert torch.equal(fresh(idx), model(idx))
