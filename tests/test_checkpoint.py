"""Tests for checkpoints: round trip, safe loading, atomic writes, and clear errors."""

import errno
import re
import stat

import pytest
import torch

from gptcourse import checkpoint as ckpt_module
from gptcourse.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    load_model_state,
    model_from_checkpoint,
    restore_state,
    save_checkpoint,
    tokenizer_from_vocab,
    tokenizer_to_vocab,
)
from gptcourse.config import GPTConfig
from gptcourse.generate import generate
from gptcourse.model import GPTModel
from gptcourse.tokenizers import CharTokenizer
from gptcourse.train import TrainSettings, train

CFG = GPTConfig(vocab_size=6, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
TEXT = "abcdef" * 50
SETTINGS = TrainSettings(max_iters=4, batch_size=2, warmup_iters=1, eval_interval=2, eval_iters=1)


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    tok = CharTokenizer(TEXT)
    model = GPTModel(CFG)
    ids = torch.tensor(tok.encode(TEXT))
    state = train(model, ids, ids, SETTINGS, progress=False)
    path = save_checkpoint(tmp_path / "run" / "ckpt.pt", model, state, settings=SETTINGS,
                           tokenizer=tok, extra={"corpus": "test"})
    return model, tok, state, path


def test_round_trip_gives_identical_samples(trained):
    model, tok, _, path = trained
    loaded, loaded_tok, ckpt = load_model(path)
    assert loaded_tok.chars == tok.chars
    assert not loaded.training
    assert loaded.weights_tied  # tying survives the round trip
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    idx = torch.tensor([tok.encode("abc")])

    def sample(m):
        return generate(m, idx, 10, temperature=1.0, generator=torch.Generator().manual_seed(0))

    assert torch.equal(sample(model), sample(loaded))
    assert ckpt["extra"] == {"corpus": "test"}


def test_file_holds_plain_types_and_everything_to_resume(trained):
    model, _, state, path = trained
    raw = torch.load(path, weights_only=True)  # would fail on any pickled class
    assert raw["config"] == CFG.to_dict()
    assert raw["tokenizer"] == list("abcdef")
    assert raw["step"] == 4
    assert raw["settings"] == SETTINGS.to_dict()
    assert raw["history"]["step"] == [0, 2, 4]
    assert set(raw["rng"]) == {"torch", "cuda", "batch", "eval"}
    assert all(isinstance(v, float) for v in raw["history"]["val"])
    assert "state" in raw["optimizer"] and "param_groups" in raw["optimizer"]


def test_folder_path_finds_ckpt_pt(trained):
    *_, path = trained
    assert load_checkpoint(path.parent)["step"] == 4


def test_restore_state_restores_optimizer_and_generators(trained):
    model, _, state, path = trained
    ckpt = load_checkpoint(path)
    fresh = load_model_state(GPTModel(CFG), ckpt)
    restored = restore_state(ckpt, fresh, SETTINGS)
    assert restored.step == state.step and restored.history == state.history
    assert torch.equal(restored.batch_gen.get_state(), state.batch_gen.get_state())
    exp_avg = [s["exp_avg"] for s in restored.optimizer.state_dict()["state"].values()]
    want = [s["exp_avg"] for s in state.optimizer.state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(exp_avg, want))


def test_model_only_checkpoint_can_be_loaded_but_not_resumed(tmp_path):
    model = GPTModel(CFG)
    path = save_checkpoint(tmp_path / "m.pt", model)
    loaded, tok, ckpt = load_model(path)
    assert tok is None
    with pytest.raises(CheckpointError, match="only a model"):
        restore_state(ckpt, loaded, SETTINGS)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*train one first"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at .*ckpt.pt"):
        load_checkpoint(tmp_path)  # a folder without ckpt.pt


def test_truncated_file_is_reported_as_corrupt(trained, tmp_path):
    *_, path = trained
    data = path.read_bytes()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_checkpoint(broken)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_checkpoint(garbage)


def test_other_pytorch_files_are_rejected(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a gptcourse checkpoint"):
        load_checkpoint(path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "gptcourse-checkpoint", "settings": SETTINGS}, path)  # a class instance
    with pytest.raises(CheckpointError, match="refused to load .*gptcourse.train.TrainSettings.*"
                                              "Nothing from it was run.*not a course checkpoint") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value)  # never advise switching the protection off


def test_flipped_byte_in_the_tensor_data_is_refused(trained):
    model, *_, path = trained
    data = bytearray(path.read_bytes())
    weights = model.tok_emb.weight.detach().numpy().tobytes()
    at = bytes(data).find(weights[:64])
    assert at > 0  # the tensor's bytes are stored as they are
    data[at + 10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt checkpoint .*do not match the checksum"):
        load_checkpoint(path)


def test_checkpoint_without_config_is_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"format": "gptcourse-checkpoint", "version": 1, "model": {}}, path)
    with pytest.raises(CheckpointError, match="incomplete checkpoint .*no 'config' entry"):
        load_checkpoint(path)


def test_config_is_checked_against_the_tensors_before_building(trained, monkeypatch):
    *_, path = trained
    ckpt = load_checkpoint(path)
    ckpt["config"] = {**ckpt["config"], "emb_dim": 65536, "n_heads": 2, "n_layers": 48}  # ~40 GB
    built = []

    def spy(cfg):
        model = GPTModel(cfg)
        built.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(ckpt_module, "GPTModel", spy)
    with pytest.raises(CheckpointError, match=r"config does not fit its own tensors \(tensor "
                                              r"'tok_emb.weight' is \(6, 16\) but the config needs "
                                              r"\(6, 65536\).*damaged"):
        model_from_checkpoint(ckpt)
    assert built == ["meta"]  # shapes only: no memory was allocated for the claimed model


def test_tokenizer_that_does_not_fit_vocab_size_is_refused(trained):
    *_, path = trained
    ckpt = load_checkpoint(path)
    ckpt["tokenizer"] = list("abcdefg")
    with pytest.raises(CheckpointError, match="tokenizer has 7 characters but its model has vocab_size=6"):
        model_from_checkpoint(ckpt)


def test_saving_to_a_folder_names_the_file_to_use(trained, tmp_path):
    model, *_ = trained
    with pytest.raises(ValueError, match=f"path {tmp_path} is a folder: .*{tmp_path / 'ckpt.pt'}"):
        save_checkpoint(tmp_path, model)


def test_checkpoint_is_readable_by_everyone_like_other_files(trained):
    *_, path = trained
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_mismatched_config_names_the_tensor_and_the_fix(trained):
    *_, path = trained
    ckpt = load_checkpoint(path)
    bigger = GPTModel(CFG.replace(emb_dim=32))
    with pytest.raises(CheckpointError, match=r"tok_emb.weight.*\(6, 16\).*\(6, 32\).*emb_dim=16 in "
                                              r"the checkpoint but 32.*GPTModel\(config_of\(ckpt\)\)"):
        load_model_state(bigger, ckpt)
    deeper = GPTModel(CFG.replace(n_layers=2))
    with pytest.raises(CheckpointError, match="no tensor 'trf_blocks.1.*n_layers=1"):
        load_model_state(deeper, ckpt)


def test_failed_save_leaves_the_old_checkpoint_intact(trained, monkeypatch):
    model, tok, state, path = trained
    before = path.read_bytes()

    def crash(obj, handle):
        handle.write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_module.torch, "save", crash)
    with pytest.raises(CheckpointError, match=f"could not save {path}: the disk is full.*"
                                              f"the last good checkpoint {path} is intact"):
        save_checkpoint(path, model, state, settings=SETTINGS, tokenizer=tok)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_tokenizer_vocab_round_trip():
    tok = CharTokenizer("hello")
    assert tokenizer_from_vocab(tokenizer_to_vocab(tok)).chars == tok.chars
    with pytest.raises(TypeError, match="CharTokenizer or the gpt2 tokenizer"):
        tokenizer_to_vocab(object())


def test_torch_zip_error_on_a_full_disk_is_explained(trained, monkeypatch):
    """On a full disk torch raises a RuntimeError from its zip writer, not an OSError."""
    from collections import namedtuple

    model, tok, state, path = trained

    def crash(obj, handle):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1234 vs 1200")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(ckpt_module.torch, "save", crash)
    monkeypatch.setattr("shutil.disk_usage", lambda p: usage(10**9, 10**9, 0))
    with pytest.raises(CheckpointError, match="could not save .*: the disk is full .*the last good "
                                              "checkpoint .* is intact"):
        save_checkpoint(path, model, state, settings=SETTINGS, tokenizer=tok)


def test_permission_error_on_the_first_save_says_so(tmp_path, monkeypatch):
    model = GPTModel(CFG)

    def refuse(obj, handle):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(ckpt_module.torch, "save", refuse)
    with pytest.raises(CheckpointError, match="could not save .*: permission denied .*; no earlier "
                                              "checkpoint was saved"):
        save_checkpoint(tmp_path / "ckpt.pt", model)
    assert list(tmp_path.iterdir()) == []


def test_flipped_byte_in_the_step_is_refused(trained):
    """The checksum covers the whole file: a damaged step used to load, and --resume went on from it."""
    *_, path = trained
    assert load_checkpoint(path)["step"] == 4
    data = path.read_bytes()
    # The pickled key "step" (X, its length, the text), a memo note (q and one byte), then the
    # small int 4 (K 0x04). A flipped bit makes it 5.
    found = re.search(rb"X\x04\x00\x00\x00stepq.K\x04", data, re.DOTALL)
    assert found and len(re.findall(rb"X\x04\x00\x00\x00stepq.K\x04", data, re.DOTALL)) == 1
    at = found.end() - 1
    path.write_bytes(data[:at] + b"\x05" + data[at + 1:])
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint .*its contents \(weights, step, "
                                              r"history, settings or random states\) do not match"):
        load_checkpoint(path)


@pytest.mark.parametrize("edit", [
    lambda c: c.update(step=c["step"] + 1),
    lambda c: c["history"]["val"].__setitem__(0, c["history"]["val"][0] + 1e-9),
    lambda c: c["settings"].update(lr=c["settings"]["lr"] * 2),
    lambda c: c["rng"]["batch"].__setitem__(0, c["rng"]["batch"][0] ^ 1),
    lambda c: c["optimizer"]["param_groups"][0].update(lr=0.5),
    lambda c: c["extra"].update(corpus="other"),
    lambda c: c.update(tokenizer=list("abcdeg")),
    lambda c: c.pop("history"),
    lambda c: c["history"].update(step=tuple(c["history"]["step"])),  # a list became a tuple
], ids=["step", "history", "settings", "rng", "optimizer", "extra", "tokenizer", "missing", "type"])
def test_any_change_outside_the_tensors_is_refused(trained, edit):
    *_, path = trained
    ckpt = load_checkpoint(path)
    edit(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(path)


def test_a_version_2_file_without_a_checksum_is_refused(trained):
    *_, path = trained
    ckpt = load_checkpoint(path)
    assert ckpt["version"] == 2
    del ckpt["sha256"]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="it has no checksum"):
        load_checkpoint(path)


def test_a_version_1_file_still_loads_with_its_tensor_checksum(trained):
    """Checkpoints saved before the checksum covered everything: checked as far as it goes."""
    *_, path = trained
    ckpt = load_checkpoint(path)
    ckpt["version"] = 1
    ckpt["sha256"] = ckpt_module.payload_checksum(ckpt, tensors_only=True)
    torch.save(ckpt, path)
    assert load_checkpoint(path)["step"] == 4
    ckpt["model"]["tok_emb.weight"][0, 0] += 1
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="its tensors do not match the checksum"):
        load_checkpoint(path)


def test_extra_that_is_not_a_dict_is_refused(tmp_path):
    with pytest.raises(TypeError, match="extra must be a dict"):
        save_checkpoint(tmp_path / "ckpt.pt", GPTModel(CFG), extra="tinyshakespeare")
    assert not (tmp_path / "ckpt.pt").exists()


@pytest.mark.parametrize("path", [None, 5])
def test_load_checkpoint_of_something_that_is_not_a_path(path):
    with pytest.raises(TypeError, match="path must be a checkpoint file or its run folder"):
        load_checkpoint(path)
