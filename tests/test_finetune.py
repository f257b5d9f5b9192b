"""Padded batches and the response-only loss: exact zeros where the prompt and padding are."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptcourse.finetune import (
    IGNORE_INDEX,
    collate,
    generate_replies,
    instruction_loader,
    masked_loss,
    response_loss,
)
from gptcourse.llama import LlamaConfig, LlamaModel
from gptcourse.lora import inject_lora

TINY = LlamaConfig(vocab_size=40, context_length=32, emb_dim=16, n_heads=2, n_kv_heads=1,
                   n_layers=2, hidden_dim=32)
END, PAD = 39, 38
PAIRS = [([1, 2, 3], [4, 5, END]), ([6], [7, END]), ([8, 9, 10, 11, 12], [13, END])]


def test_collate_shifts_pads_and_masks():
    x, y = collate(PAIRS[:2], pad_id=PAD)
    assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (2, 5)
    assert x.tolist() == [[1, 2, 3, 4, 5], [6, 7, PAD, PAD, PAD]]
    assert y.tolist() == [[-100, -100, 4, 5, END], [7, END, -100, -100, -100]]


def test_collate_keeps_the_end_token_as_a_target_exactly_once():
    for batch in (PAIRS, PAIRS[1:], PAIRS[:1]):
        x, y = collate(batch, pad_id=END)  # padding with the end token itself must not add targets
        assert (y == END).sum(dim=1).tolist() == [1] * len(batch)
        assert x.size(1) == max(len(p) + len(r) for p, r in batch) - 1
        for row, (_, response) in enumerate(batch):
            assert y[row][y[row] != IGNORE_INDEX].tolist() == response  # exactly the response


def test_collate_max_length_and_ignore_index():
    x, y = collate(PAIRS, pad_id=0, ignore_index=-1, max_length=4)
    assert x.shape == (3, 4)
    assert y.tolist() == [[-1, -1, 4, 5], [7, END, -1, -1], [-1, -1, -1, -1]]


@pytest.mark.parametrize("batch, kwargs, error, message", [
    ([], {}, ValueError, "non-empty list of \\(prompt_ids, response_ids\\) pairs"),
    ([([1, 2], [])], {}, ValueError, "batch\\[0\\] response_ids is empty"),
    ([([], [3])], {}, ValueError, "batch\\[0\\] prompt_ids is empty"),
    ([([1, -2], [3])], {}, ValueError, "prompt_ids must hold token ids"),
    ([([1, True], [3])], {}, ValueError, "prompt_ids must hold token ids"),
    ([([1], [3.0])], {}, ValueError, "response_ids must hold token ids"),
    ([([1], [3], [4])], {}, ValueError, "batch\\[0\\] must be a pair"),
    ([("ab", [3])], {}, TypeError, "prompt_ids must be a list of token ids"),
    ([([1], [3])], {"pad_id": -1}, ValueError, "pad_id must be an int >= 0"),
    ([([1], [3])], {"ignore_index": 5}, ValueError, "ignore_index must be an int.*negative"),
    ([([1], [3])], {"max_length": 0}, ValueError, "max_length must be None or a positive int"),
])
def test_collate_refuses_bad_input(batch, kwargs, error, message):
    with pytest.raises(error, match=message):
        collate(batch, **{"pad_id": 0, **kwargs})


def test_masked_loss_equals_cross_entropy_on_the_response_tokens_alone():
    model = LlamaModel(TINY)
    loss = masked_loss(model, collate(PAIRS, pad_id=PAD))
    # By hand: each example alone, without padding; only the positions that predict a response token.
    logits, targets = [], []
    for prompt, response in PAIRS:
        tokens = torch.tensor([prompt + response])
        out = model(tokens[:, :-1])[0]                      # (T - 1, vocab)
        logits.append(out[len(prompt) - 1:])                 # predicts response[0], response[1], ...
        targets.append(torch.tensor(response))
    expected = F.cross_entropy(torch.cat(logits), torch.cat(targets))
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)


class Recording(torch.nn.Module):
    """The model, keeping its last logits (and, after backward, their gradient)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, idx):
        self.logits = self.model(idx)
        self.logits.retain_grad()
        return self.logits


def test_prompt_and_padding_contribute_exactly_zero_gradient():
    recording = Recording(LlamaModel(TINY))
    x, y = collate(PAIRS, pad_id=PAD)
    masked_loss(recording, (x, y)).backward()
    grad = recording.logits.grad  # (B, T, vocab): what each position adds to the gradient
    masked = y == IGNORE_INDEX
    assert masked.sum() == 3 * 6 - 7 and (~masked).sum() == 7  # 7 response tokens in all
    assert torch.count_nonzero(grad[masked]) == 0             # exactly zero, not merely small
    assert torch.count_nonzero(grad[~masked]).item() == 7 * TINY.vocab_size


def test_what_the_prompt_and_padding_say_does_not_change_the_weights_gradient():
    """Change every masked target and every padding input: the loss and all gradients stay equal."""
    model = inject_lora(LlamaModel(TINY), r=2, alpha=4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("B.weight"):
                p.normal_()
    x, y = collate(PAIRS, pad_id=PAD)

    def loss_and_grads(inputs, targets):
        model.zero_grad()
        loss = masked_loss(model, (inputs, targets))
        loss.backward()
        return loss, [p.grad.clone() for p in model.parameters() if p.requires_grad]

    loss, grads = loss_and_grads(x, y)
    other_pad = torch.where(x == PAD, torch.full_like(x, 3), x)
    other_targets = torch.where(y == IGNORE_INDEX, torch.full_like(y, -7), y)  # another ignored value
    loss2, grads2 = loss_and_grads(other_pad, y)
    assert torch.equal(loss, loss2) and all(map(torch.equal, grads, grads2))
    model.zero_grad()
    loss3 = masked_loss(model, (x, other_targets), ignore_index=-7)
    loss3.backward()
    grads3 = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    assert torch.equal(loss, loss3) and all(map(torch.equal, grads, grads3))


def test_masked_loss_refuses_a_batch_with_nothing_to_learn():
    with pytest.raises(ValueError, match="no response token to learn from"):
        masked_loss(LlamaModel(TINY), collate([([1, 2, 3], [4])], pad_id=0, max_length=2))
    with pytest.raises(TypeError, match="the pair \\(inputs, targets\\) that collate returns"):
        masked_loss(LlamaModel(TINY), torch.zeros(2, 3, dtype=torch.long))


def test_response_loss_weighs_every_response_token_the_same():
    model = LlamaModel(TINY)
    loader = instruction_loader(PAIRS, batch_size=2, pad_id=PAD)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(2, 5), (1, 6)]
    with torch.no_grad():
        expected = masked_loss(model, collate(PAIRS, pad_id=PAD)).item()  # one batch of all pairs
    assert response_loss(model, loader) == pytest.approx(expected, rel=1e-6)
    assert model.training  # restored after evaluation


def test_instruction_loader_shuffles_reproducibly_and_checks_settings():
    def order(seed):
        loader = instruction_loader(PAIRS, batch_size=1, pad_id=PAD, shuffle=True,
                                    generator=torch.Generator().manual_seed(seed))
        return [b[0][0, 0].item() for b in loader]
    assert order(1) == order(1) and sorted(order(1)) == [1, 6, 8]
    with pytest.raises(ValueError, match="pad_id must be"):
        instruction_loader(PAIRS, batch_size=2, pad_id=-1)
    with pytest.raises(ValueError, match="pairs must be a non-empty list"):
        instruction_loader([], batch_size=2, pad_id=0)


def test_generate_replies_is_greedy_and_stops_at_the_end_token():
    model = LlamaModel(TINY).eval()
    prompts = [[1, 2, 3], [6]]
    replies = generate_replies(model, prompts, end_id=END, max_new_tokens=8, progress=False)
    for prompt, reply in zip(prompts, replies):
        ids = list(prompt)  # by hand: argmax of a full forward pass, no cache
        expected = []
        with torch.no_grad():
            for _ in range(8):
                next_id = model(torch.tensor([ids]))[0, -1].argmax().item()
                if next_id == END:
                    break
                expected.append(next_id)
                ids.append(next_id)
        assert reply == expected
    # An end token that comes at once gives an empty reply.
    with torch.no_grad():
        first = model(torch.tensor([[1, 2, 3]]))[0, -1].argmax().item()
    assert generate_replies(model, [[1, 2, 3]], end_id=first, progress=False) == [[]]
