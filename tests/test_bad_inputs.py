"""Issue 14's bad inputs across the API: each gets a clear error naming the argument and the fix."""

import math

import numpy as np
import pytest
import torch

from gptcourse.config import GPTConfig
from gptcourse.data import create_dataloader, get_batch, load_text, train_val_split
from gptcourse.generate import generate, generate_text
from gptcourse.kvcache import generate_cached
from gptcourse.model import GPTModel
from gptcourse.tokenizers import CharTokenizer, gpt2_tokenizer, text_to_token_ids, token_ids_to_text
from gptcourse.train import TrainSettings, train

CFG = GPTConfig(vocab_size=11, context_length=8, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.0)
DATA = torch.arange(100) % 11
TOK = CharTokenizer("hello world")
PROMPT = torch.zeros(1, 3, dtype=torch.long)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


@pytest.mark.parametrize("call, error, message", [
    (lambda m: TOK.decode(None), TypeError, r"ids must be a list or 1-D tensor of token ids, got None"),
    (lambda m: text_to_token_ids("hello", None), TypeError,
     r"tokenizer must be a CharTokenizer or GPT-2's tokenizer \(gpt2_tokenizer\(\)\), got NoneType"),
    (lambda m: token_ids_to_text(torch.tensor([1.0, 2.0]), TOK), TypeError,
     r"ids must hold integer token ids, got dtype torch.float32; convert with ids.long\(\)"),
    (lambda m: token_ids_to_text(torch.tensor([-1, 2]), TOK), ValueError,
     r"ids must be token ids in 0..7 .*got \[-1\]"),
    (lambda m: get_batch(DATA, 4, 2, device="gpu0"), ValueError,
     r"device must be a device such as 'cpu', 'cuda', 'cuda:0' or 'mps', got 'gpu0'"),
    (lambda m: get_batch(DATA, 4, 2, generator=42), TypeError,
     r"generator must be None or a torch.Generator, got 42; make one with "
     r"torch.Generator\(\).manual_seed\(42\)"),
    (lambda m: train_val_split(None), TypeError, r"data must be a sequence to split .*got NoneType"),
    (lambda m: load_text(None), TypeError,
     r"source must be 'tinyshakespeare' or 'korean-constitution' or the path of a text file, got None"),
    (lambda m: create_dataloader(DATA[:20], 4, 4, batch_size=10), ValueError,
     r"batch_size=10 is larger than the 4 window\(s\) .*use batch_size <= 4"),
    (lambda m: generate(m, PROMPT, 20, context_size=100), ValueError,
     r"context_size must be an int from 1 to context_length=8, got 100"),
    (lambda m: generate(m, PROMPT, 2, temperature=1.0, generator=42), TypeError,
     r"generator must be None or a torch.Generator, got 42"),
    (lambda m: generate_text(m, TOK, "he", 2, seed="abc"), TypeError,
     r"seed must be None or an int >= 0, got 'abc'"),
    (lambda m: generate_cached(m, PROMPT, True), TypeError, r"max_new_tokens must be an int >= 0, got True"),
    (lambda m: TrainSettings(lr=math.nan), ValueError, r"lr must be a positive number, got nan"),
    (lambda m: TrainSettings(lr=math.inf), ValueError, r"lr must be a positive number, got inf"),
    (lambda m: TrainSettings(grad_clip=math.nan), ValueError, r"grad_clip must be a number >= 0, got nan"),
    (lambda m: TrainSettings(grad_clip=math.inf), ValueError, r"grad_clip must be a number >= 0, got inf"),
    (lambda m: TrainSettings(beta1="0.9"), TypeError, r"beta1 must be a number in \[0, 1\), got '0.9'"),
    (lambda m: train(m, DATA, DATA, TrainSettings(max_iters=1, warmup_iters=0, block_size=16),
                     progress=False), ValueError,
     r"settings.block_size=16 is larger than the model's context_length=8: use block_size <= 8"),
], ids=lambda v: "" if callable(v) or isinstance(v, type) else None)
def test_bad_input_gets_a_clear_message(model, call, error, message):
    with pytest.raises(error, match=message):
        call(model)


def test_gpt2_decode_refuses_ids_outside_its_vocabulary():
    tok = gpt2_tokenizer()
    for ids in ([50257], [-3]):
        with pytest.raises(ValueError, match=r"ids must be token ids in 0..50256 .*got \[" + str(ids[0])):
            token_ids_to_text(torch.tensor(ids), tok)
    with pytest.raises(TypeError, match="ids must hold integer token ids"):
        token_ids_to_text(torch.tensor([1.5]), tok)


def test_numpy_integers_are_accepted_where_ints_are(model):
    assert GPTConfig(vocab_size=np.int64(65)).vocab_size == 65
    assert generate(model, PROMPT, np.int64(2)).shape == (1, 5)
    assert generate_cached(model, PROMPT, np.int64(2)).shape == (1, 5)


def test_cached_generation_refuses_a_seed_in_place_of_a_generator(model):
    with pytest.raises(TypeError, match=r"generator must be None or a torch.Generator, got 42; "
                                        r"make one with torch.Generator\(\).manual_seed\(42\)"):
        generate_cached(model, PROMPT, 2, temperature=1.0, generator=42)
