"""OpenAI's GPT-2 weights in our GPTModel: map a Hugging Face checkpoint tensor by tensor.

A Hugging Face GPT-2 checkpoint (`model.safetensors`, or a `transformers` `GPT2LMHeadModel`'s
state dict) names its tensors `wte.weight`, `h.3.attn.c_attn.weight`, ... Three differences
from our model need care: its `Conv1D` layers store weights as (in, out) where `nn.Linear`
wants (out, in); query, key and value sit in one fused `c_attn` matrix; the head is tied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import GPTConfig, get_config
from .download import DATA_DIR_ENV, DownloadError, data_dir, download, verify
from .model import GPTModel
from .safetensors_file import read_safetensors_header
from .validate import require_instance

# Causal-mask buffers that some checkpoints (the Hub's among them) store next to the weights: skipped.
_MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")


def gpt2_block_to_ours(hf: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map one block's tensors (names without the `h.{i}.` prefix) to a TransformerBlock's names."""
    # Conv1D computes x @ W with W of shape (in, out); nn.Linear computes x @ W.T, so transpose.
    # The fused (C, 3C) c_attn holds the query, key and value outputs side by side, in that order.
    q_w, k_w, v_w = hf["attn.c_attn.weight"].T.chunk(3, dim=0)  # (3C, C) -> 3 x (C, C)
    q_b, k_b, v_b = hf["attn.c_attn.bias"].chunk(3)              # (3C,) -> 3 x (C,)
    return {
        "norm1.scale": hf["ln_1.weight"], "norm1.shift": hf["ln_1.bias"],
        "att.W_query.weight": q_w, "att.W_query.bias": q_b,
        "att.W_key.weight": k_w, "att.W_key.bias": k_b,
        "att.W_value.weight": v_w, "att.W_value.bias": v_b,
        "att.out_proj.weight": hf["attn.c_proj.weight"].T, "att.out_proj.bias": hf["attn.c_proj.bias"],
        "norm2.scale": hf["ln_2.weight"], "norm2.shift": hf["ln_2.bias"],
        "ff.layers.0.weight": hf["mlp.c_fc.weight"].T, "ff.layers.0.bias": hf["mlp.c_fc.bias"],
        "ff.layers.2.weight": hf["mlp.c_proj.weight"].T, "ff.layers.2.bias": hf["mlp.c_proj.bias"],
    }


def expected_gpt2_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a GPT-2 checkpoint for `cfg` holds (Conv1D weights as (in, out))."""
    C, V = cfg.emb_dim, cfg.vocab_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (cfg.context_length, C),
              "ln_f.weight": (C,), "ln_f.bias": (C,)}
    block = {"ln_1.weight": (C,), "ln_1.bias": (C,), "attn.c_attn.weight": (C, 3 * C),
             "attn.c_attn.bias": (3 * C,), "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
             "ln_2.weight": (C,), "ln_2.bias": (C,), "mlp.c_fc.weight": (C, 4 * C),
             "mlp.c_fc.bias": (4 * C,), "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,)}
    for i in range(cfg.n_layers):
        shapes.update({f"h.{i}.{name}": shape for name, shape in block.items()})
    return shapes


def strip_prefix(state_dict: Mapping[str, object]) -> dict[str, object]:
    """Drop the `transformer.` prefix that GPT2LMHeadModel puts before every name but the head."""
    return {name.removeprefix("transformer."): value for name, value in state_dict.items()}


def validate_gpt2_shapes(shapes: Mapping[str, tuple[int, ...]], cfg: GPTConfig) -> None:
    """Raise ValueError naming the first missing, unexpected or misshapen tensor."""
    expected = expected_gpt2_shapes(cfg)
    shapes = strip_prefix(shapes)
    names = {n for n in shapes if not _MASK_BUFFER.fullmatch(n)} - {"lm_head.weight"}
    missing = [n for n in expected if n not in names]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"the checkpoint has no tensor {missing[0]!r}{more}: it is incomplete, or "
                         f"not a GPT-2 checkpoint in Hugging Face format")
    unexpected = sorted(names - expected.keys())
    if unexpected:
        raise ValueError(f"unexpected tensor {unexpected[0]!r} in the checkpoint: GPTModel has no "
                         f"place for it. A checkpoint of another architecture, or with more layers "
                         f"than n_layers={cfg.n_layers}?")
    if "lm_head.weight" in shapes:
        expected["lm_head.weight"] = expected["wte.weight"]
    for name, want in expected.items():
        if tuple(shapes[name]) != want:
            raise ValueError(f"tensor {name!r} has shape {tuple(shapes[name])}, but this config "
                             f"(emb_dim={cfg.emb_dim}, vocab_size={cfg.vocab_size}, context_length="
                             f"{cfg.context_length}) needs {want}: the checkpoint is for another "
                             f"model size; build the config for its size")


def gpt2_state_dict_to_ours(state_dict: Mapping[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Check a Hugging Face GPT-2 state dict against `cfg` and rename it for GPTModel.load_state_dict."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    sd = strip_prefix(state_dict)
    for name, value in sd.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"tensor {name!r} is a {type(value).__name__}, not a torch.Tensor")
    validate_gpt2_shapes({name: tuple(t.shape) for name, t in sd.items()}, cfg)
    for name, value in sd.items():
        if _MASK_BUFFER.fullmatch(name):
            continue
        if not value.is_floating_point():
            raise TypeError(f"tensor {name!r} has dtype {value.dtype}, but GPT-2's weights are "
                            f"floating point: this is not a GPT-2 checkpoint (or it was converted wrongly)")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"tensor {name!r} holds NaN or infinite values: the checkpoint is "
                             f"damaged; download it again")
    ours = {"tok_emb.weight": sd["wte.weight"], "pos_emb.weight": sd["wpe.weight"],
            "final_norm.scale": sd["ln_f.weight"], "final_norm.shift": sd["ln_f.bias"]}
    for i in range(cfg.n_layers):
        prefix = f"h.{i}."
        block = {n.removeprefix(prefix): t for n, t in sd.items() if n.startswith(prefix)}
        ours.update({f"trf_blocks.{i}.{n}": t for n, t in gpt2_block_to_ours(block).items()})
    head = sd.get("lm_head.weight")
    if cfg.tie_weights:
        # GPT-2 ties its head to wte; a checkpoint with a different head does not fit a tied model.
        if head is not None and not torch.equal(head, sd["wte.weight"]):
            raise ValueError("tensor 'lm_head.weight' differs from 'wte.weight': this checkpoint has "
                             "an untied output head; build the model with tie_weights=False")
        ours["out_head.weight"] = sd["wte.weight"]
    else:
        ours["out_head.weight"] = sd["wte.weight"] if head is None else head
    return ours


@torch.no_grad()
def load_gpt2_weights(model: GPTModel, state_dict: Mapping[str, torch.Tensor]) -> GPTModel:
    """Copy a Hugging Face GPT-2 state dict into `model` (in place) and return the model."""
    require_instance("model", model, GPTModel)
    if not model.cfg.qkv_bias:
        raise ValueError("GPT-2's query/key/value projections have biases: build the model with "
                         "qkv_bias=True (gpt2_config() does)")
    model.load_state_dict(gpt2_state_dict_to_ours(state_dict, model.cfg))
    return model


def config_from_hf(hf_config) -> GPTConfig:
    """Our GPTConfig for a `transformers` GPT2Config (or its config.json as a dict)."""
    get = hf_config.get if isinstance(hf_config, Mapping) else lambda k, d=None: getattr(hf_config, k, d)
    unsupported = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "layer_norm_epsilon": (1e-5,),
                   "scale_attn_weights": (True,), "scale_attn_by_inverse_layer_idx": (False,)}
    for key, allowed in unsupported.items():
        if get(key, allowed[0]) not in allowed:
            raise ValueError(f"{key}={get(key)!r} is not supported: GPTModel implements GPT-2 with "
                             f"{key}={allowed[0]!r}")
    return GPTConfig(vocab_size=get("vocab_size"), context_length=get("n_positions"),
                     emb_dim=get("n_embd"), n_heads=get("n_head"), n_layers=get("n_layer"),
                     drop_rate=0.0, qkv_bias=True, tie_weights=bool(get("tie_word_embeddings", True)))


def gpt2_from_hf(hf_model: torch.nn.Module) -> GPTModel:
    """A GPTModel with the same weights as a `transformers` GPT2LMHeadModel, in eval mode."""
    model = GPTModel(config_from_hf(hf_model.config))
    return load_gpt2_weights(model, hf_model.state_dict()).eval()


# --- the official checkpoints ------------------------------------------------------------------
@dataclass(frozen=True)
class GPT2Checkpoint:
    """Where one official GPT-2 size lives on the Hugging Face Hub, and how to check the file."""

    size: str                # "124M"
    preset: str              # our config preset
    repo: str                # Hugging Face repository
    revision: str            # a commit, so that the sha256 below stays valid
    sha256: str | None       # known digest; None: checked by its header and tensor shapes instead
    n_bytes: int | None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}/resolve/{self.revision}/model.safetensors"

    @property
    def relative_path(self) -> str:
        return f"gpt2/{self.size}/model.safetensors"


CHECKPOINTS: dict[str, GPT2Checkpoint] = {c.size: c for c in [
    # sha256 and size of the 124M file at this commit, as published by several independent sources.
    GPT2Checkpoint("124M", "gpt2-small", "openai-community/gpt2", "607a30d783dfa663caf39e06633721c8d4cfcd7e",
                   "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707", 548_105_171),
    # No digest we could confirm for these: a download is checked by structure (see verify_gpt2_file).
    GPT2Checkpoint("355M", "gpt2-medium", "openai-community/gpt2-medium", "main", None, None),
    GPT2Checkpoint("774M", "gpt2-large", "openai-community/gpt2-large", "main", None, None),
    GPT2Checkpoint("1558M", "gpt2-xl", "openai-community/gpt2-xl", "main", None, None),
]}
_ALIASES = {"gpt2": "124M", **{c.preset: s for s, c in CHECKPOINTS.items()},
            **{c.repo.split("/")[1]: s for s, c in CHECKPOINTS.items()}}


def checkpoint_info(size: str) -> GPT2Checkpoint:
    """The checkpoint for a size: "124M", "355M", "774M", "1558M" (or "gpt2", "gpt2-medium", ...)."""
    key = _ALIASES.get(size, size)
    if key not in CHECKPOINTS:
        raise ValueError(f"unknown GPT-2 size {size!r}; choose one of {list(CHECKPOINTS)}")
    return CHECKPOINTS[key]


def gpt2_config(size: str = "124M", **overrides) -> GPTConfig:
    """The config of an official GPT-2 size: qkv biases on, dropout off (we only run it)."""
    return get_config(checkpoint_info(size).preset, **{"qkv_bias": True, "drop_rate": 0.0, **overrides})


def gpt2_path(size: str = "124M") -> Path:
    """Where the weights of `size` belong: <data dir>/gpt2/<size>/model.safetensors."""
    return data_dir() / checkpoint_info(size).relative_path


def gpt2_available(size: str = "124M") -> bool:
    """True if the weights of `size` are on this machine (not checked; loading checks them)."""
    return gpt2_path(size).is_file()


def how_to_get(size: str = "124M") -> str:
    """Instructions (without machine paths) for getting the weights of `size`."""
    ckpt = checkpoint_info(size)
    return (f"GPT-2 {ckpt.size} weights are not on this machine. With internet, run\n"
            f"    python -m gptcourse.pretrained {ckpt.size}\n"
            f"or download {ckpt.url}\n"
            f"and save it as {ckpt.relative_path} inside the gptcourse data folder "
            f"(gptcourse.download.data_dir(); set ${DATA_DIR_ENV} to choose it).")


def verify_gpt2_file(path: str | Path, size: str = "124M") -> None:
    """Check a downloaded checkpoint: sha256 where known, else its header, length and every shape."""
    ckpt = checkpoint_info(size)
    if ckpt.sha256 is not None:
        verify(Path(path), ckpt.sha256)
        return
    header = read_safetensors_header(path)
    validate_gpt2_shapes({name: tuple(info["shape"]) for name, info in header.items()}, gpt2_config(size))


def download_gpt2(size: str = "124M") -> Path:
    """Download the official weights of `size` once (progress bar, checked, atomic) and return the path."""
    ckpt, path = checkpoint_info(size), gpt2_path(size)
    if path.is_file():
        verify_gpt2_file(path, size)  # a corrupt or cut-short file is reported, never used
        return path
    # Sizes without a known sha256 are checked by their header, length and shapes instead.
    check = None if ckpt.sha256 else (lambda part: verify_gpt2_file(part, size))
    try:
        return download(ckpt.url, path, ckpt.sha256, check=check)
    except DownloadError as exc:
        raise DownloadError(f"downloading GPT-2 {ckpt.size} failed: {exc}\n{how_to_get(size)}") from None


def load_gpt2_file(path: str | Path, cfg: GPTConfig) -> GPTModel:
    """GPTModel for `cfg` with the weights of a Hugging Face GPT-2 `model.safetensors`, in eval mode."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ImportError("reading model.safetensors needs the safetensors package: "
                          "pip install safetensors (or pip install -e '.[gpt2]')") from None
    header = read_safetensors_header(path)  # clear errors before reading gigabytes
    validate_gpt2_shapes({name: tuple(info["shape"]) for name, info in header.items()}, cfg)
    return load_gpt2_weights(GPTModel(cfg), load_file(str(path))).eval()


def load_pretrained_gpt2(size: str = "124M", download_ok: bool = False) -> GPTModel:
    """GPTModel with OpenAI's GPT-2 weights from the data folder (downloaded if allowed), in eval mode."""
    if not gpt2_available(size):
        if not download_ok:
            raise FileNotFoundError(f"{how_to_get(size)}\n(Looked for {gpt2_path(size)}.)")
        download_gpt2(size)
    path = gpt2_path(size)
    try:
        return load_gpt2_file(path, gpt2_config(size))
    except (ValueError, TypeError) as exc:
        if str(path) in str(exc):
            raise
        raise type(exc)(f"the cached GPT-2 {size} weights {path} are damaged ({exc}): delete the "
                        f"file and run python -m gptcourse.pretrained {size}") from None


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Download OpenAI's GPT-2 weights (Hugging Face format).")
    parser.add_argument("sizes", nargs="*", default=["124M"], help=f"any of {list(CHECKPOINTS)}")
    for name in parser.parse_args().sizes:
        try:
            print(f"GPT-2 {name}: {download_gpt2(name)}")
        except (DownloadError, ValueError) as error:
            raise SystemExit(f"error: {error}") from None
