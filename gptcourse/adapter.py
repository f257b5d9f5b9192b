"""A LoRA adapter saved alone: only A and B of every LoRA layer, a few megabytes beside the model.

The file also holds what is needed to check that it fits a model (its class, config, layer names,
r and alpha). Same safety as checkpoints: written atomically, a sha256 of everything in it, and
read with torch.load(weights_only=True), which cannot run code hidden in a file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .atomic import torch_save_atomically
from .checkpoint import CHECKSUM_KEY, payload_checksum
from .lora import LoRALinear, inject_lora, lora_layers
from .validate import InputError, require_instance

ADAPTER_FORMAT = "gptcourse-lora-adapter"
ADAPTER_VERSION = 1


class AdapterError(RuntimeError):
    """An adapter file is missing or damaged, or does not fit the model it is loaded into."""


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights alone: {"<layer>.A.weight": ..., "<layer>.B.weight": ...}."""
    return {f"{name}.{part}.weight": getattr(layer, part).weight.detach().cpu()
            for name, layer in lora_layers(model) for part in ("A", "B")}


def adapter_bytes(model: nn.Module) -> int:
    """Bytes of the LoRA weights (what save_adapter stores, without the file's small overhead)."""
    return sum(t.numel() * t.element_size() for t in adapter_state_dict(model).values())


def base_model_bytes(model: nn.Module) -> int:
    """Bytes of every weight of the model except LoRA's (a tied matrix counted once)."""
    lora = {id(p) for _, layer in lora_layers(model) for p in (layer.A.weight, layer.B.weight)}
    return sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in lora)


def _settings(model: nn.Module) -> dict:
    layers = list(lora_layers(model))
    if not layers:
        raise InputError("the model has no LoRA layers: inject_lora(model) first")
    kinds = {(layer.r, layer.alpha, layer.dropout_p) for _, layer in layers}
    if len(kinds) > 1:
        raise InputError(f"the LoRA layers have different r, alpha or dropout {sorted(kinds)}: an "
                         f"adapter file stores one setting for all (make them with one inject_lora)")
    r, alpha, dropout = kinds.pop()
    config = getattr(model, "cfg", None)
    return {"r": r, "alpha": alpha, "dropout": dropout, "layers": [name for name, _ in layers],
            "model_class": type(model).__name__,
            "model_config": config.to_dict() if hasattr(config, "to_dict") else None}


def save_adapter(path: str | Path, model: nn.Module, extra: dict | None = None) -> Path:
    """Save the model's LoRA weights alone to `path`, atomically (temp file + rename)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"path {path} is a folder: pass the adapter file's path, e.g. {path / 'adapter.pt'}")
    if any(layer.merged for _, layer in lora_layers(model)):
        raise InputError("the model's LoRA layers are merged: unmerge_lora(model) before saving")
    payload = {"format": ADAPTER_FORMAT, "version": ADAPTER_VERSION, **_settings(model),
               "adapter": adapter_state_dict(model), "extra": dict(extra or {})}
    payload[CHECKSUM_KEY] = payload_checksum(payload)
    try:
        torch_save_atomically(payload, path)
    except (OSError, RuntimeError) as exc:
        raise AdapterError(f"could not save {path}: {type(exc).__name__}: {exc}") from exc
    return path


def read_adapter(path: str | Path) -> dict:
    """The contents of an adapter file, read safely and checked against its stored sha256."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"no adapter file at {path}: save one with save_adapter(path, model)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a cut file, foreign pickled objects: nothing from it was run
        raise AdapterError(f"{path} could not be read as an adapter ({type(exc).__name__}): it is "
                           f"damaged or not a gptcourse adapter; save it again") from None
    if not isinstance(payload, dict) or payload.get("format") != ADAPTER_FORMAT:
        raise AdapterError(f"{path} is not a gptcourse LoRA adapter (no '{ADAPTER_FORMAT}' marker)")
    if payload.get("version") != ADAPTER_VERSION:
        raise AdapterError(f"{path} has adapter format version {payload.get('version')!r}; this "
                           f"gptcourse reads version {ADAPTER_VERSION}")
    kinds = {"r": int, "alpha": float, "dropout": float, "layers": list, "adapter": dict, "model_class": str}
    if any(not isinstance(payload.get(k), kind) for k, kind in kinds.items()):
        raise AdapterError(f"{path} is incomplete: it lacks one of {sorted(kinds)}; save it again")
    if payload.get(CHECKSUM_KEY) != payload_checksum(payload):
        raise AdapterError(f"{path} is damaged: its contents do not match the checksum stored "
                           f"when it was saved; use another copy or train again")
    return payload


def load_adapter(path: str | Path, model: nn.Module) -> nn.Module:
    """Put a saved adapter into `model` (injecting its LoRA layers first if it has none)."""
    require_instance("model", model, nn.Module)
    saved = read_adapter(path)
    own_class = type(model).__name__
    if saved["model_class"] != own_class:
        raise AdapterError(f"{path} was trained for a {saved['model_class']}, not a {own_class}")
    config = getattr(model, "cfg", None)
    if saved["model_config"] is not None and hasattr(config, "to_dict"):
        wrong = [f"{k}={v!r} there but {config.to_dict().get(k)!r} here"
                 for k, v in saved["model_config"].items() if config.to_dict().get(k) != v]
        if wrong:
            raise AdapterError(f"{path} was trained on a model of another shape ({'; '.join(wrong[:3])}): "
                               f"load it into the model it was trained on")
    if any(layer.merged for _, layer in lora_layers(model)):
        raise AdapterError("the model's LoRA layers are merged: unmerge_lora(model) first")
    _check_fits(path, saved, model)
    if not any(True for _ in lora_layers(model)):
        inject_lora(model, saved["layers"], saved["r"], saved["alpha"], saved["dropout"])
    with torch.no_grad():
        for name, layer in lora_layers(model):
            for part in ("A", "B"):
                weight = getattr(layer, part).weight
                weight.copy_(saved["adapter"][f"{name}.{part}.weight"].to(weight.device, weight.dtype))
    return model


def _check_fits(path: Path, saved: dict, model: nn.Module) -> None:
    """Every saved A and B has the shape the model's layer of that name needs (before any change)."""
    own = dict(lora_layers(model))
    if own and (sorted(own) != sorted(saved["layers"])
                or any((layer.r, layer.alpha) != (saved["r"], saved["alpha"]) for layer in own.values())):
        raise AdapterError(f"{path} holds LoRA for other layers or another r/alpha than the model's "
                           f"LoRA layers: load it into a model without LoRA (it injects its own)")
    for name in saved["layers"]:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise AdapterError(f"{path} has LoRA for layer {name!r}, which this model does not have: "
                               f"load it into the model it was trained on") from None
        linear = layer.base if isinstance(layer, LoRALinear) else layer
        if not isinstance(linear, nn.Linear):
            raise AdapterError(f"{path} has LoRA for {name!r}, which is a {type(linear).__name__} here")
        needed = {"A": (saved["r"], linear.in_features), "B": (linear.out_features, saved["r"])}
        for part, shape in needed.items():
            tensor = saved["adapter"].get(f"{name}.{part}.weight")
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
                got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else "missing"
                raise AdapterError(f"{path} does not fit this model: {name}.{part} is {got} in the "
                                   f"file but the layer needs {shape}; load it into the model it "
                                   f"was trained on")
    if len(saved["adapter"]) != 2 * len(saved["layers"]):
        raise AdapterError(f"{path} holds tensors for layers it does not list: the file was edited")
