"""Checker for chapter 6's sampling exercise: temperature and top-k in `sample_next`.

Sampling is random, so the checker draws many samples from a seeded generator and compares how
often each token came up with what the correct code (and each known mistake) would give.
"""

from __future__ import annotations

import math

import torch

from . import Check, shape_of, wrong_shape

N_SAMPLES = 20_000
LOGITS = torch.tensor([3.0, 2.5, 2.0, 1.0, -1.0, -2.0])  # distinct scores, most likely first
CLOSE = 0.02  # largest total-variation distance from the expected frequencies that still passes


def _softmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return torch.softmax(logits / temperature, dim=-1)


def _top_k(logits: torch.Tensor, k: int, fill: float = float("-inf")) -> torch.Tensor:
    out = torch.full_like(logits, fill)
    out[:k] = logits[:k]  # LOGITS is sorted, so the first k are the largest
    return out


# Raw torch errors that a top-k threshold of the wrong shape (or a wrong gather) gives.
SAMPLING_ERRORS = {
    "must match the size of tensor": "the k-th largest value has the wrong shape to compare with "
        "logits (B, V): keep one threshold per row as a column, "
        "torch.topk(logits, k).values[:, [-1]] (shape (B, 1))",
    "probability tensor contains": "some row has no token left to sample (all -inf, or NaN): "
        "compute each row's own k-th largest value and keep logits >= it",
}


def _draw(check: Check, fn, what: str, temperature: float, top_k: int | None, seed: int = 0):
    """N_SAMPLES draws for one row of LOGITS; returns the frequency of each token."""
    logits = LOGITS.expand(N_SAMPLES, -1).clone()  # (N, V): the same scores in every row
    torch.manual_seed(seed)  # in case the learner's code uses the global RNG
    ids = check.call(what, fn, logits, temperature=temperature, top_k=top_k,
                     generator=torch.Generator().manual_seed(seed), known=SAMPLING_ERRORS)
    ids = _as_ids(check, ids, what, N_SAMPLES)
    return torch.bincount(ids.flatten(), minlength=len(LOGITS)).double() / N_SAMPLES


def _as_ids(check: Check, ids, what: str, batch: int) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor):
        check.stop(f"{what} returned {type(ids).__name__}: return a (B, 1) tensor of token ids")
    if tuple(ids.shape) == (batch,):
        check.stop(f"{what} returned shape {shape_of(ids)}: keep a column of ids, shape (B, 1) "
                   f"(argmax(dim=-1, keepdim=True); torch.multinomial(probs, 1) already gives it)")
    if tuple(ids.shape) != (batch, 1):
        check.stop(wrong_shape(what, ids, (batch, 1), {"B": batch, "vocab_size": len(LOGITS)},
                               f" (it should be (B, 1) = ({batch}, 1))"))
    if ids.is_floating_point() or ids.min() < 0 or ids.max() >= len(LOGITS):
        check.stop(f"{what} returned values that are not token ids in 0..{len(LOGITS) - 1}: "
                   f"return indices (argmax / multinomial), not probabilities")
    return ids.long()


def _tv(freq: torch.Tensor, probs: torch.Tensor) -> float:
    """Total-variation distance: half the summed difference between two distributions."""
    return 0.5 * (freq - probs.double()).abs().sum().item()


def check_sample_next(sample_next) -> Check:
    """Check sample_next(logits, temperature, top_k, generator) -> (B, 1) ids."""
    with Check("sample_next", seed=0) as check:
        _check_greedy(check, sample_next)
        _check_generator(check, sample_next)
        _check_temperature(check, sample_next)
        _check_top_k(check, sample_next)
        _check_rows_differ(check, sample_next)
    return check


def _check_greedy(check: Check, fn) -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0, 0.5], [3.0, 0.0, 1.0, 2.9], [-2.0, -1.0, -3.0, -1.5]])
    what = "sample_next(logits, temperature=0.0)"
    try:
        ids = fn(logits.clone(), temperature=0.0, top_k=None, generator=torch.Generator().manual_seed(0))
    except NotImplementedError:
        check.stop(f"{what}: not written yet. Replace `raise NotImplementedError` with your code.")
    except (ZeroDivisionError, RuntimeError) as exc:
        check.stop(f"{what} raised {type(exc).__name__}: temperature 0 means greedy. Return "
                   f"logits.argmax(dim=-1, keepdim=True) before dividing by the temperature")
    except Exception as exc:
        check.stop(f"{what} raised {type(exc).__name__}: {exc}")
    if not isinstance(ids, torch.Tensor) or tuple(ids.shape) not in ((3, 1), (3,)):
        check.stop(f"{what} returned {shape_of(ids)}, expected a (B, 1) tensor of ids")
    if tuple(ids.shape) == (3,):
        check.stop(f"{what} returned shape (3,): keep a column of ids, shape (B, 1) "
                   f"(argmax(dim=-1, keepdim=True))")
    expected = logits.argmax(dim=-1, keepdim=True)
    check.expect(torch.equal(ids.long(), expected),
                 "temperature 0 picks the most likely token in every row (greedy)",
                 f"temperature 0 should be greedy: expected {expected.flatten().tolist()}, got "
                 f"{ids.flatten().tolist()}. Return logits.argmax(dim=-1, keepdim=True)")


def _check_generator(check: Check, fn) -> None:
    logits = LOGITS.expand(50, -1).clone()
    what = "sample_next(logits, temperature=1.0, generator=seeded)"
    torch.manual_seed(1)
    a = check.call(what, fn, logits, temperature=1.0, top_k=None,
                   generator=torch.Generator().manual_seed(5), known=SAMPLING_ERRORS)
    torch.manual_seed(2)  # a different global state: only the generator should matter
    b = check.call(what, fn, logits, temperature=1.0, top_k=None,
                   generator=torch.Generator().manual_seed(5), known=SAMPLING_ERRORS)
    a, b = _as_ids(check, a, "sample_next", 50), _as_ids(check, b, "sample_next", 50)
    check.expect(torch.equal(a, b), "the same seeded generator gives the same samples",
                 "two generators with the same seed gave different samples: pass "
                 "generator=generator to torch.multinomial")


def _check_temperature(check: Check, fn) -> None:
    freq = _draw(check, fn, "sample_next(logits, temperature=1.0)", 1.0, None)
    if freq[0] == 1.0:
        check.stop("at temperature 1.0 every sample was the most likely token: that is greedy "
                   "decoding. For temperature > 0, sample with torch.multinomial(probs, 1)")
    if _tv(freq, _softmax(LOGITS)) > CLOSE:
        if _tv(freq, torch.full((len(LOGITS),), 1 / len(LOGITS))) < CLOSE:
            check.stop("at temperature 1.0 every token came up equally often: sample from "
                       "softmax(logits) over the last dimension (dim=-1)")
        check.stop("at temperature 1.0 the samples do not follow softmax(logits): sample with "
                   "torch.multinomial(torch.softmax(logits, dim=-1), 1)")
    check.ok("at temperature 1.0 tokens come up as often as softmax(logits) says")
    for temperature in (0.5, 2.0):
        freq = _draw(check, fn, f"sample_next(logits, temperature={temperature})", temperature, None)
        if _tv(freq, _softmax(LOGITS, temperature)) <= CLOSE:
            check.ok(f"temperature {temperature} {'sharpens' if temperature < 1 else 'flattens'} "
                     f"the distribution as softmax(logits / {temperature}) does")
        elif _tv(freq, _softmax(LOGITS)) <= CLOSE:
            check.stop(f"temperature {temperature} changed nothing: divide the logits by the "
                       f"temperature before the softmax, not the probabilities after it (dividing "
                       f"probabilities only rescales them, and sampling normalises them back)")
        elif _tv(freq, _softmax(LOGITS * temperature)) <= CLOSE:
            check.stop(f"temperature {temperature} works backwards: divide the logits by the "
                       f"temperature, don't multiply")
        else:
            # The samples may follow softmax(logits / t) for some other t: name which.
            others = {f"the temperature is applied twice (logits / temperature**2 = logits / "
                      f"{temperature**2:g}): divide the logits by it once": temperature**2,
                      f"the logits are divided by sqrt(temperature) = {math.sqrt(temperature):.3g}: "
                      f"divide by the temperature itself": math.sqrt(temperature)}
            found = next((m for m, t in others.items()
                          if _tv(freq, _softmax(LOGITS, t)) <= CLOSE), None)
            check.stop(found or f"at temperature {temperature} the samples do not follow "
                                f"softmax(logits / temperature)")


def _check_top_k(check: Check, fn) -> None:
    k = 3
    freq = _draw(check, fn, f"sample_next(logits, temperature=1.0, top_k={k})", 1.0, k)
    support = int((freq > 0).sum())
    if support == k and freq[:k].sum() == 1.0:
        if _tv(freq, _softmax(_top_k(LOGITS, k))) <= CLOSE:
            check.ok(f"top_k={k} samples only the {k} most likely tokens, in the right proportions")
        else:
            check.fail(f"top_k={k} keeps the right {k} tokens, but their proportions are off: "
                       f"softmax the filtered logits (the others set to -inf)")
    elif _tv(freq, _softmax(_top_k(LOGITS, k, fill=0.0))) <= CLOSE:
        check.stop(f"with top_k={k}, the other tokens still come up: they were masked with 0 instead "
                   f"of -inf. exp(0) = 1 is not 0; use float('-inf') so softmax gives them 0")
    elif support == k + 1:
        check.stop(f"top_k={k} sampled {k + 1} different tokens: it keeps k+1. Keep logits >= the "
                   f"k-th largest (torch.topk(logits, k).values[:, -1:]), i.e. index -1, not k")
    elif support == k - 1:
        check.stop(f"top_k={k} sampled only {k - 1} different tokens: it keeps k-1. The k-th "
                   f"largest itself must stay (compare with <, not <=, or take index -1 of topk)")
    elif _tv(freq, _softmax(LOGITS)) <= CLOSE:
        check.stop(f"top_k={k} changed nothing: all tokens can still come up. Set logits below the "
                   f"k-th largest to -inf before the softmax")
    else:
        check.stop(f"with top_k={k}, {support} different tokens came up, expected exactly {k}")
    freq = _draw(check, fn, "sample_next(logits, temperature=1.5, top_k=1)", 1.5, 1)
    check.expect(freq[0] == 1.0, "top_k=1 always picks the most likely token, whatever the temperature",
                 "top_k=1 should always give the most likely token (only one is left)")
    freq = _draw(check, fn, f"sample_next(logits, temperature=0.5, top_k={k})", 0.5, k)
    check.expect(_tv(freq, _softmax(_top_k(LOGITS, k), 0.5)) <= CLOSE,
                 "temperature and top-k work together",
                 f"with temperature 0.5 and top_k={k} the samples are off: filter to the top k, "
                 f"divide by the temperature, then softmax and sample")


# Rows with different scores: a permutation and a shift of LOGITS each, so that each row has its
# own top-k tokens and its own k-th largest value.
ROW_PERMUTATIONS = [[0, 1, 2, 3, 4, 5], [5, 3, 1, 0, 2, 4], [2, 4, 5, 1, 0, 3]]
ROW_SHIFTS = [0.0, 2.0, -0.75]


def _rows() -> torch.Tensor:
    rows = torch.zeros(len(ROW_SHIFTS), len(LOGITS))
    for r, (perm, shift) in enumerate(zip(ROW_PERMUTATIONS, ROW_SHIFTS)):
        rows[r, perm] = LOGITS + shift  # token perm[i] gets the i-th largest score
    return rows


def _check_rows_differ(check: Check, fn) -> None:
    """Each row of a batch keeps its own top k: catches a threshold taken from row 0 only."""
    k, rows = 3, _rows()
    n = N_SAMPLES // len(rows)
    logits = rows.repeat_interleave(n, dim=0)  # (3n, V): n copies of each row, in blocks
    what = f"sample_next on rows with different scores, top_k={k}"
    torch.manual_seed(0)
    ids = check.call(what, fn, logits.clone(), temperature=1.0, top_k=k,
                     generator=torch.Generator().manual_seed(0), known=SAMPLING_ERRORS)
    ids = _as_ids(check, ids, what, len(logits))
    for r, row in enumerate(rows):
        freq = torch.bincount(ids[r * n:(r + 1) * n].flatten(), minlength=len(LOGITS)).double() / n
        kth = row.topk(k).values[-1]
        if _tv(freq, torch.softmax(row.masked_fill(row < kth, float("-inf")), dim=-1)) <= CLOSE:
            continue
        row0_kth = rows[0].topk(k).values[-1]
        if _tv(freq, torch.softmax(row.masked_fill(row < row0_kth, float("-inf")), dim=-1)) <= CLOSE:
            check.stop(f"row {r} kept {int((row >= row0_kth).sum())} tokens, not {k}: every row used "
                       f"row 0's k-th largest value. Take one threshold per row, "
                       f"torch.topk(logits, k).values[:, [-1]] (shape (B, 1))")
        if _tv(freq, _softmax(rows[0].masked_fill(rows[0] < row0_kth, float("-inf")))) <= CLOSE:
            check.stop(f"row {r} sampled from row 0's distribution: sample each row from its own "
                       f"probabilities, torch.multinomial(probs, 1) on the whole (B, V) tensor")
        check.stop(f"row {r} of a batch whose rows differ gave the wrong tokens: each row must keep "
                   f"its own {k} largest logits (compare with a (B, 1) column of thresholds)")
    check.ok(f"each row of a batch keeps its own top {k} tokens, even when rows differ")
