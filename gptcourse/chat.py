"""Chatting with a model: the chat template, streamed generation with a KV cache, a conversation.

An instruction-tuned model such as SmolLM2-135M-Instruct was trained on conversations written in
one fixed layout, its *chat template* (ChatML here):

    <|im_start|>system\\nYou are ...<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n

`<|im_start|>` and `<|im_end|>` are special tokens: one id each, which no typed text can produce.
The model writes the assistant's turn and ends it with `<|im_end|>`, which is where we stop.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator, Sequence

import torch

from .generate import token_sampler
from .kvcache import KVCache, forward_with_cache
from .llama import LlamaModel
from .model import GPTModel
from .validate import require_int, require_optional_int

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# What SmolLM2's template puts first when a conversation has no system message of its own.
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
ROLES = ("system", "user", "assistant")


def check_messages(messages: Sequence[dict]) -> list[dict]:
    """A list of {"role": ..., "content": ...} dicts, roles from ROLES, contents strings."""
    if isinstance(messages, (str, dict)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got "
                        f"{type(messages).__name__}; e.g. [{{'role': 'user', 'content': 'Hi'}}]")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ValueError(f"messages[{i}] must be a dict with exactly the keys 'role' and "
                             f"'content', got {message!r}")
        if message["role"] not in ROLES:
            raise ValueError(f"messages[{i}] has role {message['role']!r}; use one of {ROLES}")
        if not isinstance(message["content"], str):
            raise TypeError(f"messages[{i}]['content'] must be a str, got "
                            f"{type(message['content']).__name__}")
    return list(messages)


def _with_system(messages: Sequence[dict]) -> list[dict]:
    messages = check_messages(messages)
    if messages and messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": DEFAULT_SYSTEM}, *messages]


def render_chat(messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    """The conversation as the text of SmolLM2's chat template."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in _with_system(messages))
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def chat_token_ids(messages: Sequence[dict], tokenizer, add_generation_prompt: bool = True) -> list[int]:
    """render_chat's text as token ids: the markers by their ids, the rest as ordinary text.

    Encoding the contents as ordinary text means that a user who types "<|im_end|>" gets those
    characters, not the control token (which would let them end the turn for the model).
    """
    start, end = tokenizer.special_tokens[IM_START], tokenizer.special_tokens[IM_END]
    ids: list[int] = []
    for m in _with_system(messages):
        ids += [start, *tokenizer.encode_ordinary(f"{m['role']}\n{m['content']}"), end,
                *tokenizer.encode_ordinary("\n")]
    if add_generation_prompt:
        ids += [start, *tokenizer.encode_ordinary("assistant\n")]
    return ids


def _next_logits(model: torch.nn.Module, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """(B, vocab) logits after ids (B, T), which follow the cached tokens; extends the cache."""
    if isinstance(model, LlamaModel):
        return model(ids, cache=cache, last_only=True)[:, -1]
    return forward_with_cache(model, ids, cache, last_only=True)[:, -1]


@torch.no_grad()
def stream_tokens(model: torch.nn.Module, prompt_ids: Sequence[int], max_new_tokens: int,
                  temperature: float = 0.0, top_k: int | None = None,
                  stop_ids: Iterable[int] = (), generator: torch.Generator | None = None) -> Iterator[int]:
    """Yield new token ids one at a time, each step running the model on one token (KV cache).

    Stops after `max_new_tokens`, or after yielding a token of `stop_ids`. Works with LlamaModel
    and the course's GPTModel. When the context is full, the cache restarts from the last three
    quarters of the context (a full forward pass), as chapter 7's generate_cached does.
    """
    if not isinstance(model, (LlamaModel, GPTModel)):
        raise TypeError(f"model must be a LlamaModel or a GPTModel, got {type(model).__name__}")
    cfg = model.cfg
    ids = list(prompt_ids.tolist() if isinstance(prompt_ids, torch.Tensor) else prompt_ids)
    if not ids:
        raise ValueError("prompt_ids is empty: give at least one token to start from")
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < cfg.vocab_size]
    if bad:
        raise ValueError(f"prompt_ids must be token ids in 0..{cfg.vocab_size - 1}, got {bad[:5]}")
    require_int("max_new_tokens", max_new_tokens, low=0)
    sample = token_sampler(temperature, top_k, generator, cfg.vocab_size)  # checked once, here
    stop = set(stop_ids)
    if max_new_tokens == 0:
        return
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        context = cfg.context_length
        keep = max(1, context * 3 // 4)
        cache = KVCache(cfg.n_layers, capacity=min(context, len(ids) + max_new_tokens))
        window = ids[-context:]
        logits = _next_logits(model, torch.tensor([window], device=device), cache)
        for step in range(max_new_tokens):
            next_id = int(sample(logits))
            ids.append(next_id)
            yield next_id
            if next_id in stop or step == max_new_tokens - 1:
                return
            if cache.length == cache.capacity:  # full: restart from the most recent tokens
                cache = KVCache(cfg.n_layers, capacity=context)
                logits = _next_logits(model, torch.tensor([ids[-keep:]], device=device), cache)
            else:
                logits = _next_logits(model, torch.tensor([[next_id]], device=device), cache)
    finally:
        model.train(was_training)


def token_bytes(tokenizer, token_id: int) -> bytes:
    """The bytes one token stands for, from any of the course's tokenizers (tokenizers.Tokenizer)."""
    return tokenizer.decode_bytes([token_id])


def stream_text(token_ids: Iterable[int], tokenizer, stop_ids: Iterable[int] = ()) -> Iterator[str]:
    """Text as the tokens come. A character may span several tokens (a Hangul syllable is 3
    bytes): an incremental UTF-8 decoder holds back the bytes of a character not yet complete.
    Tokens in `stop_ids` are not shown."""
    stop = set(stop_ids)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token_id in token_ids:
        if token_id in stop:
            continue
        text = decoder.decode(token_bytes(tokenizer, token_id))
        if text:
            yield text
    rest = decoder.decode(b"", final=True)
    if rest:
        yield rest


class Chat:
    """A multi-turn conversation: each `say` adds the user's message and the model's reply."""

    def __init__(self, model: LlamaModel, tokenizer, system: str | None = None,
                 max_new_tokens: int = 200, temperature: float = 0.0, top_k: int | None = None,
                 seed: int | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.messages: list[dict] = [] if system is None else [{"role": "system", "content": system}]
        check_messages(self.messages)
        self.max_new_tokens = require_int("max_new_tokens", max_new_tokens, low=1)
        self.temperature, self.top_k = temperature, top_k
        require_optional_int("seed", seed, low=0, hint=" (None: not seeded)")
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.end_id = tokenizer.special_tokens[IM_END]
        self.last_reply_ids: list[int] = []  # the last finished reply's tokens, its end token included

    def stream(self, text: str) -> Iterator[str]:
        """Add the user's `text`, then yield the reply's text as it is generated."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        prompt = chat_token_ids([*self.messages, {"role": "user", "content": text}], self.tokenizer)
        reply_ids: list[int] = []
        tokens = stream_tokens(self.model, prompt, self.max_new_tokens, self.temperature, self.top_k,
                               stop_ids=[self.end_id], generator=self.generator)
        yield from stream_text(_recorded(tokens, reply_ids), self.tokenizer, [self.end_id])
        # Only a finished exchange joins the history (an interrupted one leaves no half turn).
        self.last_reply_ids = reply_ids
        self.messages += [{"role": "user", "content": text},
                          {"role": "assistant", "content": self.tokenizer.decode(
                              [i for i in reply_ids if i != self.end_id])}]

    def say(self, text: str) -> str:
        """Add the user's `text` and return the model's whole reply."""
        return "".join(self.stream(text))


def _recorded(tokens: Iterable[int], into: list[int]) -> Iterator[int]:
    for token in tokens:
        into.append(token)
        yield token
