"""Checkers for chapter 2: the counting NLL, the neural bigram's forward pass, and sampling.

One module (a little over 300 lines) for the one model of the chapter: the three checkers run the
same counts and the same BigramLanguageModel as their reference."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..bigram import BigramLanguageModel, bigram_counts, bigram_nll, bigram_probs
from . import Check, close, diagnose, shape_of, wrong_shape


def _as_float(check: Check, value, what: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            check.stop(f"{what} returned a tensor of shape {shape_of(value)}: return one number, "
                       f"the mean over all pairs")
        return value.item()
    if isinstance(value, (int, float)):
        return float(value)
    check.stop(f"{what} returned {type(value).__name__}: return one number (a float)")


# --- the counting NLL ----------------------------------------------------------------------------
def _nll_variant(train_ids, eval_ids, vocab_size, smoothing, *, transpose=False, by_column=False,
                 no_keepdim=False, log=torch.log, reduce="mean") -> float:
    """The counting NLL with one deliberate change, to recognise a learner's mistake."""
    counts = bigram_counts(train_ids, vocab_size).double() + smoothing
    if transpose:
        counts = counts.T
    if no_keepdim:
        probs = counts / counts.sum(dim=1)  # (V, V) / (V,): divides column b by row b's sum
    else:
        probs = counts / counts.sum(dim=0 if by_column else 1, keepdim=True)
    logp = log(probs[eval_ids[:-1], eval_ids[1:]])
    return (-logp.sum() if reduce == "sum" else -logp.mean()).item()


def _counting_reference(train_ids, eval_ids, vocab_size, smoothing) -> float:
    return bigram_nll(bigram_probs(bigram_counts(train_ids, vocab_size), smoothing), eval_ids)


def _counting_mistakes(train_ids, eval_ids, vocab_size, smoothing, ref) -> dict:
    """Known mistakes, each mapped to what a counting_nll with that mistake returns."""
    args = (train_ids, eval_ids, vocab_size, smoothing)
    return {
        "the sign is flipped: the NLL is minus the mean log-probability (probabilities "
        "are below 1, so log p < 0 and the NLL is positive)": -ref,
        "you summed the log-probabilities: take the mean over all pairs":
            lambda: _nll_variant(*args, reduce="sum"),
        "the rows and columns are swapped: count counts[previous, next] (row = the "
        "previous id) and normalise each row":
            lambda: _nll_variant(*args, transpose=True),
        "each row must be divided by its own sum: counts / counts.sum(dim=1, keepdim=True). "
        "Without keepdim=True the (V,) sums broadcast along the rows and divide the "
        "wrong entries": lambda: _nll_variant(*args, no_keepdim=True),
        "the columns were normalised: divide each row by its own sum "
        "(sum(dim=1, keepdim=True)) so that P(next | previous) sums to 1 over next":
            lambda: _nll_variant(*args, by_column=True),
        "the log has the wrong base: use the natural log, torch.log":
            lambda: _nll_variant(*args, log=torch.log2),
        "the log has the wrong base (log10): use the natural log, torch.log":
            lambda: _nll_variant(*args, log=torch.log10),
        "the table was counted from eval_ids: count the pairs of train_ids, then score the "
        "pairs of eval_ids with it": lambda: _counting_reference(eval_ids, eval_ids, vocab_size, smoothing),
        "smoothing seems fixed at 1: add the `smoothing` argument to every count":
            lambda: _counting_reference(train_ids, eval_ids, vocab_size, 1.0),
    }


def check_counting_nll(counting_nll_fn) -> Check:
    """Check counting_nll(train_ids, eval_ids, vocab_size, smoothing) -> mean NLL (a float)."""
    with Check("counting_nll") as check:
        vocab_size = 5
        gen = torch.Generator().manual_seed(0)
        # Uneven frequencies, so that dividing by the wrong sums changes the result.
        frequencies = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08])
        raw = torch.multinomial(frequencies, 300, replacement=True, generator=gen)
        # Drop repeats so that no pair (a, a) occurs in train: those pairs are unseen.
        train_ids = torch.unique_consecutive(raw)
        # The NLL of a sequence barely notices wrong normalising sums unless its first and last
        # ids differ in frequency (the sums telescope), so these start and end on different ids.
        seen_ids = train_ids[:50]  # every pair here also occurs in train
        unseen_ids = torch.tensor([0, 0, 1, 2, 2, 3, 4, 4, 1, 4])  # includes (0, 0), (2, 2), (4, 4)
        cases = [
            (unseen_ids, 1.0, "eval ids with pairs never seen in train, smoothing=1.0"),
            (seen_ids, 0.0, "eval ids whose pairs all occur in train, smoothing=0.0"),
            (seen_ids, 0.5, "the same ids, smoothing=0.5"),
            (unseen_ids, 0.1, "pairs never seen in train, smoothing=0.1"),
        ]
        for eval_ids, k, label in cases:
            args = (train_ids.clone(), eval_ids.clone(), vocab_size)
            result = check.call(f"counting_nll({label})", counting_nll_fn, *args, smoothing=k)
            value = _as_float(check, result, "counting_nll")
            ref = _counting_reference(train_ids, eval_ids, vocab_size, k)
            if math.isclose(value, ref, rel_tol=1e-4, abs_tol=1e-5):
                check.ok(f"{label}: NLL {value:.4f} matches the reference")
                continue
            if math.isinf(value) or math.isnan(value):
                check.stop(f"{label}: the NLL is {value}. Some pair in eval_ids never occurs in "
                           f"train_ids, so its probability is 0 and log(0) = -inf. Add `smoothing` "
                           f"to every count before normalising the rows")
            mistakes = _counting_mistakes(train_ids, eval_ids, vocab_size, k, ref)
            check.stop(f"{label}: got {value:.4f}, expected {ref:.4f}: "
                       + diagnose(value, mistakes, default="count pairs of (previous, next) ids "
                                  "in train_ids, add smoothing, normalise each row, then average "
                                  "-log P(next | previous) over the pairs of eval_ids", atol=1e-4,
                                  expected=ref, sizes={"vocab_size": vocab_size}))
    return check


# --- the forward pass ----------------------------------------------------------------------------
_NO_RESHAPE = ("cross_entropy wants logits of shape (N, C) and targets of shape (N,). Reshape "
               "first: logits.view(B*T, C) and targets.view(B*T)")


def check_bigram_model(model_class) -> Check:
    """Check a learner's bigram class: model(idx) -> (logits, None); model(idx, targets) -> (logits, loss)."""
    with Check("BigramLanguageModel") as check:
        V, B, T = 7, 2, 5  # T != V, so a missing reshape fails loudly
        model = check.call(f"{model_class.__name__}(vocab_size={V})", model_class, V)
        tables = [p for p in model.parameters() if tuple(p.shape) == (V, V)]
        n_params = sum(p.numel() for p in model.parameters())
        if len(tables) != 1 or n_params != V * V:
            check.stop(f"the model should hold exactly one table nn.Embedding(vocab_size, vocab_size) "
                       f"= {V}x{V} = {V * V} parameters; found {n_params} parameters")
        check.ok(f"the model holds one {V}x{V} lookup table")
        # Give the learner's table and the reference the same scores.
        gen = torch.Generator().manual_seed(0)
        weight = torch.randn(V, V, generator=gen)
        with torch.no_grad():
            tables[0].copy_(weight)
        reference = BigramLanguageModel(V)
        with torch.no_grad():
            reference.token_embedding_table.weight.copy_(weight)
        idx = torch.randint(V, (B, T), generator=gen)
        targets = torch.randint(V, (B, T), generator=gen)
        ref_logits, ref_loss = reference(idx, targets)

        out = check.call("model(idx)", model, idx, known={
            "NoneType": "when targets is None, skip the loss and return (logits, None)"})
        if not isinstance(out, tuple) or len(out) != 2:
            check.stop(f"model(idx) returned {type(out).__name__}: forward must return a pair (logits, loss)")
        logits, loss = out
        _check_logits(check, logits, ref_logits, weight, idx, B, T, V)
        check.expect(loss is None, "without targets, the loss is None",
                     f"without targets, loss should be None, got {type(loss).__name__}")

        out = check.call("model(idx, targets)", model, idx, targets, known={
            "Expected target size": _NO_RESHAPE,
            "to match target batch_size": "the logits are (B*T, C) but the targets are still "
                                          "(B, T): reshape them too, targets.view(B*T)"})
        if not isinstance(out, tuple) or len(out) != 2:
            check.stop(f"model(idx, targets) returned {type(out).__name__}: return (logits, loss)")
        logits, loss = out
        if isinstance(logits, torch.Tensor) and logits.dim() == 0 and isinstance(loss, torch.Tensor):
            check.stop("the pair looks swapped: return (logits, loss), logits first")
        if not isinstance(loss, torch.Tensor):
            check.stop(f"the loss is a {type(loss).__name__}: return the tensor from F.cross_entropy "
                       f"(no .item()), so that loss.backward() works")
        if loss.numel() != 1:
            check.stop(f"the loss has shape {shape_of(loss)}: it should be one number, the mean "
                       f"cross-entropy over all B*T positions")
        if close(loss, ref_loss, atol=1e-5):
            check.ok(f"the loss is the mean cross-entropy over all B*T positions ({loss.item():.4f})")
        else:
            flat = weight[idx].view(B * T, V)
            mistakes = {
                "softmax was applied before F.cross_entropy. cross_entropy takes raw logits and "
                "applies log-softmax itself; pass the logits directly":
                    F.cross_entropy(F.softmax(flat, dim=-1), targets.view(-1)),
                "the loss is summed: F.cross_entropy's default (reduction='mean') averages it":
                    F.cross_entropy(flat, targets.view(-1), reduction="sum"),
            }
            check.stop(f"the loss is {loss.item():.4f}, expected {ref_loss.item():.4f}: "
                       + diagnose(loss.detach(), mistakes, default="compute "
                                  "F.cross_entropy(logits.view(B*T, C), targets.view(B*T))",
                                  expected=ref_loss.detach(), sizes={"B": B, "T": T, "B * T": B * T}))
        check.expect(loss.requires_grad, "the loss carries gradients (loss.backward() will work)",
                     "the loss does not require grad: compute it from the model's logits with "
                     "F.cross_entropy, without torch.no_grad() or .detach()")
        _check_logits(check, logits, ref_logits, weight, idx, B, T, V, quiet=True)
    return check


def _check_logits(check, logits, ref_logits, weight, idx, B, T, V, quiet=False) -> None:
    if not isinstance(logits, torch.Tensor):
        check.stop(f"logits should be a tensor, got {type(logits).__name__}")
    if tuple(logits.shape) == (B * T, V):
        check.stop(f"the logits came back flattened to (B*T, C) = {(B * T, V)}. Return them as "
                   f"(B, T, C) = {(B, T, V)}: flatten a view only for the loss, so that "
                   f"generate can read logits[:, -1, :]")
    if tuple(logits.shape) != (B, T, V):
        check.stop(wrong_shape("the logits tensor", logits, (B, T, V), {"B": B, "T": T, "vocab_size": V},
                               f" (they should be (B, T, C) = {(B, T, V)})"))
    if close(logits, ref_logits):
        if not quiet:
            check.ok(f"logits have shape (B, T, C) = {(B, T, V)} and are the table's rows for each id")
    elif close(logits, F.softmax(weight[idx], dim=-1)):
        check.stop("the logits were passed through softmax: return the raw scores "
                   "(self.token_embedding_table(idx)); cross_entropy and generate apply softmax")
    else:
        check.stop("the logits differ from the table's rows: logits = self.token_embedding_table(idx), "
                   "row idx[b, t] holds the scores for the token after idx[b, t]")


# --- sampling ------------------------------------------------------------------------------------
@torch.no_grad()
def _generate_variant(model, idx, max_new_tokens, generator, *, pick="sample", feed_back=True,
                      position=-1, softmax_dim=-1, use_generator=True):
    """Reference sampling loop with one deliberate change, to recognise a learner's mistake."""
    out = idx
    for _ in range(max_new_tokens):
        logits, _ = model(out if feed_back else idx)
        logits = logits[:, position, :]  # (B, C)
        if pick == "argmax":
            nxt = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = F.softmax(logits, dim=softmax_dim)
            nxt = torch.multinomial(probs, 1, generator=generator if use_generator else None)
        out = torch.cat((out, nxt), dim=1)
    return out


# Raw torch errors from appending the new token the wrong way, and the likely mistake.
GENERATE_CAT_ERRORS = {
    "must match except in dimension 0": "torch.cat joined on the wrong dimension: the new tokens "
        "are a column (B, 1), so append them along the time dimension, "
        "torch.cat((idx, idx_next), dim=1)",
    "must have same number of dimensions": "the new token ids have lost a dimension: keep them as a "
        "(B, 1) column (torch.multinomial(probs, 1) already gives one; don't squeeze it) before "
        "torch.cat((idx, idx_next), dim=1)",
}


def check_generate(generate_fn) -> Check:
    """Check generate(model, idx, max_new_tokens, generator=None) against the reference sampler."""
    with Check("generate") as check:
        V, B, T, N = 7, 2, 3, 12
        gen = torch.Generator().manual_seed(0)
        model = BigramLanguageModel(V)
        with torch.no_grad():
            model.token_embedding_table.weight.copy_(1.5 * torch.randn(V, V, generator=gen))
        idx = torch.randint(V, (B, T), generator=gen)

        def run(max_new_tokens: int, seed: int):
            torch.manual_seed(1234)  # the same global state for the learner and the variants
            return check.call(f"generate(model, idx, max_new_tokens={max_new_tokens}, generator)",
                            generate_fn, model, idx.clone(), max_new_tokens,
                            generator=torch.Generator().manual_seed(seed), known={
                                "element < 0": "torch.multinomial needs probabilities, not logits: "
                                               "apply F.softmax(logits, dim=-1) first",
                                "prob_dist must be 1 or 2 dim": "take the last position's scores, "
                                                                "logits[:, -1, :], before sampling",
                                **GENERATE_CAT_ERRORS})

        out = run(N, seed=0)
        if not isinstance(out, torch.Tensor):
            check.stop(f"generate returned {type(out).__name__}: return the (B, T + max_new_tokens) tensor")
        shape, want = tuple(out.shape), (B, T + N)
        if shape != want:
            hint = {
                (B, T): "nothing was added: append each new token with idx = torch.cat((idx, idx_next), dim=1)",
                (B, 1): "only one token came back: append the new token to idx instead of replacing idx",
                (B, N): "only the new tokens came back: return the prompt followed by them",
                (B, T + 1): "only one token was added: repeat max_new_tokens times",
            }.get(shape)
            if hint is None:
                check.stop(wrong_shape("the output", out, want, {"B": B, "T": T, "max_new_tokens": N},
                                       ": append one token per step, max_new_tokens times"))
            check.stop(f"output shape {shape}, expected (B, T + max_new_tokens) = {want}: {hint}")
        check.ok(f"output shape (B, T + max_new_tokens) = {want}")
        check.expect(torch.equal(out[:, :T], idx), "the output starts with the prompt",
                     "the output should start with the prompt idx unchanged")
        torch.manual_seed(1234)
        ref = model.generate(idx, N, generator=torch.Generator().manual_seed(0))
        if torch.equal(out, ref):
            check.ok("the tokens match the reference sampler with the same seeded generator")
        else:
            def variant(**change):
                torch.manual_seed(1234)
                return _generate_variant(model, idx, N, torch.Generator().manual_seed(0), **change)

            mistakes = {
                "these are the most likely tokens (argmax, greedy decoding). Sample instead: "
                "torch.multinomial(probs, num_samples=1, generator=generator)":
                    lambda: variant(pick="argmax"),
                "the generator was not passed on: torch.multinomial(probs, 1, generator=generator), "
                "so that a seeded generator repeats the same text":
                    lambda: variant(use_generator=False),
                "the new tokens are kept but never fed back: each step must run the model on the "
                "sequence including the tokens just added (idx = torch.cat((idx, idx_next), dim=1))":
                    lambda: variant(feed_back=False),
                "each step samples after the first token: use the scores at the last position, "
                "logits[:, -1, :]": lambda: variant(position=0),
                "softmax runs over the wrong dimension: F.softmax(logits, dim=-1) normalises each "
                "row's scores over the vocabulary": lambda: variant(softmax_dim=0),
            }
            check.stop(diagnose(out, mistakes, default="the tokens differ from the reference: take "
                                "logits[:, -1, :], apply softmax, sample one id with "
                                "torch.multinomial(probs, 1, generator=generator), append it"))
        again = run(N, seed=0)
        other = run(N, seed=1)
        check.expect(torch.equal(out, again) and not torch.equal(out, other),
                     "the same seed gives the same text, another seed gives another",
                     "seeded runs do not repeat: pass generator=generator to torch.multinomial")
        zero = run(0, seed=0)
        check.expect(isinstance(zero, torch.Tensor) and torch.equal(zero, idx),
                     "max_new_tokens=0 returns the prompt unchanged",
                     "with max_new_tokens=0 the prompt should come back unchanged")
    return check
