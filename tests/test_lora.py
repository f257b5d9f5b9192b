"""LoRA from scratch, proven equal to Hugging Face's peft: outputs, gradients, merging, counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from gptcourse.config import GPTConfig
from gptcourse.llama import LlamaConfig, LlamaModel
from gptcourse.lora import (
    LoRALinear,
    inject_lora,
    lora_layers,
    merge_lora,
    trainable_parameters,
    unmerge_lora,
)
from gptcourse.model import GPTModel, count_parameters
from gptcourse.smollm2 import to_transformers

peft = pytest.importorskip("peft")
# peft asks transformers a question that transformers 5 marks as deprecated: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

TINY_LLAMA = LlamaConfig(vocab_size=64, context_length=32, emb_dim=32, n_heads=4, n_kv_heads=2,
                         n_layers=2, hidden_dim=48)
TINY_GPT = GPTConfig(vocab_size=50, context_length=16, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
R, ALPHA = 4, 8.0


def random_llama() -> LlamaModel:
    """A tiny LlamaModel whose norms are not all ones (so that every weight matters)."""
    model = LlamaModel(TINY_LLAMA)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def peft_twin(model: LlamaModel, **lora_settings):
    """The same base weights in transformers' LlamaForCausalLM, wrapped by peft's LoRA on q and v."""
    config = peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["q_proj", "v_proj"],
                             lora_dropout=0.0, **lora_settings)
    return peft.get_peft_model(to_transformers(model), config)


def peft_layer(twin, i: int, ours: str):
    attention = twin.base_model.model.model.layers[i].self_attn
    return getattr(attention, {"W_query": "q_proj", "W_value": "v_proj"}[ours])


def same_updates(model, twin) -> None:
    """Give our LoRA layers a B away from zero, and peft's twin layers the very same A and B."""
    with torch.no_grad():
        for i, block in enumerate(model.trf_blocks):
            for name in ("W_query", "W_value"):
                layer, theirs = getattr(block.att, name), peft_layer(twin, i, name)
                layer.B.weight.normal_(0.0, 0.1)
                theirs.lora_A["default"].weight.copy_(layer.A.weight)
                theirs.lora_B["default"].weight.copy_(layer.B.weight)


def test_lora_linear_starts_as_its_base_with_peft_initialisation():
    base = nn.Linear(12, 10)
    torch.manual_seed(1)
    ours = LoRALinear(base, r=R, alpha=ALPHA)
    wrapper = nn.Sequential(nn.Linear(12, 10))
    torch.manual_seed(1)
    config = peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["0"])
    theirs = peft.get_peft_model(wrapper, config).base_model.model[0]
    assert torch.equal(ours.A.weight, theirs.lora_A["default"].weight)  # kaiming-uniform, same draws
    assert torch.equal(ours.B.weight, torch.zeros(10, R))
    assert ours.scaling == theirs.scaling["default"] == ALPHA / R
    x = torch.randn(3, 5, 12)
    assert torch.equal(ours(x), base(x))  # B = 0: LoRA changes nothing yet
    assert [p.requires_grad for p in base.parameters()] == [False, False]
    assert ours.A.weight.requires_grad and ours.B.weight.requires_grad


def test_forward_is_base_plus_scaled_low_rank_update():
    layer = LoRALinear(nn.Linear(6, 5, bias=True), r=2, alpha=3.0)
    nn.init.normal_(layer.B.weight)
    x = torch.randn(4, 6)
    W, b = layer.base.weight, layer.base.bias
    A, B = layer.A.weight, layer.B.weight
    torch.testing.assert_close(layer(x), x @ W.T + b + 1.5 * (x @ A.T @ B.T))


def test_outputs_and_gradients_equal_peft():
    model = random_llama()
    twin = peft_twin(model)
    inject_lora(model, ("W_query", "W_value"), r=R, alpha=ALPHA)
    same_updates(model, twin)  # B away from zero, so that the update matters
    idx = torch.randint(0, TINY_LLAMA.vocab_size, (2, 12))
    ours, theirs = model(idx), twin(input_ids=idx).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    target = torch.randint(0, TINY_LLAMA.vocab_size, (2, 12))
    for logits in (ours, theirs):
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
    for i, block in enumerate(model.trf_blocks):
        for name in ("W_query", "W_value"):
            layer, other = getattr(block.att, name), peft_layer(twin, i, name)
            torch.testing.assert_close(layer.A.weight.grad, other.lora_A["default"].weight.grad,
                                       rtol=0, atol=1e-6)
            torch.testing.assert_close(layer.B.weight.grad, other.lora_B["default"].weight.grad,
                                       rtol=0, atol=1e-6)
            assert layer.base.weight.grad is None  # frozen: no gradient is even computed
    assert model.tok_emb.weight.grad is None


def test_trainable_parameters_equal_peft_count():
    model = random_llama()
    twin = peft_twin(model)
    total = count_parameters(model)
    inject_lora(model, r=R, alpha=ALPHA)
    trainable, everything = twin.get_nb_trainable_parameters()
    assert trainable_parameters(model) == trainable
    assert count_parameters(model) == everything
    # By hand: each wrapped layer adds r * (in + out) numbers.
    cfg = TINY_LLAMA
    q, v = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    assert trainable == cfg.n_layers * R * ((cfg.emb_dim + q) + (cfg.emb_dim + v))
    assert everything == total + trainable


def test_merge_and_unmerge_give_the_same_logits():
    model = random_llama()
    inject_lora(model, r=R, alpha=ALPHA)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.B.weight.normal_(0.0, 0.1)
    before = {name: layer.base.weight.clone() for name, layer in lora_layers(model)}
    idx = torch.randint(0, TINY_LLAMA.vocab_size, (2, 12))
    with torch.no_grad():
        unmerged = model(idx)
        merge_lora(model)
        merged = model(idx)
        for name, layer in lora_layers(model):
            torch.testing.assert_close(layer.base.weight, before[name] + layer.delta_weight())
        unmerge_lora(model)
        again = model(idx)
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
    assert torch.equal(again, unmerged)  # unmerge restores the weights bit for bit
    for name, layer in lora_layers(model):
        assert torch.equal(layer.base.weight, before[name]) and not layer.merged


def test_merged_logits_equal_peft_merged():
    model = random_llama()
    twin = peft_twin(model)
    inject_lora(model, r=R, alpha=ALPHA)
    same_updates(model, twin)
    with torch.no_grad():
        merge_lora(model)
        merged_hf = twin.merge_and_unload()
        idx = torch.randint(0, TINY_LLAMA.vocab_size, (1, 10))
        torch.testing.assert_close(model(idx), merged_hf(input_ids=idx).logits, rtol=0, atol=1e-6)


def test_dropout_acts_in_training_only():
    layer = LoRALinear(nn.Linear(8, 8), r=2, alpha=4.0, dropout=0.5)
    nn.init.normal_(layer.B.weight)
    x = torch.randn(16, 8)
    expected = layer.base(x) + 2.0 * layer.B(layer.A(x))
    torch.testing.assert_close(layer.eval()(x), expected)
    assert not torch.allclose(layer.train()(x), expected)


def test_inject_into_the_course_gpt_model():
    model = GPTModel(TINY_GPT)
    idx = torch.randint(0, TINY_GPT.vocab_size, (2, 8))
    with torch.no_grad():
        before = model(idx)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    inject_lora(model, ("W_query", "W_value", "ff.layers.0"), r=2, alpha=4)
    names = [name for name, _ in lora_layers(model)]
    assert names == [f"trf_blocks.{i}.{n}" for i in range(2)
                     for n in ("att.W_query", "att.W_value", "ff.layers.0")]
    with torch.no_grad():
        torch.testing.assert_close(model(idx), before, rtol=0, atol=0)
    C = TINY_GPT.emb_dim
    assert trainable_parameters(model) == 2 * (2 * 2 * (C + C) + 2 * (C + 4 * C))
    # One optimiser step changes A and B only; every original weight stays as it was.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(idx).square().mean().backward()
    optimizer.step()
    after = {k.replace(".base.", "."): v for k, v in model.state_dict().items()
             if ".A." not in k and ".B." not in k}
    assert after.keys() == frozen.keys()
    assert all(torch.equal(after[k], frozen[k]) for k in frozen)
    assert model.weights_tied


@pytest.mark.parametrize("kwargs, message", [
    ({"r": 0}, "r must be a positive int"),
    ({"r": 9}, "r=9 is larger than the layer"),
    ({"alpha": -1.0}, "alpha must be a positive number"),
    ({"dropout": 1.0}, "dropout must be a number in [0, 1)"),
])
def test_lora_linear_refuses_bad_settings(kwargs, message):
    settings = {"r": 2, "alpha": 4.0, **kwargs}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        LoRALinear(nn.Linear(8, 8), **settings)


def test_lora_linear_refuses_a_non_linear_base():
    with pytest.raises(TypeError, match="base must be"):
        LoRALinear(nn.Conv1d(4, 4, 1), r=2, alpha=4.0)


def test_inject_refuses_unknown_or_wrong_targets():
    with pytest.raises(ValueError, match=r"named 'q_proj'.*W_query"):
        inject_lora(random_llama(), ("q_proj",))
    with pytest.raises(ValueError, match="norm1.*nn.Linear layers only"):
        inject_lora(random_llama(), ("norm1",))
    with pytest.raises(TypeError, match="target_names must be"):
        inject_lora(random_llama(), ())
    model = inject_lora(random_llama())
    with pytest.raises(ValueError, match="has LoRA layers already"):
        inject_lora(model)


def test_merge_twice_and_unmerge_unmerged_are_refused():
    layer = LoRALinear(nn.Linear(4, 4), r=2, alpha=2.0)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(RuntimeError, match="merged already"):
        layer.merge()


def test_merge_keeps_the_unmerged_weight_on_the_model_device():
    layer = LoRALinear(nn.Linear(4, 4), r=2, alpha=2.0)
    layer.merge()
    assert "unmerged_weight" not in layer.state_dict()  # never saved with the model
    layer.to(torch.float64)
    layer.unmerge()
    assert layer.base.weight.dtype == torch.float64
    assert math.isclose(layer.scaling, 1.0)
