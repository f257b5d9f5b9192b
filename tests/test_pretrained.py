"""Loading GPT-2 weights: parity with the reference implementation (`transformers`, random
weights, offline), the checkpoint file, the official sizes, and every error message."""

import io
import math
import re
import urllib.request

import pytest
import torch

from gptcourse import config, pretrained
from gptcourse.config import GPTConfig
from gptcourse.download import DownloadError
from gptcourse.generate import generate_text_simple
from gptcourse.kvcache import generate_cached
from gptcourse.model import GPTModel, count_parameters
from gptcourse.pretrained import (
    GPT2Checkpoint,
    checkpoint_info,
    config_from_hf,
    download_gpt2,
    expected_gpt2_shapes,
    gpt2_block_to_ours,
    gpt2_config,
    gpt2_from_hf,
    gpt2_state_dict_to_ours,
    how_to_get,
    load_gpt2_file,
    load_gpt2_weights,
    load_pretrained_gpt2,
    validate_gpt2_shapes,
    verify_gpt2_file,
)

SMALL = GPTConfig(vocab_size=211, context_length=32, emb_dim=64, n_heads=4, n_layers=2,
                  drop_rate=0.0, qkv_bias=True)


def random_hf_state(cfg: GPTConfig = SMALL, seed: int = 0) -> dict[str, torch.Tensor]:
    """A GPT-2 state dict in Hugging Face names and shapes, with random values."""
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=gen) * 0.2
            for name, shape in expected_gpt2_shapes(cfg).items()}


# --- the reference implementation (transformers, optional) -------------------------------------
@pytest.fixture(scope="module")
def hf_model():
    """A randomly initialised transformers GPT2LMHeadModel, every weight perturbed so that all matter."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=32, vocab_size=211,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():
        # Zero biases and unit LayerNorm scales would hide mapping bugs, so perturb every tensor.
        # Larger position embeddings keep greedy decoding from repeating one token forever.
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (1.0 if "wpe" in name else 0.1))
    return model


def hf_greedy(hf, idx: torch.Tensor, n: int) -> torch.Tensor:
    with torch.no_grad():
        for _ in range(n):
            idx = torch.cat([idx, hf(idx).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def test_logits_match_transformers(hf_model):
    ours = gpt2_from_hf(hf_model)
    assert ours.cfg == SMALL and ours.weights_tied
    idx = torch.randint(0, 211, (3, 32))
    with torch.no_grad():
        expected, actual = hf_model(idx).logits, ours(idx)
    assert expected.abs().max() > 1.0  # the logits are not all near zero
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_greedy_tokens_match_transformers(hf_model):
    ours = gpt2_from_hf(hf_model)
    prompt = torch.randint(0, 211, (2, 4))
    expected = hf_greedy(hf_model, prompt, 24)
    assert len(set(expected[0, 4:].tolist())) > 10  # a varied continuation, not one repeated id
    assert torch.equal(generate_text_simple(ours, prompt, 24), expected)
    assert torch.equal(generate_cached(ours, prompt, 24), expected)


def test_save_pretrained_file_loads(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path)
    ours = load_gpt2_file(tmp_path / "model.safetensors", config_from_hf(hf_model.config))
    idx = torch.randint(0, 211, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf_model(idx).logits, atol=1e-5, rtol=0)


def test_hub_style_file_with_mask_buffers_loads(tmp_path):
    """The Hub's model.safetensors has no prefix, no lm_head, and a causal-mask buffer per block."""
    save_file = pytest.importorskip("safetensors.torch").save_file
    state = random_hf_state()
    for i in range(SMALL.n_layers):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
    save_file(state, tmp_path / "model.safetensors")
    model = load_gpt2_file(tmp_path / "model.safetensors", SMALL)
    assert not model.training
    torch.testing.assert_close(model.trf_blocks[1].att.W_key.bias, state["h.1.attn.c_attn.bias"][64:128])
    torch.testing.assert_close(model.out_head.weight, state["wte.weight"])


# --- the mapping ---------------------------------------------------------------------------------
def test_block_mapping_transposes_and_splits():
    state = random_hf_state()
    block = {n.removeprefix("h.0."): t for n, t in state.items() if n.startswith("h.0.")}
    ours = gpt2_block_to_ours(block)
    w = block["attn.c_attn.weight"]  # (C, 3C): x @ w gives [q | k | v]
    x = torch.randn(5, 64)
    for i, name in enumerate(["W_query", "W_key", "W_value"]):
        torch.testing.assert_close(x @ ours[f"att.{name}.weight"].T, (x @ w)[:, 64 * i:64 * (i + 1)])
    torch.testing.assert_close(ours["ff.layers.0.weight"], block["mlp.c_fc.weight"].T)
    assert set(ours) == set(GPTModel(SMALL).trf_blocks[0].state_dict())


def test_state_dict_with_transformer_prefix_and_tied_head():
    state = {f"transformer.{n}": t for n, t in random_hf_state().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model = load_gpt2_weights(GPTModel(SMALL), state)
    assert model.weights_tied
    assert torch.equal(model.pos_emb.weight, state["transformer.wpe.weight"])


def test_untied_head_loads_into_untied_model():
    state = random_hf_state()
    state["lm_head.weight"] = torch.randn(211, 64)
    model = load_gpt2_weights(GPTModel(SMALL.replace(tie_weights=False)), state)
    assert torch.equal(model.out_head.weight, state["lm_head.weight"])


def test_official_configs_have_the_published_parameter_counts():
    counts = {"124M": 124_439_808, "355M": 354_823_168, "774M": 774_030_080, "1558M": 1_557_611_200}
    for size, expected in counts.items():
        shapes = expected_gpt2_shapes(gpt2_config(size))
        assert sum(math.prod(shape) for shape in shapes.values()) == expected, size
    # The checkpoint holds exactly our parameters (the tied head counted once).
    assert sum(math.prod(s) for s in expected_gpt2_shapes(SMALL).values()) == count_parameters(GPTModel(SMALL))
    assert gpt2_config("gpt2-medium") == gpt2_config("355M") == gpt2_config("gpt2-medium")
    assert gpt2_config().qkv_bias and gpt2_config().drop_rate == 0.0


# --- every error message ---------------------------------------------------------------------------
def test_missing_tensor_is_named():
    state = random_hf_state()
    del state["h.1.mlp.c_fc.bias"]
    with pytest.raises(ValueError, match=r"no tensor 'h\.1\.mlp\.c_fc\.bias'"):
        load_gpt2_weights(GPTModel(SMALL), state)


def test_missing_tensors_are_counted():
    state = random_hf_state()
    del state["wpe.weight"], state["h.0.ln_1.bias"]
    with pytest.raises(ValueError, match=r"no tensor 'wpe\.weight' \(and 1 more\)"):
        gpt2_state_dict_to_ours(state, SMALL)


def test_unexpected_tensor_is_named():
    state = random_hf_state()
    state["h.2.ln_1.weight"] = torch.ones(64)  # a third layer the config does not have
    with pytest.raises(ValueError, match=r"unexpected tensor 'h\.2\.ln_1\.weight'.*n_layers=2"):
        load_gpt2_weights(GPTModel(SMALL), state)


def test_wrong_shape_is_named():
    state = random_hf_state(SMALL.replace(emb_dim=32))
    with pytest.raises(ValueError, match=r"tensor 'wte\.weight' has shape \(211, 32\).*needs \(211, 64\)"):
        load_gpt2_weights(GPTModel(SMALL), state)


def test_conv1d_weight_stored_as_linear_is_a_shape_error():
    state = random_hf_state()
    state["h.0.mlp.c_fc.weight"] = state["h.0.mlp.c_fc.weight"].T.contiguous()
    with pytest.raises(ValueError, match=r"'h\.0\.mlp\.c_fc\.weight' has shape \(256, 64\)"):
        gpt2_state_dict_to_ours(state, SMALL)


def test_untied_head_in_tied_model_is_refused():
    state = random_hf_state()
    state["lm_head.weight"] = torch.randn(211, 64)
    with pytest.raises(ValueError, match="untied output head; build the model with tie_weights=False"):
        load_gpt2_weights(GPTModel(SMALL), state)


def test_head_shape_is_checked():
    state = random_hf_state()
    state["lm_head.weight"] = torch.randn(210, 64)
    with pytest.raises(ValueError, match=r"'lm_head\.weight' has shape \(210, 64\)"):
        gpt2_state_dict_to_ours(state, SMALL)


def test_bad_state_dict_types():
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        gpt2_state_dict_to_ours([("wte.weight", torch.ones(1))], SMALL)
    state = random_hf_state()
    state["wpe.weight"] = state["wpe.weight"].numpy()
    with pytest.raises(TypeError, match=r"tensor 'wpe\.weight' is a ndarray"):
        gpt2_state_dict_to_ours(state, SMALL)
    with pytest.raises(TypeError, match="model must be a GPTModel"):
        load_gpt2_weights(torch.nn.Linear(2, 2), random_hf_state())


def test_model_without_qkv_bias_is_refused():
    with pytest.raises(ValueError, match="build the model with qkv_bias=True"):
        load_gpt2_weights(GPTModel(SMALL.replace(qkv_bias=False)), random_hf_state())


def test_config_from_hf_dict_and_unsupported_options():
    cfg = config_from_hf({"vocab_size": 211, "n_positions": 32, "n_embd": 64, "n_head": 4, "n_layer": 2})
    assert cfg == SMALL
    for key, value in [("activation_function", "relu"), ("layer_norm_epsilon", 1e-6),
                       ("scale_attn_by_inverse_layer_idx", True)]:
        with pytest.raises(ValueError, match=f"{key}={value!r} is not supported"):
            config_from_hf({"vocab_size": 211, "n_positions": 32, "n_embd": 64, "n_head": 4,
                            "n_layer": 2, key: value})


def test_unknown_size():
    with pytest.raises(ValueError, match=r"unknown GPT-2 size 'gpt3'; choose one of \['124M'"):
        gpt2_config("gpt3")
    assert checkpoint_info("gpt2").size == checkpoint_info("gpt2-small").size == "124M"
    assert checkpoint_info("gpt2-xl").url.endswith("openai-community/gpt2-xl/resolve/main/model.safetensors")


# --- files, downloads, offline -------------------------------------------------------------------
def write_safetensors(path, cfg: GPTConfig = SMALL) -> None:
    pytest.importorskip("safetensors.torch").save_file(random_hf_state(cfg), path)


def test_cut_short_file_is_refused_before_loading(tmp_path):
    good = tmp_path / "model.safetensors"
    write_safetensors(good)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ValueError, match="the file is incomplete"):
        load_gpt2_file(cut, SMALL)


def test_file_for_another_size_is_named(tmp_path):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, SMALL.replace(n_layers=1))
    with pytest.raises(ValueError, match=r"no tensor 'h\.1\.ln_1\.weight'"):
        load_gpt2_file(path, SMALL)


def test_offline_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTCOURSE_DATA_DIR", str(tmp_path))
    assert not pretrained.gpt2_available("124M")
    with pytest.raises(FileNotFoundError) as info:
        load_pretrained_gpt2("124M")
    message = str(info.value)
    assert "python -m gptcourse.pretrained 124M" in message
    assert checkpoint_info("124M").url in message and "gpt2/124M/model.safetensors" in message
    assert str(tmp_path) in message  # the error names the exact file; how_to_get() does not
    assert str(tmp_path) not in how_to_get("124M")


def test_known_sha256_is_verified(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not the real weights")
    with pytest.raises(DownloadError, match="sha256"):
        verify_gpt2_file(path, "124M")


TINY = GPT2Checkpoint("tiny", "tiny-test", "example/tiny-gpt2", "main", None, None)


@pytest.fixture
def tiny_size(monkeypatch, tmp_path):
    """A pretend official size "tiny" (no known sha256), with its own preset and data folder."""
    monkeypatch.setenv("GPTCOURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(config.PRESETS, "tiny-test", SMALL.replace(qkv_bias=False, drop_rate=0.1))
    monkeypatch.setitem(pretrained.CHECKPOINTS, "tiny", TINY)
    source = tmp_path / "served.safetensors"
    write_safetensors(source, SMALL)
    return source


def serve(monkeypatch, data: bytes) -> None:
    """Every URL answers with `data`, so no test needs the network."""
    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(data))}

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(data))


def test_download_without_known_hash_checks_structure(tiny_size, tmp_path, monkeypatch):
    """Sizes without a confirmed sha256 are checked by header, length and shapes, then renamed."""
    serve(monkeypatch, tiny_size.read_bytes())
    path = download_gpt2("tiny")
    assert path == tmp_path / "gpt2" / "tiny" / "model.safetensors"
    assert download_gpt2("tiny") == path  # already there: checked, not downloaded again
    model = load_pretrained_gpt2("tiny")
    assert model.cfg == SMALL  # gpt2_config turns qkv biases on and dropout off


def test_failed_download_leaves_nothing_behind(tiny_size, tmp_path, monkeypatch):
    serve(monkeypatch, tiny_size.read_bytes()[:-1000])
    with pytest.raises(DownloadError, match="(?s)the file is incomplete.*python -m gptcourse.pretrained tiny"):
        download_gpt2("tiny")
    assert not any((tmp_path / "gpt2" / "tiny").iterdir())


def test_failed_download_with_known_hash_says_how_to_get(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTCOURSE_DATA_DIR", str(tmp_path))

    def offline(url, destination, sha256, check):
        assert sha256 == checkpoint_info("124M").sha256 and destination == pretrained.gpt2_path("124M")
        raise DownloadError("no internet")

    monkeypatch.setattr(pretrained, "download", offline)
    with pytest.raises(DownloadError, match="GPT-2 124M failed: no internet\nGPT-2 124M weights are not on"):
        download_gpt2("124M")


def test_validate_gpt2_shapes_accepts_exact_set():
    validate_gpt2_shapes(expected_gpt2_shapes(SMALL), SMALL)


def test_corrupt_cached_weights_name_the_path_and_the_fix(tiny_size, tmp_path):
    path = tmp_path / "gpt2" / "tiny" / "model.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00" * 12)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} is not a safetensors file, or it is "
                                         f"cut short: delete it and download it again .*"
                                         f"python -m gptcourse.pretrained"):
        load_pretrained_gpt2("tiny")


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_integer_tensors_are_refused(dtype):
    state = random_hf_state()
    state["wpe.weight"] = state["wpe.weight"].to(dtype)
    with pytest.raises(TypeError, match=f"tensor 'wpe.weight' has dtype {dtype}, but GPT-2's weights "
                                        f"are floating point"):
        gpt2_state_dict_to_ours(state, SMALL)


def test_nan_values_are_refused():
    state = random_hf_state()
    state["h.0.mlp.c_fc.bias"][3] = float("nan")
    with pytest.raises(ValueError, match=r"tensor 'h.0.mlp.c_fc.bias' holds NaN or infinite values: "
                                         r"the checkpoint is damaged; download it again"):
        gpt2_state_dict_to_ours(state, SMALL)
