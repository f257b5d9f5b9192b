"""Low-precision decoding: the copies run, keep the original intact, store fewer bytes per weight,
and choose the same greedy tokens as fp32 nearly always."""

import pytest
import torch

import gptcourse.lowprec
from gptcourse.config import GPTConfig
from gptcourse.kvcache import generate_cached
from gptcourse.lowprec import (
    LOW_PRECISION,
    greedy_agreement,
    low_precision_copy,
    weight_reading_floor,
)
from gptcourse.model import GPTModel

CFG = GPTConfig(vocab_size=300, context_length=96, emb_dim=64, n_heads=4, n_layers=2, drop_rate=0.0,
                fast=True, tie_weights=False)  # untied: random models disagree


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


@pytest.mark.parametrize("kind, bytes_per_weight", [("bf16", 2), ("int8", 1)])
def test_copy_stores_fewer_bytes_and_leaves_the_model_alone(model, kind, bytes_per_weight):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = low_precision_copy(model, kind)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32
    _, fp32_bytes = weight_reading_floor(model, repeats=1)
    _, small_bytes = weight_reading_floor(small, repeats=1)
    # The Linear weights shrink to bytes_per_weight; int8 keeps fp32 biases (a small share).
    assert small_bytes < fp32_bytes * bytes_per_weight / 4 * 1.05
    assert small_bytes >= fp32_bytes * bytes_per_weight / 4 * 0.95


@pytest.mark.parametrize("kind", LOW_PRECISION)
def test_low_precision_greedy_tokens_agree_with_fp32(model, kind):
    prompt = torch.randint(0, CFG.vocab_size, (1, 6), generator=torch.Generator().manual_seed(1))
    small = low_precision_copy(model, kind)
    tokens = generate_cached(small, prompt, 40)
    assert tokens.shape == (1, 46) and torch.equal(tokens[:, :6], prompt)
    agreement = greedy_agreement(model, small, prompt, 80)
    assert agreement.forced >= 0.9, agreement
    assert 0.0 <= agreement.free <= 1.0


def test_agreement_detects_a_different_model(model):
    torch.manual_seed(1)
    other = GPTModel(CFG).eval()  # other weights: the greedy choices should mostly differ
    prompt = torch.randint(0, CFG.vocab_size, (1, 6), generator=torch.Generator().manual_seed(1))
    agreement = greedy_agreement(model, other, prompt, 40)
    assert agreement.forced < 0.5
    assert greedy_agreement(model, model, prompt, 40) == type(agreement)(forced=1.0, free=1.0)


def test_errors(model):
    with pytest.raises(ValueError, match="kind must be one of"):
        low_precision_copy(model, "fp8")
    with pytest.raises(TypeError, match="model"):
        low_precision_copy(torch.nn.Linear(2, 2), "bf16")
    with pytest.raises(ValueError, match="context length"):
        greedy_agreement(model, model, torch.zeros(1, 10, dtype=torch.long), CFG.context_length)
    with pytest.raises(ValueError, match="shape"):
        greedy_agreement(model, model, torch.zeros(2, 4, dtype=torch.long), 5)


def test_wrong_argument_types_get_a_clear_error(model):
    prompt = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(TypeError, match=r"kind must be one of \('bf16', 'int8'\) \(a str\)"):
        low_precision_copy(model, ["bf16"])
    with pytest.raises(TypeError, match="kind must be one of"):
        low_precision_copy(model, None)
    with pytest.raises(TypeError, match="other must be a GPTModel"):
        greedy_agreement(model, "bf16", prompt, 5)
    with pytest.raises(TypeError, match="prompt must be a tensor of token ids"):
        greedy_agreement(model, model, [[1, 2, 3]], 5)
    with pytest.raises(TypeError, match="prompt must hold integer token ids"):
        greedy_agreement(model, model, prompt.float(), 5)
    with pytest.raises(ValueError, match="prompt holds ids outside 0..299"):
        greedy_agreement(model, model, prompt + 300, 5)
    with pytest.raises(ValueError, match="at least one token"):
        greedy_agreement(model, model, torch.zeros(1, 0, dtype=torch.long), 5)
    with pytest.raises(TypeError, match="max_new_tokens must be a positive int"):
        greedy_agreement(model, model, prompt, 5.0)


def test_a_reference_that_is_only_the_prompt_is_refused(model):
    """It used to give an agreement of NaN: the average over no tokens at all."""
    prompt = torch.randint(0, CFG.vocab_size, (1, 6), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"reference_tokens must be the prompt followed by the "
                                         r"reference's 5 new tokens, shape \(1, 11\)"):
        greedy_agreement(model, model, prompt, 5, reference_tokens=prompt)
    full = generate_cached(model, prompt, 5)
    with pytest.raises(ValueError, match="reference_tokens must be the prompt followed"):
        greedy_agreement(model, model, prompt, 5, reference_tokens=torch.cat([prompt + 0, full[:, 6:]],
                                                                             dim=1).roll(1, dims=1))
    with pytest.raises(TypeError, match="reference_tokens must be a tensor"):
        greedy_agreement(model, model, prompt, 5, reference_tokens=full.tolist())
    assert greedy_agreement(model, model, prompt, 5, reference_tokens=full) == \
        greedy_agreement(model, model, prompt, 5)


# --- the weight-reading floor ----------------------------------------------------------------------
def test_weight_reading_floor_counts_every_linear_weight_once(model):
    seconds, n_bytes = weight_reading_floor(model, repeats=2)  # float32, no qkv biases, untied head
    C, H = CFG.emb_dim, 4 * CFG.emb_dim
    per_block = 3 * C * C + (C * C + C) + (C * H + H) + (H * C + C)  # q, k, v; out_proj; expand; project
    assert n_bytes == 4 * (CFG.n_layers * per_block + CFG.vocab_size * C)
    assert isinstance(seconds, float) and seconds > 0
    with pytest.raises(ValueError, match="repeats must be a positive int"):
        weight_reading_floor(model, repeats=0)
    with pytest.raises(ValueError, match="no Linear layers"):
        weight_reading_floor(torch.nn.LayerNorm(4))


def test_weight_reading_floor_runs_each_layer_as_the_decode_path_reads_it(model, monkeypatch):
    """One product per Linear layer (fastdecode.side_by_side), once per pass, passes in a row."""
    layers, calls = [], []
    real = gptcourse.lowprec.side_by_side

    def counted(group):
        product = real(group)
        layers.extend(group)
        return lambda x: calls.append(1) or product(x)
    monkeypatch.setattr(gptcourse.lowprec, "side_by_side", counted)
    seconds, _ = weight_reading_floor(model, repeats=2, passes=3)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert layers == linears  # every Linear layer, each on its own
    assert len(calls) == 2 * 3 * len(linears)  # every Linear once per pass, 3 passes per repeat
    assert 0 < seconds
    with pytest.raises(ValueError, match="passes must be a positive int"):
        weight_reading_floor(model, passes=0)
