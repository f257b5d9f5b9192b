"""GPTModel: parameter counts, real weight tying, initialisation, causality, input errors, and
greedy generation with context cropping."""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F

from gptcourse.config import GPTConfig, get_config
from gptcourse.generate import generate_text_simple
from gptcourse.model import GPTModel, count_parameters, model_size_mb

TINY = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)


def on_meta(cfg: GPTConfig) -> GPTModel:
    with torch.device("meta"):  # shapes only: no memory, no time
        return GPTModel(cfg)


# --- parameter counts ----------------------------------------------------------------------------
@pytest.mark.parametrize("preset, untied, tied", [
    ("gpt2-small", 163_009_536, 124_412_160),
    ("gpt2-medium", 406_212_608, 354_749_440),
    ("gpt2-large", 838_220_800, 773_891_840),
    ("gpt2-xl", 1_637_792_000, 1_557_380_800),
])
def test_preset_parameter_counts(preset, untied, tied):
    cfg = get_config(preset)
    model = on_meta(cfg)
    assert count_parameters(model, count_tied_once=False) == untied
    assert count_parameters(model, count_tied_once=True) == tied
    # the difference is exactly one vocab_size x emb_dim matrix: the shared embedding/head
    assert untied - tied == cfg.vocab_size * cfg.emb_dim
    untied_model = on_meta(cfg.replace(tie_weights=False))
    assert count_parameters(untied_model) == untied


def test_model_size_mb():
    model = on_meta(get_config("gpt2-small"))
    assert round(model_size_mb(model, count_tied_once=False), 2) == 621.83
    assert round(model_size_mb(model), 2) == 474.59
    assert model_size_mb(model, torch.bfloat16) == pytest.approx(model_size_mb(model) / 2)


def test_forward_shape():
    model = GPTModel(TINY)
    logits = model(torch.randint(50, (3, 5)))
    assert logits.shape == (3, 5, 50)


# --- weight tying --------------------------------------------------------------------------------
def assert_tied(model: GPTModel) -> None:
    assert model.weights_tied
    assert model.out_head.weight is model.tok_emb.weight
    assert model.out_head.weight.data_ptr() == model.tok_emb.weight.data_ptr()


def test_tied_weights_share_one_parameter():
    model = GPTModel(TINY)
    assert_tied(model)
    with torch.no_grad():
        model.tok_emb.weight[3, 0] = 123.0
    assert model.out_head.weight[3, 0] == 123.0  # one storage: a change shows in both
    names = [name for name, _ in model.named_parameters()]
    assert "tok_emb.weight" in names and "out_head.weight" not in names  # listed once


def test_untied_model_has_two_matrices():
    model = GPTModel(TINY.replace(tie_weights=False))
    assert not model.weights_tied
    assert model.out_head.weight.data_ptr() != model.tok_emb.weight.data_ptr()


def test_tying_survives_a_training_step():
    model = GPTModel(TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randint(50, (2, 8))).logsumexp(-1).mean().backward()
    optimizer.step()
    assert_tied(model)


def test_tying_survives_save_and_load():
    model = GPTModel(TINY)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    # torch.save keeps the sharing: both names point at one storage in the file
    assert state["out_head.weight"].data_ptr() == state["tok_emb.weight"].data_ptr()
    fresh = GPTModel(TINY)
    fresh.load_state_dict(state)
    assert_tied(fresh)
    torch.testing.assert_close(fresh.out_head.weight, model.tok_emb.weight)


def test_tying_survives_load_with_assign():
    state = GPTModel(TINY).state_dict()
    fresh = GPTModel(TINY)
    fresh.load_state_dict(state, assign=True)  # assign puts in new Parameters: tie them again
    assert_tied(fresh)
    assert len(list(fresh.parameters())) == len(list(GPTModel(TINY).parameters()))


def test_loading_an_untied_head_into_a_tied_model_is_refused():
    untied = GPTModel(TINY.replace(tie_weights=False))
    with pytest.raises(ValueError, match=r"build the model with cfg.replace\(tie_weights=False\)"):
        GPTModel(TINY).load_state_dict(untied.state_dict())
    # the other way round is fine: an untied model can hold two equal matrices
    target = GPTModel(TINY.replace(tie_weights=False))
    target.load_state_dict(GPTModel(TINY).state_dict())
    torch.testing.assert_close(target.out_head.weight, target.tok_emb.weight)


@pytest.mark.parametrize("convert", [
    lambda m: m.to(torch.float64),
    lambda m: m.half(),
    lambda m: m.to("meta"),
    lambda m: m.to("meta").to_empty(device="cpu"),
    copy.deepcopy,
], ids=["to-float64", "half", "to-meta", "to_empty", "deepcopy"])
def test_tying_survives_conversions(convert):
    assert_tied(convert(GPTModel(TINY)))


def test_tying_survives_swapping_conversion():
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        model = GPTModel(TINY).to(torch.float64)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(False)
    assert_tied(model)
    assert model.tok_emb.weight.dtype == torch.float64


def test_deepcopy_is_independent():
    model = GPTModel(TINY)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.tok_emb.weight.zero_()
    assert model.tok_emb.weight.abs().sum() > 0


# --- initialisation ------------------------------------------------------------------------------
def test_gpt2_initialisation():
    cfg = TINY.replace(emb_dim=64, n_heads=4, vocab_size=500, n_layers=4, context_length=64)
    model = GPTModel(cfg)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.trf_blocks[0].ff.layers[0].weight.std().item() == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / math.sqrt(2 * cfg.n_layers)
    assert model.trf_blocks[0].att.out_proj.weight.std().item() == pytest.approx(residual, rel=0.1)
    assert model.trf_blocks[0].ff.layers[2].weight.std().item() == pytest.approx(residual, rel=0.1)
    assert torch.all(model.trf_blocks[0].ff.layers[0].bias == 0)


def initial_loss(cfg: GPTConfig, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = GPTModel(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(cfg.vocab_size, (4, cfg.context_length + 1), generator=gen)
    with torch.no_grad():
        logits = model(ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).item()


def test_initial_loss_is_close_to_ln_vocab():
    cfg = GPTConfig(vocab_size=50257, context_length=32, emb_dim=64, n_heads=4, n_layers=2, drop_rate=0.0)
    assert abs(initial_loss(cfg) - math.log(50257)) < 0.1


def test_initial_loss_grows_with_logit_spread():
    # Random logits of standard deviation s add about s²/2 to ln(V); with std-0.02 weights
    # s = 0.02·sqrt(emb_dim), so GPT-2 small (768) starts near ln(V) + 0.15, not at ln(V).
    cfg = GPTConfig(vocab_size=1000, context_length=32, emb_dim=768, n_heads=12, n_layers=1, drop_rate=0.0)
    expected = math.log(1000) + (0.02**2 * 768) / 2
    assert initial_loss(cfg) == pytest.approx(expected, abs=0.05)


# --- causality -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fast", [False, True])
def test_future_tokens_do_not_change_the_past(fast):
    model = GPTModel(TINY.replace(fast=fast)).eval()
    idx = torch.randint(50, (1, 8))
    changed = idx.clone()
    changed[0, 5:] = (changed[0, 5:] + 1) % 50
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_sdpa_and_manual_attention_agree():
    manual = GPTModel(TINY).eval()
    sdpa = GPTModel(TINY.replace(fast=True)).eval()
    sdpa.load_state_dict(manual.state_dict())
    idx = torch.randint(50, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(manual(idx), sdpa(idx), atol=1e-5, rtol=1e-4)


# --- clear errors --------------------------------------------------------------------------------
def test_input_longer_than_context_is_refused():
    model = GPTModel(TINY)
    with pytest.raises(ValueError, match=r"9 tokens but the model's context_length is 8: crop it"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("idx, error, message", [
    ([1, 2, 3], TypeError, "idx must be a tensor of token ids"),
    (torch.zeros(1, 3), TypeError, "integer token ids"),
    (torch.zeros(3, dtype=torch.long), ValueError, "add a batch dimension"),
    (torch.zeros(1, 0, dtype=torch.long), ValueError, "at least one token"),
    (torch.tensor([[1, 50]]), ValueError, r"token ids must be in 0..49"),
    (torch.tensor([[-1, 2]]), ValueError, r"token ids must be in 0..49"),
])
def test_bad_inputs_get_clear_errors(idx, error, message):
    with pytest.raises(error, match=message):
        GPTModel(TINY)(idx)


def test_config_must_be_a_gptconfig():
    with pytest.raises(TypeError, match=r"cfg must be a GPTConfig, got dict \(try GPTConfig\(\*\*cfg\)\)"):
        GPTModel({"vocab_size": 10})


# --- greedy generation ---------------------------------------------------------------------------
class RecordingModel(torch.nn.Module):
    """Wraps a model and records how many tokens each call sees."""

    def __init__(self, model):
        super().__init__()
        self.model, self.cfg, self.lengths = model, model.cfg, []

    def forward(self, idx):
        self.lengths.append(idx.size(1))
        return self.model(idx)


def test_generate_text_simple_is_greedy():
    model = GPTModel(TINY).eval()
    prompt = torch.tensor([[1, 2, 3]])
    out = generate_text_simple(model, prompt, max_new_tokens=4)
    assert out.shape == (1, 7) and torch.equal(out[:, :3], prompt)
    idx = prompt
    for _ in range(4):  # the same loop by hand
        with torch.no_grad():
            idx = torch.cat([idx, model(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, idx)


def test_generate_text_simple_crops_to_the_context_length():
    model = RecordingModel(GPTModel(TINY).eval())
    prompt = torch.randint(50, (2, 6))
    out = generate_text_simple(model, prompt, max_new_tokens=10)  # 16 tokens > context 8
    assert out.shape == (2, 16)
    assert max(model.lengths) == 8 and model.lengths[:3] == [6, 7, 8]
    # each new token depends only on the last 8 tokens
    last = out[:, -9:-1]
    with torch.no_grad():
        expected = model.model(last)[:, -1].argmax(-1)
    assert torch.equal(out[:, -1], expected)


def test_generate_text_simple_with_a_smaller_context_size():
    model = RecordingModel(GPTModel(TINY).eval())
    generate_text_simple(model, torch.randint(50, (1, 6)), max_new_tokens=3, context_size=4)
    assert model.lengths == [4, 4, 4]


def test_generate_text_simple_zero_new_tokens_and_errors():
    model = GPTModel(TINY).eval()
    prompt = torch.tensor([[4, 5]])
    assert torch.equal(generate_text_simple(model, prompt, max_new_tokens=0), prompt)
    with pytest.raises(ValueError, match="add a batch dimension"):
        generate_text_simple(model, torch.tensor([4, 5]), max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0"):
        generate_text_simple(model, prompt, max_new_tokens=-1)


def test_tying_uses_only_public_torch_methods():
    # Overriding a private nn.Module method (such as _apply) could break with any PyTorch release.
    from gptcourse.tying import TiedEmbeddingMixin
    overridden = set(vars(GPTModel)) | set(vars(TiedEmbeddingMixin))
    private = {name for name in overridden if name.startswith("_") and not name.startswith("__")
               and hasattr(torch.nn.Module, name)}
    assert private == set()


# --- the fused path (LayerNorm, GELU, attention through PyTorch's kernels) -----------------------
def test_fast_model_equals_explicit_model_logits_and_gradients():
    torch.manual_seed(0)
    explicit = GPTModel(TINY)
    fused = GPTModel(TINY.replace(fast=True))
    fused.load_state_dict(explicit.state_dict())
    assert fused.weights_tied and fused.final_norm.fast
    idx = torch.randint(0, TINY.vocab_size, (3, 8))
    targets = torch.randint(0, TINY.vocab_size, (3, 8))
    logits_a, logits_b = explicit(idx), fused(idx)
    torch.testing.assert_close(logits_b, logits_a, atol=1e-5, rtol=1e-5)
    F.cross_entropy(logits_a.flatten(0, 1), targets.flatten()).backward()
    F.cross_entropy(logits_b.flatten(0, 1), targets.flatten()).backward()
    for (name, a), b in zip(explicit.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_fast_is_a_checked_config_field_shown_in_the_printed_config():
    assert GPTConfig().fast is False and get_config("cpu-small").fast is True
    with pytest.raises(TypeError, match="fast"):
        GPTConfig(fast="yes")
    assert GPTConfig.from_dict(TINY.replace(fast=True).to_dict()).fast  # saved with checkpoints
    assert "fast=True" in repr(get_config("cpu-small"))  # the one speed switch, printed


@pytest.mark.parametrize("saved, fast", [({"use_sdpa": True, "use_fused": True}, True),
                                         ({"use_sdpa": True}, True), ({"use_sdpa": False}, False),
                                         ({"use_sdpa": False, "use_fused": False}, False)])
def test_a_config_saved_with_the_two_old_speed_switches_loads_as_fast(saved, fast):
    without_fast = {k: v for k, v in TINY.to_dict().items() if k != "fast"}
    assert GPTConfig.from_dict({**without_fast, **saved}).fast is fast
    with pytest.raises(TypeError, match="fast must be True or False"):
        GPTConfig.from_dict({**without_fast, "use_sdpa": "yes"})
