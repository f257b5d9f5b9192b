"""Checkpoints: one file with everything needed to sample from a model or to continue its training.

The file holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(..., weights_only=True)`, which cannot run code hidden in a file from elsewhere.
It is written to a temporary file first and renamed into place, so a crash mid-save never
leaves a half-written checkpoint behind. A sha256 of everything in it (tensors, step, history,
settings, random states) is stored with it and checked on loading, so a damaged copy is refused
instead of giving a subtly broken model or resuming from the wrong step.

The writer and the reader of the format stay in this one module (a little over 300 lines), so
that every field saved is checked where it is read back.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .atomic import torch_save_atomically
from .config import GPTConfig
from .model import GPTModel
from .run_folder import describe_os_error
from .tokenizers import CharTokenizer, gpt2_tokenizer
from .train import HISTORY_KEYS, TrainSettings, TrainState, new_history, new_state
from .validate import ArgumentTypeError, InputError, require_instance

CHECKSUM_KEY = "sha256"

FORMAT = "gptcourse-checkpoint"
# Version 2: the checksum covers the whole file (step, history, settings, random states), not
# only the tensors. Files of version 1 still load, checked as far as their checksum goes.
VERSION = 2
READABLE_VERSIONS = (1, 2)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


def tokenizer_to_vocab(tokenizer) -> list[str] | str:
    """What a checkpoint stores for a tokenizer: the character list, or "gpt2"."""
    if isinstance(tokenizer, CharTokenizer):
        return list(tokenizer.chars)
    if getattr(tokenizer, "name", None) == "gpt2":
        return "gpt2"
    raise ArgumentTypeError(f"can only save a CharTokenizer or the gpt2 tokenizer, got {type(tokenizer).__name__}")


def tokenizer_from_vocab(vocab: list[str] | str):
    """Rebuild the tokenizer a checkpoint was trained with."""
    if vocab == "gpt2":
        return gpt2_tokenizer()
    try:
        return CharTokenizer.from_vocab(vocab)
    except ValueError as exc:  # InputError, ArgumentTypeError
        raise CheckpointError(f"the checkpoint's tokenizer is damaged ({exc}); use another copy "
                              f"or train again") from None


def save_checkpoint(path: str | Path, model: GPTModel, state: TrainState | None = None, *,
                    settings: TrainSettings | None = None, tokenizer=None,
                    extra: dict | None = None) -> Path:
    """Save the model (and, to resume training, its TrainState and settings) to `path`, atomically."""
    require_instance("model", model, GPTModel)
    if extra is not None and not isinstance(extra, Mapping):
        raise ArgumentTypeError(f"extra must be a dict of notes to store (e.g. {{'corpus': "
                                f"'tinyshakespeare'}}), got {extra!r}")
    path = Path(path)
    if path.is_dir():
        raise InputError(f"path {path} is a folder: pass the checkpoint file's path, "
                         f"e.g. {path / 'ckpt.pt'}")
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
    payload[CHECKSUM_KEY] = payload_checksum(payload)
    try:
        torch_save_atomically(payload, path)
    except (OSError, RuntimeError) as exc:
        # torch reports a full disk as a RuntimeError from its zip writer: look at the space left.
        reason = describe_os_error(exc) if isinstance(exc, OSError) else _guess_reason(path, exc)
        kept = (f"the last good checkpoint {path} is intact" if path.is_file()
                else "no earlier checkpoint was saved")
        raise CheckpointError(f"could not save {path}: {reason}; {kept}") from exc
    return path


def _guess_reason(path: Path, exc: BaseException) -> str:
    import shutil

    try:
        if shutil.disk_usage(path.parent).free < 1 << 20:
            return "the disk is full (no space left on the device)"
    except OSError:
        pass
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


def payload_checksum(payload: dict, tensors_only: bool = False) -> str:
    """The sha256 of everything in a checkpoint (tensors' bytes, numbers, strings), in a fixed order.

    Every value is hashed with its place and its type, so a flipped byte anywhere (a weight, the
    step, the history, a setting, a random state) changes the sum. `tensors_only` gives the
    older sum (format version 1), which covered the tensors alone.
    """
    digest = hashlib.sha256()

    def visit(name: str, value) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
            digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")
        elif isinstance(value, dict):
            keys = sorted((k for k in value if not (name == "" and k == CHECKSUM_KEY)),
                          key=str if tensors_only else lambda k: (type(k).__name__, str(k)))
            if not tensors_only:
                digest.update(f"{name}|dict|{len(keys)}|".encode())
            for key in keys:
                label = key if tensors_only else f"{type(key).__name__}:{key}"
                visit(f"{name}/{label}", value[key])
        elif isinstance(value, (list, tuple)):
            if not tensors_only:
                digest.update(f"{name}|{type(value).__name__}|{len(value)}|".encode())
            for i, item in enumerate(value):
                visit(f"{name}/{i}", item)
        elif not tensors_only:
            # float.hex is exact (repr would be too, but says nothing about -0.0 vs 0.0 at a glance).
            text = value.hex() if isinstance(value, float) else repr(value)
            digest.update(f"{name}|{type(value).__name__}|{text}|".encode())

    visit("", payload)
    return digest.hexdigest()


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file safely (weights_only=True) and check that it is one of ours."""
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"path must be a checkpoint file or its run folder (a str or "
                                f"Path), got {path!r}")
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt.pt"
    elif path.suffix != ".pt" and not path.exists():
        path = path / "ckpt.pt"  # a run folder that does not exist (yet)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train one first "
                              f"(python -m gptcourse train --out {path.parent})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Never repeat torch's advice to turn weights_only off: that would run the file's code.
        blocked = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"a reference to {blocked.group(1)}" if blocked else "Python objects other than tensors"
        raise CheckpointError(
            f"refused to load {path}: it holds {what}, which a gptcourse checkpoint never does, "
            f"and loading it could run code. Nothing from it was run. The file is not a course "
            f"checkpoint: use a checkpoint saved by gptcourse, or train again.") from None
    except Exception as exc:  # truncated zip, bad pickle, foreign objects: all mean the same here
        raise CheckpointError(
            f"corrupt checkpoint {path}: it could not be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). The file is damaged or not a "
            f"gptcourse checkpoint; use another one or train again."
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"corrupt checkpoint {path}: it is a PyTorch file, but not a "
                              f"gptcourse checkpoint (no '{FORMAT}' marker)")
    version = ckpt.get("version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise CheckpointError(f"{path} has checkpoint format version {version!r}, this gptcourse "
                              f"reads versions {' and '.join(map(str, READABLE_VERSIONS))}")
    for key, kind in (("config", dict), ("model", dict)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"incomplete checkpoint {path}: it has no {key!r} entry, so the "
                                  f"model cannot be rebuilt; use a file written by save_checkpoint")
    if version >= 2 and CHECKSUM_KEY not in ckpt:
        raise CheckpointError(f"corrupt checkpoint {path}: it has no checksum, which every "
                              f"checkpoint saved by this gptcourse has (the file is damaged or "
                              f"was edited); use another copy or train again")
    stored = ckpt.get(CHECKSUM_KEY)
    if stored is not None and payload_checksum(ckpt, tensors_only=version == 1) != stored:
        what = ("its tensors do" if version == 1 else
                "its contents (weights, step, history, settings or random states) do")
        raise CheckpointError(f"corrupt checkpoint {path}: {what} not match the checksum "
                              f"stored when it was saved (the copy is damaged); use another copy "
                              f"or train again")
    return ckpt


def config_of(ckpt: dict) -> GPTConfig:
    """The GPTConfig a checkpoint was saved with (a CheckpointError if it has none or a bad one)."""
    raw = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(raw, dict):
        raise CheckpointError("the checkpoint has no 'config' entry, so the model cannot be rebuilt: "
                              "use a file written by save_checkpoint")
    try:
        return GPTConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the checkpoint's config is invalid ({exc}): the file is damaged "
                              f"or was not written by this gptcourse") from None


def check_checkpoint_fits(ckpt: dict, cfg: GPTConfig) -> None:
    """Compare the stored tensors' shapes and the tokenizer with `cfg`, before any memory is used."""
    with torch.device("meta"):  # shapes only: nothing is allocated, whatever the config claims
        needed = {k: tuple(v.shape) for k, v in GPTModel(cfg).state_dict().items()}
    stored = {k: tuple(getattr(v, "shape", ())) for k, v in ckpt["model"].items()}
    wrong = [f"tensor {k!r} is {stored.get(k, 'missing')} but the config needs {shape}"
             for k, shape in needed.items() if stored.get(k) != shape]
    wrong += [f"tensor {k!r} has no place in the model" for k in sorted(stored.keys() - needed.keys())]
    if wrong:
        raise CheckpointError(f"the checkpoint's config does not fit its own tensors ({wrong[0]}"
                              f"{f', and {len(wrong) - 1} more' if len(wrong) > 1 else ''}): the file "
                              f"is damaged or was edited; use another copy or train again")
    vocab = ckpt.get("tokenizer")
    if isinstance(vocab, list) and len(vocab) != cfg.vocab_size:
        raise CheckpointError(f"the checkpoint's tokenizer has {len(vocab)} characters but its model "
                              f"has vocab_size={cfg.vocab_size}: the file is damaged or was pieced "
                              f"together from two runs; save the model with its own tokenizer")
    if vocab == "gpt2" and cfg.vocab_size < 50257:
        raise CheckpointError(f"the checkpoint uses GPT-2's tokenizer (50257 tokens) but its model "
                              f"has vocab_size={cfg.vocab_size}; save the model with its own tokenizer")


def load_model_state(model: GPTModel, ckpt: dict) -> GPTModel:
    """Copy a checkpoint's weights into `model`, with a clear error if the shapes do not match."""
    saved = ckpt.get("config") or {}
    differences = [f"{k}={saved.get(k)!r} in the checkpoint but {v!r} in the model"
                   for k, v in model.cfg.to_dict().items() if saved.get(k) != v]
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
    cfg = config_of(ckpt)
    check_checkpoint_fits(ckpt, cfg)  # before GPTModel(cfg) allocates what the config claims
    model = load_model_state(GPTModel(cfg), ckpt).to(device).eval()
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
