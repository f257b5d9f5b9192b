"""The chat template against transformers' rendering of the same GGUF file, and cached generation."""

from __future__ import annotations

import pytest
import torch

from gptcourse.chat import (
    DEFAULT_SYSTEM,
    Chat,
    chat_token_ids,
    check_messages,
    render_chat,
    stream_text,
    stream_tokens,
)
from gptcourse.config import GPTConfig
from gptcourse.generate import generate
from gptcourse.model import GPTModel

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
     {"role": "user", "content": "Et 3+3 ?\n\nThanks 😊"}],
    [],
]




@pytest.mark.parametrize("add_prompt", [True, False])
def test_render_equals_the_templates_own_rendering(hf_tokenizer, add_prompt):
    for messages in CONVERSATIONS:
        if not messages:
            continue  # the template needs at least one message to place its default system line
        expected = hf_tokenizer.apply_chat_template(messages, tokenize=False,
                                                    add_generation_prompt=add_prompt)
        assert render_chat(messages, add_generation_prompt=add_prompt) == expected


def test_ids_equal_the_templates_tokens(smol, hf_tokenizer):
    _, tokenizer = smol
    for messages in CONVERSATIONS[:3]:
        expected = hf_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        expected = expected["input_ids"] if hasattr(expected, "keys") else expected
        assert chat_token_ids(messages, tokenizer) == list(expected)
        assert tokenizer.decode(chat_token_ids(messages, tokenizer)) == render_chat(messages)


def test_typed_markers_stay_text(smol):
    _, tokenizer = smol
    ids = chat_token_ids([{"role": "user", "content": "<|im_end|>"}], tokenizer)
    end = tokenizer.special_tokens["<|im_end|>"]
    assert ids.count(end) == 2  # the system turn's and the user turn's own, not the typed one


def test_default_system_message():
    text = render_chat([{"role": "user", "content": "Hi"}])
    assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_cached_equals_uncached_for_smollm2(smol):
    model, tokenizer = smol
    prompt = chat_token_ids([{"role": "user", "content": "What is the capital of France?"}], tokenizer)
    cached = list(stream_tokens(model, prompt, 12))
    uncached = generate(model, torch.tensor([prompt]), 12)[0, len(prompt):].tolist()
    assert cached == uncached
    sampled = [list(stream_tokens(model, prompt, 12, temperature=0.8, top_k=40,
                                  generator=torch.Generator().manual_seed(7))) for _ in range(2)]
    reference = generate(model, torch.tensor([prompt]), 12, temperature=0.8, top_k=40,
                         generator=torch.Generator().manual_seed(7))[0, len(prompt):].tolist()
    assert sampled[0] == sampled[1] == reference


def test_cached_equals_uncached_for_the_course_gpt():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50, context_length=16, emb_dim=32, n_heads=4, n_layers=2,
                               drop_rate=0.0)).eval()
    prompt = [3, 1, 4, 1, 5]
    cached = list(stream_tokens(model, prompt, 10))
    assert cached == generate(model, torch.tensor([prompt]), 10)[0, 5:].tolist()
    # Past the context the cache restarts from the most recent tokens and goes on.
    long = list(stream_tokens(model, prompt, 40))
    assert len(long) == 40 and long[:10] == cached


def test_chat_stops_at_the_end_of_turn_and_remembers(smol):
    model, tokenizer = smol
    chat = Chat(model, tokenizer, max_new_tokens=40)
    reply = chat.say("What is the capital of France? Answer in one word.")
    assert "Paris" in reply
    assert chat.last_reply_ids[-1] == tokenizer.special_tokens["<|im_end|>"]
    assert [m["role"] for m in chat.messages] == ["user", "assistant"]
    second = chat.say("And of Italy?")
    assert second and len(chat.messages) == 4


def test_an_interrupted_reply_leaves_no_half_turn(smol):
    model, tokenizer = smol
    chat = Chat(model, tokenizer, max_new_tokens=40)
    pieces = chat.stream("Tell me a long story.")
    next(pieces)
    pieces.close()  # what Ctrl-C does to the generator
    assert chat.messages == []


def test_stream_text_holds_back_half_characters(smol):
    _, tokenizer = smol
    text = "한국어 텍스트와 emoji 🤗"
    ids = tokenizer.encode(text)
    pieces = list(stream_text(ids, tokenizer))
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_stream_text_with_the_character_and_gpt2_tokenizers():
    from gptcourse.tokenizers import CharTokenizer, gpt2_tokenizer

    text = "한국어 텍스트와 emoji 🤗"
    for tokenizer in (CharTokenizer(text), gpt2_tokenizer()):
        pieces = list(stream_text(tokenizer.encode_ordinary(text), tokenizer))
        assert "".join(pieces) == text
        assert all("\ufffd" not in piece for piece in pieces)


@pytest.mark.parametrize("messages, message", [
    ("Hi", "list of"),
    ([{"role": "bot", "content": "x"}], "role 'bot'"),
    ([{"role": "user"}], "exactly the keys"),
    ([{"role": "user", "content": 3}], "must be a str"),
])
def test_bad_messages(messages, message):
    with pytest.raises((TypeError, ValueError), match=message):
        check_messages(messages)


def test_bad_generation_arguments(smol):
    model, _ = smol
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        list(stream_tokens(model, [], 5))
    with pytest.raises(ValueError, match="0..49151"):
        list(stream_tokens(model, [1, 50_000], 5))
    with pytest.raises(TypeError, match="LlamaModel or a GPTModel"):
        list(stream_tokens(torch.nn.Linear(2, 2), [1], 5))
