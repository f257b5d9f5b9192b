"""Checkpoints: one file with everything needed to sample from a model or to continue its training.

The file holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(..., weights_only=True)`, which cannot run code hidden in a file from elsewhere.
It is written to a temporary file first and renamed into place, so a crash mid-save never
leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .config import GPTConfig
from .model import GPTModel
from .tokenizers import CharTokenizer, gpt2_tokenizer
from .train import HISTORY_KEYS, TrainSettings, TrainState, new_history, new_state
from .validate import require_instance

FORMAT = "gptcourse-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


def tokenizer_to_vocab(tokenizer) -> list[str] | str:
    """What a checkpoint stores for a tokenizer: the character list, or "gpt2"."""
    if isinstance(tokenizer, CharTokenizer):
        return list(tokenizer.chars)
    if getattr(tokenizer, "name", None) == "gpt2":
        return "gpt2"
    raise TypeError(f"can only save a CharTokenizer or the gpt2 tokenizer, got {type(tokenizer).__name__}")


def tokenizer_from_vocab(vocab: list[str] | str):
    """Rebuild the tokenizer a checkpoint was trained with."""
    return gpt2_tokenizer() if vocab == "gpt2" else CharTokenizer.from_vocab(vocab)


def save_checkpoint(path: str | Path, model: GPTModel, state: TrainState | None = None, *,
                    settings: TrainSettings | None = None, tokenizer=None,
                    extra: dict | None = None) -> Path:
    """Save the model (and, to resume training, its TrainState and settings) to `path`, atomically."""
    require_instance("model", model, GPTModel)
    path = Path(path)
    payload: dict = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "tokenizer": tokenizer_to_vocab(tokenizer) if tokenizer is not None else None,
        "settings": settings.to_dict() if settings is not None else None,
        "extra": dict(extra or {}),
    }
    if state is not None:
        payload.update({
            "step": state.step,
            "optimizer": state.optimizer.state_dict(),
            "history": {k: [(int if k == "step" else float)(v) for v in state.history.get(k, [])]
                        for k in HISTORY_KEYS},
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "batch": state.batch_gen.get_state(),
                "eval": state.eval_gen.get_state(),
            },
        })
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename makes it visible
        os.replace(tmp_name, path)     # atomic: readers see the old file or the new one
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file safely (weights_only=True) and check that it is one of ours."""
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt.pt"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train one first "
                              f"(python -m gptcourse train --out {path.parent})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, foreign objects: all mean the same here
        raise CheckpointError(
            f"corrupt checkpoint {path}: it could not be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). The file is damaged or not a "
            f"gptcourse checkpoint; use another one or train again."
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"corrupt checkpoint {path}: it is a PyTorch file, but not a "
                              f"gptcourse checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {ckpt.get('version')}, "
                              f"this gptcourse reads version {VERSION}")
    return ckpt


def config_of(ckpt: dict) -> GPTConfig:
    return GPTConfig(**ckpt["config"])


def load_model_state(model: GPTModel, ckpt: dict) -> GPTModel:
    """Copy a checkpoint's weights into `model`, with a clear error if the shapes do not match."""
    saved = ckpt["config"]
    current = model.cfg.to_dict()
    differences = [f"{k}={saved.get(k)!r} in the checkpoint but {v!r} in the model"
                   for k, v in current.items() if saved.get(k) != v]
    state = ckpt["model"]
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise CheckpointError(f"config does not match: the checkpoint has no tensor {name!r} "
                                  f"({'; '.join(differences) or 'same config'}). Build the model "
                                  f"with GPTModel(config_of(ckpt)) or use load_model(path).")
        if state[name].shape != tensor.shape:
            raise CheckpointError(
                f"config does not match: tensor {name!r} has shape {tuple(state[name].shape)} in "
                f"the checkpoint but {tuple(tensor.shape)} in the model "
                f"({'; '.join(differences) or 'same config'}). Build the model with "
                f"GPTModel(config_of(ckpt)) or use load_model(path).")
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise CheckpointError(f"config does not match: the checkpoint has tensors the model lacks: "
                              f"{unexpected[:3]} ({'; '.join(differences) or 'same config'})")
    model.load_state_dict(state)
    return model


def model_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu") -> tuple[GPTModel, object]:
    """Build the saved model (in eval mode) and its tokenizer (None if none was saved)."""
    model = load_model_state(GPTModel(config_of(ckpt)), ckpt).to(device).eval()
    tokenizer = tokenizer_from_vocab(ckpt["tokenizer"]) if ckpt.get("tokenizer") is not None else None
    return model, tokenizer


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPTModel, object, dict]:
    """The trained model (in eval mode), its tokenizer and the raw checkpoint dict."""
    ckpt = load_checkpoint(path)
    return (*model_from_checkpoint(ckpt, device), ckpt)


def restore_state(ckpt: dict, model: GPTModel, settings: TrainSettings) -> TrainState:
    """Rebuild the TrainState of a checkpoint (load the weights and move the model first).

    Restores the optimizer, the step, the history and every random number generator, so the
    run continues exactly as if it had never stopped.
    """
    if "optimizer" not in ckpt:
        raise CheckpointError("this checkpoint holds only a model, not a training state: "
                              "it can be sampled from, but not resumed")
    state = new_state(model, settings)
    saved = dict(ckpt["optimizer"])
    # The fused kernel is a property of this machine, not of the run (a run saved on a GPU may
    # resume on a CPU): keep this machine's choice, before loading moves the state to the device.
    saved["param_groups"] = [
        {**group, **{k: own.get(k) for k in ("fused", "foreach")}}
        for group, own in zip(saved["param_groups"], state.optimizer.param_groups)
    ]
    try:
        state.optimizer.load_state_dict(saved)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"the optimizer state does not fit this model ({exc}); resume with "
                              f"the same config the checkpoint was trained with") from exc
    state.step = int(ckpt["step"])
    state.history = new_history()
    state.history.update({k: list(v) for k, v in ckpt["history"].items()})
    rng = ckpt["rng"]
    state.batch_gen.set_state(rng["batch"])
    state.eval_gen.set_state(rng["eval"])
    torch.set_rng_state(rng["torch"])  # dropout masks
    if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state
