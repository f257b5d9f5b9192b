"""The chapter 2 checkers, tested three ways: the reference passes, a stub fails, and each
mistake a checker claims to diagnose is planted and named."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from checker_results import assert_diagnosed, problems_of

from gptcourse.bigram import BigramLanguageModel, bigram_counts, bigram_nll, bigram_probs
from gptcourse.checks.bigram import check_bigram_model, check_counting_nll, check_generate


# --- check_counting_nll --------------------------------------------------------------------------
def counting_nll(train_ids, eval_ids, vocab_size, smoothing=1.0):
    return bigram_nll(bigram_probs(bigram_counts(train_ids, vocab_size), smoothing), eval_ids)


def make_counting(*, smoothing=None, sign=1.0, reduce="mean", transpose=False, dim=1,
                  keepdim=True, log=torch.log, count_eval=False):
    """A learner's counting_nll with one planted mistake."""

    def fn(train_ids, eval_ids, vocab_size, smoothing_arg=1.0, **kwargs):
        k = kwargs.get("smoothing", smoothing_arg) if smoothing is None else smoothing
        counts = torch.zeros(vocab_size, vocab_size)
        source = eval_ids if count_eval else train_ids
        for a, b in zip(source.tolist(), source[1:].tolist()):
            counts[a, b] += 1
        if transpose:
            counts = counts.T
        counts = counts + k
        probs = counts / counts.sum(dim, keepdim=keepdim)
        logp = log(probs[eval_ids[:-1], eval_ids[1:]])
        total = logp.sum() if reduce == "sum" else logp.mean()
        return -sign * total.item()

    return fn


def test_counting_reference_passes(capsys):
    result = check_counting_nll(counting_nll)
    assert result.passed, problems_of(result)
    assert "✅" in capsys.readouterr().out


def test_counting_loop_version_passes():
    assert check_counting_nll(make_counting()).passed


def test_counting_tensor_result_passes():
    def as_tensor(*args, **kwargs):
        return torch.tensor(counting_nll(*args, **kwargs))

    assert check_counting_nll(as_tensor).passed


def test_counting_stub_fails():
    def stub(train_ids, eval_ids, vocab_size, smoothing=1.0):
        raise NotImplementedError

    assert_diagnosed(check_counting_nll(stub), "not written yet")


@pytest.mark.parametrize(
    "mistake, fragment",
    [
        (make_counting(smoothing=0.0), "log(0) = -inf"),
        (make_counting(count_eval=True), "the table was counted from eval_ids"),
        (make_counting(sign=-1.0), "sign is flipped"),
        (make_counting(reduce="sum"), "summed the log-probabilities"),
        (make_counting(transpose=True), "rows and columns are swapped"),
        (make_counting(dim=0), "columns were normalised"),
        (make_counting(keepdim=False), "Without keepdim=True"),
        (make_counting(log=torch.log2), "wrong base"),
        (make_counting(log=torch.log10), "wrong base (log10)"),
        (make_counting(smoothing=1.0), "smoothing seems fixed at 1"),
    ],
)
def test_counting_mistakes_are_diagnosed(mistake, fragment):
    assert_diagnosed(check_counting_nll(mistake), fragment)


def test_counting_wrong_return_types():
    assert_diagnosed(check_counting_nll(lambda *a, **k: torch.zeros(3)), "return one number")
    assert_diagnosed(check_counting_nll(lambda *a, **k: "2.4"), "return one number")


def test_counting_crash_is_one_line():
    def crashes(train_ids, eval_ids, vocab_size, smoothing=1.0):
        raise IndexError("index 5 is out of bounds")

    result = check_counting_nll(crashes)
    assert_diagnosed(result, "raised IndexError: an index runs past the end")
    assert_diagnosed(result, "(index 5 is out of bounds)")  # torch's own line is kept


# --- check_bigram_model --------------------------------------------------------------------------
def make_model(*, reshape=True, softmax_first=False, reduction="mean", reshape_targets=True,
               none_without_targets=True, flat_logits=False, softmax_logits=False, item=False,
               swap=False, linear=False):
    """A learner's bigram class with one planted mistake."""

    class Learner(nn.Module):
        def __init__(self, vocab_size):
            super().__init__()
            if linear:
                self.table = nn.Linear(vocab_size, vocab_size)
            else:
                self.table = nn.Embedding(vocab_size, vocab_size)

        def forward(self, idx, targets=None):
            logits = self.table(idx)  # (B, T, C)
            if softmax_logits:
                logits = F.softmax(logits, dim=-1)
            if targets is None and none_without_targets:
                return logits, None
            B, T, C = logits.shape
            flat = logits.view(B * T, C) if reshape else logits
            if softmax_first:
                flat = F.softmax(flat, dim=-1)
            tflat = targets.view(B * T) if reshape and reshape_targets else targets
            loss = F.cross_entropy(flat, tflat, reduction=reduction)
            if item:
                loss = loss.item()
            out_logits = logits.view(B * T, C) if flat_logits else logits
            return (loss, out_logits) if swap else (out_logits, loss)

    return Learner


def test_model_reference_passes(capsys):
    result = check_bigram_model(BigramLanguageModel)
    assert result.passed, problems_of(result)
    assert "❌" not in capsys.readouterr().out


def test_model_learner_version_passes():
    result = check_bigram_model(make_model())
    assert result.passed, problems_of(result)


def test_model_stub_fails():
    class Stub(nn.Module):
        def __init__(self, vocab_size):
            super().__init__()
            self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)

        def forward(self, idx, targets=None):
            raise NotImplementedError

    assert_diagnosed(check_bigram_model(Stub), "not written yet")


@pytest.mark.parametrize(
    "mistake, fragment",
    [
        (make_model(reshape=False), "Reshape first: logits.view(B*T, C)"),
        (make_model(softmax_first=True), "softmax was applied before F.cross_entropy"),
        (make_model(reduction="sum"), "the loss is summed"),
        (make_model(reshape_targets=False), "reshape them too, targets.view(B*T)"),
        (make_model(none_without_targets=False), "return (logits, None)"),
        (make_model(flat_logits=True), "came back flattened"),
        (make_model(softmax_logits=True), "passed through softmax"),
        (make_model(item=True), "no .item()"),
        (make_model(swap=True), "looks swapped"),
        (make_model(linear=True), "exactly one table nn.Embedding"),
    ],
)
def test_model_mistakes_are_diagnosed(mistake, fragment):
    assert_diagnosed(check_bigram_model(mistake), fragment)


# --- check_generate ------------------------------------------------------------------------------
def generate(model, idx, max_new_tokens, generator=None):
    for _ in range(max_new_tokens):
        logits, _ = model(idx)
        probs = F.softmax(logits[:, -1, :], dim=-1)
        idx = torch.cat((idx, torch.multinomial(probs, 1, generator=generator)), dim=1)
    return idx


def make_generate(*, pick="sample", append="cat", feed_back=True, position=-1, softmax=True,
                  softmax_dim=-1, pass_generator=True, last_only=True):
    """A learner's generate with one planted mistake."""

    def fn(model, idx, max_new_tokens, generator=None):
        out = idx
        for _ in range(max_new_tokens):
            logits, _ = model(out if feed_back else idx)
            scores = logits[:, position, :] if last_only else logits
            if pick == "argmax":
                nxt = scores.argmax(dim=-1, keepdim=True)
            else:
                probs = F.softmax(scores, dim=softmax_dim) if softmax else scores
                nxt = torch.multinomial(probs, 1, generator=generator if pass_generator else None)
            if append == "cat":
                out = torch.cat((out, nxt), dim=1)
            elif append == "hstack":  # correct, written differently
                out = torch.hstack([out, nxt])
            elif append == "dim0":
                out = torch.cat((out, nxt), dim=0)
            elif append == "squeezed":
                out = torch.cat((out, nxt.squeeze(-1)), dim=1)
            elif append == "replace":
                out = nxt
            elif append == "new_only":
                out = nxt if out is idx else torch.cat((out, nxt), dim=1)
            # append == "forget": the new token is dropped
        return out

    return fn


def test_generate_reference_function_passes():
    result = check_generate(generate)
    assert result.passed, problems_of(result)


def test_generate_package_method_passes():
    result = check_generate(lambda m, idx, n, generator=None: m.generate(idx, n, generator=generator))
    assert result.passed, problems_of(result)


def test_generate_written_differently_passes():
    result = check_generate(make_generate(append="hstack"))
    assert result.passed, problems_of(result)


def test_generate_stub_fails():
    def stub(model, idx, max_new_tokens, generator=None):
        raise NotImplementedError

    assert_diagnosed(check_generate(stub), "not written yet")


@pytest.mark.parametrize(
    "mistake, fragment",
    [
        (make_generate(pick="argmax"), "argmax, greedy decoding"),
        (make_generate(append="forget"), "nothing was added"),
        (make_generate(append="replace"), "instead of replacing idx"),
        (make_generate(append="new_only"), "only the new tokens came back"),
        (make_generate(pass_generator=False), "generator was not passed on"),
        (make_generate(feed_back=False), "never fed back"),
        (make_generate(position=0), "logits[:, -1, :]"),
        (make_generate(softmax_dim=0), "softmax runs over the wrong dimension"),
        (make_generate(softmax=False), "needs probabilities, not logits"),
        (make_generate(last_only=False), "take the last position's scores"),
        (make_generate(append="dim0"), "torch.cat joined on the wrong dimension"),
        (make_generate(append="squeezed"), "the new token ids have lost a dimension"),
    ],
)
def test_generate_mistakes_are_diagnosed(mistake, fragment):
    assert_diagnosed(check_generate(mistake), fragment)


def test_generate_ignores_zero_tokens():
    def one_extra(model, idx, max_new_tokens, generator=None):
        return generate(model, idx, max(max_new_tokens, 1), generator)

    assert_diagnosed(check_generate(one_extra), "max_new_tokens=0")
