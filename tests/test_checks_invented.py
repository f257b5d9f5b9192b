"""Mistakes invented for this file, one or more in each class the checkers read from an output's
signature or an exception (none of them is in a checker's own table of mistakes): each is planted
into a working solution, caught, and named."""

import math

import torch

from gptcourse.attention import causal_mask
from gptcourse.bigram import BigramLanguageModel
from gptcourse.checks.attention import check_causal_weights, check_split_merge
from gptcourse.checks.attention import merge_heads as ref_merge
from gptcourse.checks.bigram import check_bigram_model, check_generate
from gptcourse.checks.blocks import check_transformer_block
from gptcourse.checks.bpe import check_decode
from gptcourse.checks.data import check_get_batch, check_sliding_window_dataset
from gptcourse.checks.layers import check_gelu, check_layernorm
from gptcourse.data import SlidingWindowDataset
from gptcourse.layers import LayerNorm, TransformerBlock


def named(result, *fragments: str) -> bool:
    text = " | ".join(result.problems)
    return not result.passed and all(f in text for f in fragments)


# --- a constant factor, named by the size it equals; a sign ----------------------------------------
def test_layernorm_scaled_by_the_square_root_of_the_width_is_named():
    class Scaled(LayerNorm):
        def forward(self, x):
            return super().forward(x) / math.sqrt(x.size(-1))

    assert named(check_layernorm(Scaled), "1 / sqrt(emb_dim)")


def test_layernorm_with_the_mean_subtracted_the_wrong_way_is_named():
    class Backwards(LayerNorm):
        def forward(self, x):
            mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
            return self.scale * (mean - x) / torch.sqrt(var + self.eps) + self.shift

    assert named(check_layernorm(Backwards), "the sign is flipped")


def test_layernorm_with_the_standard_deviation_as_the_variance_is_named():
    class StdAsVar(LayerNorm):
        def forward(self, x):
            std = x.std(-1, keepdim=True, unbiased=False)
            return self.scale * (x - x.mean(-1, keepdim=True)) / torch.sqrt(std + self.eps) + self.shift

    assert named(check_layernorm(StdAsVar), "the standard deviation is used as the variance")


# --- a coefficient slip in GELU's bracket ----------------------------------------------------------
def _inner(x):
    return torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))


def test_gelu_bracket_slips_are_named():
    assert named(check_gelu(lambda x: 0.5 * x * (1 - _inner(x))), "subtracts the tanh")
    assert named(check_gelu(lambda x: 0.5 * x * (2 + _inner(x))), "a coefficient outside the tanh")


# --- two layers in the wrong order, one layer used twice -----------------------------------------
class FeedForwardFirst(TransformerBlock):
    def forward(self, x):
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x + self.drop_shortcut(self.att(self.norm1(x)))


class Norm1Twice(TransformerBlock):
    def forward(self, x):
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        return x + self.drop_shortcut(self.ff(self.norm1(x)))


class NoNorms(TransformerBlock):
    def forward(self, x):
        x = x + self.drop_shortcut(self.att(x))
        return x + self.drop_shortcut(self.ff(x))


def test_block_layers_swapped_or_reused_are_named():
    assert named(check_transformer_block(FeedForwardFirst), "the two halves are in the wrong order")
    assert named(check_transformer_block(Norm1Twice), "norm1 is used for both halves")
    assert named(check_transformer_block(NoNorms), "the LayerNorms are never applied")


# --- a transposed output ---------------------------------------------------------------------------
def test_causal_weights_transposed_is_named():
    def transposed(scores):
        T = scores.size(-1)
        weights = torch.softmax(scores.masked_fill(causal_mask(T) == 0, float("-inf")), dim=-1)
        return weights.transpose(-2, -1)

    assert named(check_causal_weights(transposed), "transposed")


# --- shapes: cat for stack, a loop one short, one start for the whole batch -----------------------
def test_split_heads_joined_with_cat_is_named():
    def split_cat(x, num_heads):
        return torch.cat(x.chunk(num_heads, dim=-1), dim=1)  # (B, nh * T, hd): heads end to end

    assert named(check_split_merge(split_cat, ref_merge), "torch.cat joined the pieces")


def test_generate_one_short_is_named():
    def one_short(model, idx, max_new_tokens, generator=None):
        for _ in range(max_new_tokens - 1):
            logits, _ = model(idx)
            probs = torch.softmax(logits[:, -1, :], dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, 1, generator=generator)), dim=1)
        return idx

    assert named(check_generate(one_short), "dimension 1 is one short")


def test_get_batch_with_one_start_for_the_whole_batch_is_named():
    def one_window(data, block_size, batch_size, generator=None):
        i = int(torch.randint(len(data) - block_size, (1,), generator=generator))
        return data[i:i + block_size], data[i + 1:i + block_size + 1]

    assert named(check_get_batch(one_window), "dimension 0 of size 3 is missing",
                 "one start was used for the whole batch")


def test_bigram_logits_transposed_is_named():
    class Transposed(BigramLanguageModel):
        def forward(self, idx, targets=None):
            logits, loss = super().forward(idx, targets)
            return logits.transpose(1, 2), loss

    assert named(check_bigram_model(Transposed), "the dimensions are in the wrong order")


# --- raw exceptions from learner code end in a course diagnosis -----------------------------------
def test_a_class_used_where_an_object_is_needed_is_named():
    class ClassNotObject(TransformerBlock):
        def forward(self, x):
            x = x + self.att(LayerNorm.forward(x))  # the class, not self.norm1
            return x + self.ff(self.norm2(x))

    assert named(check_transformer_block(ClassNotObject), "called on the class, not on an object",
                 "missing 1 required positional argument")


def test_arange_bounds_in_the_wrong_order_are_named():
    class Backwards(SlidingWindowDataset):
        def __getitem__(self, i):
            start = self.starts[i]
            ids = torch.arange(start + 1, start)  # bounds swapped
            return ids, ids

    assert named(check_sliding_window_dataset(Backwards), "bounds in the wrong order")


def test_bytes_where_a_join_was_meant_is_named():
    def decode(ids, vocab):
        return bytes([vocab[i] for i in ids]).decode("utf-8", errors="replace")

    assert named(check_decode(decode), "b''.join")


def test_reading_a_global_instead_of_the_argument_is_named():
    notebook_data = torch.arange(5)  # a short tensor left over from an earlier cell

    def reads_global(data, block_size, batch_size, generator=None):
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        x = torch.stack([data[i:i + block_size] for i in starts])
        y = torch.stack([torch.stack([notebook_data[i + 1 + j] for j in range(block_size)])
                         for i in starts])
        return x, y

    assert named(check_get_batch(reads_global), "raised IndexError",
                 "not from a tensor defined elsewhere in the notebook")


# --- counts: one term left out, a per-block term counted once, a unit --------------------------------
def _count(cfg, *, drop_out_proj_bias=False, qkv_once=False):
    from gptcourse.checks.model import _reference_count

    d, L = cfg.emb_dim, cfg.n_layers
    n = _reference_count(cfg)
    if drop_out_proj_bias:
        n -= L * d
    if qkv_once:
        n -= (L - 1) * 3 * d * d
    return n


def test_param_count_terms_left_out_are_named():
    from gptcourse.checks.model import check_param_count

    assert named(check_param_count(lambda cfg: _count(cfg, drop_out_proj_bias=True)),
                 "the out_proj bias (emb_dim per block) is left out")
    assert named(check_param_count(lambda cfg: _count(cfg, qkv_once=True)),
                 "in every block but one: it repeats n_layers times")
    assert named(check_param_count(lambda cfg: _count(cfg) / 1e6), "in millions")


def test_flops_with_a_matmul_left_out_are_named():
    from gptcourse.checks.model import check_forward_flops
    from gptcourse.flops import forward_flops_per_token

    def no_out_proj(cfg, seq_len):
        return forward_flops_per_token(cfg, seq_len) - 2 * cfg.n_layers * cfg.emb_dim ** 2

    assert named(check_forward_flops(no_out_proj), "the out_proj matmul of every block is left out")


def test_number_signatures():
    from gptcourse.checks import number_signature

    assert "sign is flipped" in number_signature(-3.5, 3.5)
    assert "in thousands" in number_signature(12.5, 12_500)
    assert "base 2" in number_signature(math.log2(7), math.log(7))
    assert "sqrt(d)" in number_signature(8.0, 2.0, sizes={"d": 16})
    assert "one too many" in number_signature(31, 30)
    assert "the bias is left out" in number_signature(90, 100, terms={"the bias": 10})
    assert number_signature(37.0, 100.0) is None


def test_bigram_loss_in_another_base_or_scale_is_named():
    import torch.nn.functional as F

    class Bits(BigramLanguageModel):
        def forward(self, idx, targets=None):
            logits, loss = super().forward(idx, targets)
            return logits, None if loss is None else loss / math.log(2)

    class PerBatch(BigramLanguageModel):
        def forward(self, idx, targets=None):
            logits = self.token_embedding_table(idx)
            if targets is None:
                return logits, None
            B, T, C = logits.shape
            per_row = F.cross_entropy(logits.view(B * T, C), targets.view(B * T), reduction="sum") / B
            return logits, per_row  # summed over each row's T positions

    assert named(check_bigram_model(Bits), "base 2")
    assert named(check_bigram_model(PerBatch), "times T = 5")


# --- attention scaled by the wrong size ------------------------------------------------------------
def _scaled_head(divisor):
    from gptcourse.attention import Head

    class WrongScale(Head):
        def forward(self, x):
            T = x.size(1)
            q, k, v = self.query(x), self.key(x), self.value(x)
            scores = (q @ k.transpose(-2, -1)) / divisor(self)
            scores = scores.masked_fill(self.mask[:T, :T] == 0, float("-inf"))
            return self.dropout(torch.softmax(scores, dim=-1)) @ v

    return WrongScale


def test_head_scaled_by_another_size_is_named():
    from gptcourse.checks.head import check_head

    assert named(check_head(_scaled_head(lambda h: math.sqrt(h.context_length))),
                 "divided by sqrt(context_length)")
    assert named(check_head(_scaled_head(lambda h: h.context_length)), "divided by context_length")
    assert named(check_head(_scaled_head(lambda h: 1 / math.sqrt(h.head_size))),
                 "multiplied by sqrt(head_size)")


# --- a temperature applied twice -------------------------------------------------------------------
def test_sampling_with_the_temperature_applied_twice_is_named():
    from gptcourse.checks.sampling import check_sample_next

    def twice(logits, temperature=1.0, top_k=None, generator=None):
        if temperature == 0:
            return logits.argmax(dim=-1, keepdim=True)
        logits = logits / temperature / temperature
        if top_k is not None:
            kth = torch.topk(logits, top_k).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)

    assert named(check_sample_next(twice), "the temperature is applied twice")


# --- cached attention scaled by the width instead of the head size --------------------------------
def test_cached_attention_scaled_by_the_width_is_named():
    from gptcourse.checks.kvcache import _attention_variant, check_attention_with_cache

    def by_width(att, x, past_k, past_v):
        return _attention_variant(att, x, past_k, past_v, scale=math.sqrt(att.d_out))

    assert named(check_attention_with_cache(by_width), "divided by sqrt(emb_dim)")
