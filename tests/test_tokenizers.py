"""The character tokenizer and GPT-2's BPE tokenizer (tiktoken, read offline from TIKTOKEN_CACHE_DIR)."""

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry
import torch

from gptcourse.tokenizers import (
    END_OF_TEXT,
    GPT2_FILES,
    CharTokenizer,
    Tokenizer,
    TokenizerUnavailableError,
    gpt2_tokenizer,
    text_to_token_ids,
    tiktoken_cache_dir,
    token_ids_to_text,
)

KOREAN = "오늘은 날씨가 좋아서 공원에 갔어요."


# --- CharTokenizer ------------------------------------------------------------------------------
def test_vocabulary_is_sorted_and_stable():
    tok = CharTokenizer("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 8
    # the same characters in another order give the same ids
    assert CharTokenizer("dlrow olleh").stoi == tok.stoi


def test_encode_decode_round_trip():
    tok = CharTokenizer("hello world")
    ids = tok.encode("hello")
    assert ids == [3, 2, 4, 4, 5]
    assert tok.decode(ids) == "hello"
    assert tok.decode(torch.tensor(ids)) == "hello"
    assert tok.decode(np.array(ids)) == "hello"  # NumPy integers count as ids too


def test_korean_sentence_round_trip():
    tok = CharTokenizer(KOREAN)
    assert tok.decode(tok.encode(KOREAN)) == KOREAN
    assert tok.vocab_size == len(set(KOREAN))


def test_unknown_characters_raise_and_are_listed():
    tok = CharTokenizer("hello world")
    with pytest.raises(ValueError, match=r"2 character\(s\) that are not in the vocabulary: \['!', 'H'\]"):
        tok.encode("Hello world!")


def test_empty_text_cannot_build_a_vocabulary():
    with pytest.raises(ValueError, match="text is empty"):
        CharTokenizer("")


def test_text_must_be_a_string():
    with pytest.raises(TypeError, match="text must be a str, got list"):
        CharTokenizer(["a", "b"])
    with pytest.raises(TypeError, match="text must be a str"):
        CharTokenizer("ab").encode(b"ab")


@pytest.mark.parametrize("ids", [[0, 99], [-1], [True], [1.0]])
def test_decode_rejects_ids_outside_the_vocabulary(ids):
    with pytest.raises(ValueError, match=r"not integer ids in 0\.\.7"):
        CharTokenizer("hello world").decode(ids)


def test_decode_rejects_a_batch():
    with pytest.raises(ValueError, match="ids must be 1-D"):
        CharTokenizer("ab").decode(torch.zeros(2, 3, dtype=torch.long))


def test_from_vocab_restores_the_same_ids():
    tok = CharTokenizer("the quick brown fox")
    again = CharTokenizer.from_vocab(tok.chars)
    assert again.chars == tok.chars and again.stoi == tok.stoi
    assert again.encode("fox") == tok.encode("fox")


def test_from_vocab_keeps_the_saved_order():
    tok = CharTokenizer.from_vocab(["b", "a", "c"])
    assert tok.encode("abc") == [1, 0, 2]
    assert CharTokenizer.from_vocab("bac").chars == ["b", "a", "c"]


@pytest.mark.parametrize(
    ("chars", "match"),
    [([], "chars is empty"), (["a", "bc"], "single characters"), (["a", "b", "a"], r"more than once: \['a'\]")],
)
def test_from_vocab_bad_vocabulary(chars, match):
    with pytest.raises(ValueError, match=match):
        CharTokenizer.from_vocab(chars)


def test_repr():
    assert repr(CharTokenizer("abc")) == "CharTokenizer(vocab_size=3)"


# --- GPT-2 BPE ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


def test_gpt2_known_ids(gpt2):
    assert gpt2.n_vocab == 50257
    assert gpt2.encode("Hello, world") == [15496, 11, 995]
    assert gpt2.encode("Every effort moves you") == [6109, 3626, 6100, 345]


def test_text_to_token_ids_allows_end_of_text(gpt2):
    ids = text_to_token_ids("Hello<|endoftext|>world", gpt2)
    assert ids.shape == (1, 3) and ids.dtype == torch.long
    assert ids[0, 1].item() == 50256
    assert token_ids_to_text(ids, gpt2) == "Hello<|endoftext|>world"


def test_token_ids_round_trip_both_tokenizers(gpt2):
    text = "Every effort moves you"
    assert text_to_token_ids(text, gpt2).tolist() == [[6109, 3626, 6100, 345]]
    char = CharTokenizer(text)
    ids = text_to_token_ids(text, char)
    assert ids.shape == (1, len(text))
    assert token_ids_to_text(ids, char) == text
    assert token_ids_to_text(ids[0], char) == text  # (T,) works as well as (1, T)
    assert token_ids_to_text([6109, 3626], gpt2) == "Every effort"  # and a plain list


def test_every_course_tokenizer_offers_one_interface(gpt2):
    from gptcourse.bpe import BPETokenizer

    char = CharTokenizer("hello world")
    bpe = BPETokenizer({(104, 101): 256}, special_tokens={END_OF_TEXT: 257})
    for tok in (char, bpe, gpt2):
        assert isinstance(tok, Tokenizer), tok
        ids = tok.encode_ordinary("hello")
        assert tok.decode(ids) == "hello" and tok.decode_bytes(ids) == b"hello"
        assert tok.encode("hello") == ids and 0 <= min(ids) <= max(ids) < tok.n_vocab
    assert char.n_vocab == char.vocab_size == 8 and bpe.n_vocab == 258
    assert char.special_tokens_set == set()
    assert bpe.special_tokens_set == gpt2.special_tokens_set == {END_OF_TEXT}
    # A special token's string is plain text to encode_ordinary, one token to encode when allowed.
    assert len(bpe.encode_ordinary(END_OF_TEXT)) == len(END_OF_TEXT)
    assert bpe.encode(END_OF_TEXT, allowed_special={END_OF_TEXT}) == [257]


def test_something_that_is_not_a_tokenizer_is_named(gpt2):
    class OnlyEncodeDecode:  # no n_vocab, no special tokens, no bytes
        def encode(self, text):
            return [0]

        def decode(self, ids):
            return ""

    with pytest.raises(TypeError, match=r"got OnlyEncodeDecode \(a tokenizer offers encode, "
                                        r"encode_ordinary, decode, decode_bytes, n_vocab"):
        text_to_token_ids("hi", OnlyEncodeDecode())


def test_text_to_token_ids_errors(gpt2):
    with pytest.raises(ValueError, match="text is empty"):
        text_to_token_ids("", gpt2)
    with pytest.raises(TypeError, match="text must be a str"):
        text_to_token_ids(None, gpt2)


def test_token_ids_to_text_errors(gpt2):
    with pytest.raises(ValueError, match="batch of 2 sequences; decode them one by one"):
        token_ids_to_text(torch.zeros(2, 3, dtype=torch.long), gpt2)
    with pytest.raises(ValueError, match=r"shape \(1, T\) or \(T,\)"):
        token_ids_to_text(torch.zeros(1, 2, 3, dtype=torch.long), gpt2)


def test_gpt2_offline_without_cache_names_tiktoken_cache_dir(monkeypatch, tmp_path):
    """No cached files and no network: one RuntimeError that says how to fix it."""
    requested = []

    def no_network(blobpath):
        requested.append(blobpath)
        raise ConnectionError("network blocked in this test")

    # tiktoken keeps loaded encodings in a module dict; a fresh one forces a real load,
    # and monkeypatch puts the real one back afterwards.
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="TIKTOKEN_CACHE_DIR") as info:
        gpt2_tokenizer()
    assert str(tmp_path) in str(info.value)
    assert "network blocked in this test" in str(info.value)
    assert requested and requested[0].startswith("https://")  # it really tried the download
    assert list(tmp_path.iterdir()) == []  # and left nothing half-written in the cache
    assert tiktoken.registry.ENCODINGS == {}  # the failed encoding was not cached


def _cache_with_a_damaged_file(tmp_path, damage):
    """A copy of the shared tiktoken cache with GPT-2's vocab.bpe damaged (the shared copy untouched)."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    for url in GPT2_FILES:
        name = hashlib.sha1(url.encode()).hexdigest()
        shutil.copyfile(Path(os.environ["TIKTOKEN_CACHE_DIR"]) / name, cache / name)
    damaged = cache / hashlib.sha1(next(iter(GPT2_FILES)).encode()).hexdigest()
    damaged.write_bytes(damage(damaged.read_bytes()))
    return cache, damaged


@pytest.mark.parametrize("damage", [
    lambda data: data[:100] + bytes([data[100] ^ 0x01]) + data[101:],  # one flipped byte
    lambda data: data[: len(data) // 2],                               # cut short
], ids=["flipped-byte", "truncated"])
def test_corrupt_tokenizer_cache_is_named_removed_and_restorable(tmp_path, monkeypatch, damage):
    cache, damaged = _cache_with_a_damaged_file(tmp_path, damage)

    def no_network(blobpath):
        raise ConnectionError("network blocked in this test")

    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    with pytest.raises(TokenizerUnavailableError,
                       match=f"file {re.escape(str(damaged))} was corrupt .* and has been removed. "
                             f"Online, it downloads again on the next use; offline, copy the file back"):
        gpt2_tokenizer()
    assert not damaged.exists()


def test_corrupt_tokenizer_cache_downloads_again_when_online(tmp_path, monkeypatch):
    cache, damaged = _cache_with_a_damaged_file(tmp_path, lambda data: data[:-10])
    good = (Path(os.environ["TIKTOKEN_CACHE_DIR"]) / damaged.name).read_bytes()
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setattr(tiktoken.load, "read_file", lambda blobpath: good)  # a working download
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    assert gpt2_tokenizer().n_vocab == 50257
    assert damaged.read_bytes() == good


def test_text_to_token_ids_with_a_bpe_tokenizer_with_or_without_special_tokens():
    from gptcourse.bpe import BPETokenizer

    plain = BPETokenizer({(104, 105): 256})  # no special tokens at all: used to be refused
    assert text_to_token_ids("hi!", plain).tolist() == [[256, 33]]
    # Without an end-of-text token, its string is only characters.
    assert token_ids_to_text(text_to_token_ids("hi<|endoftext|>", plain), plain) == "hi<|endoftext|>"
    with_eot = BPETokenizer({(104, 105): 256}, special_tokens={END_OF_TEXT: 257})
    assert text_to_token_ids("hi<|endoftext|>", with_eot).tolist() == [[256, 257]]


def test_from_vocab_refuses_what_is_not_a_list_of_characters():
    for chars in (None, 5, b"ab"):
        with pytest.raises(TypeError, match="chars must be the saved vocabulary"):
            CharTokenizer.from_vocab(chars)


def test_char_decode_of_a_single_int_is_a_clear_error():
    with pytest.raises(TypeError, match="ids must be a list or 1-D tensor"):
        CharTokenizer("ab").decode(5)


def test_loading_gpt2_leaves_the_environment_as_it_was(monkeypatch, tmp_path):
    """tiktoken reads its cache folder from the environment only while gpt2_tokenizer loads it."""
    cache = Path(os.environ["TIKTOKEN_CACHE_DIR"])
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # a real load, not tiktoken's copy
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setenv("GPTCOURSE_DATA_DIR", str(tmp_path))
    (tmp_path / "tiktoken-cache").symlink_to(cache)  # the default: beside the course data
    before = dict(os.environ)
    assert tiktoken_cache_dir() == tmp_path / "tiktoken-cache"
    assert gpt2_tokenizer().n_vocab == 50257
    assert dict(os.environ) == before
