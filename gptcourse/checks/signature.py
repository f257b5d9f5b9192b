"""Reading a wrong output's signature: what its shape, its values or its number say about the
mistake behind it (a sign, a factor named by a size, an offset, a shift by one, a transpose, cat
for stack, one term of a sum left out...)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch


def _ratio_name(r: float, sizes: Mapping[str, int]) -> str | None:
    """Name r as a size, its square root, or their inverses (sizes: name -> value)."""
    for name, n in sizes.items():
        for value, label in [(n, name), (math.sqrt(n), f"sqrt({name})"),
                             (1 / n, f"1 / {name}"), (1 / math.sqrt(n), f"1 / sqrt({name})")]:
            if n > 1 and math.isclose(r, value, rel_tol=1e-3):
                return f"{label} = {value:.4g}"
    return None


def _dim_name(size: int, sizes: Mapping[str, int]) -> str:
    names = [name for name, n in sizes.items() if n == size]
    return f"{size} ({' or '.join(names)})" if names else str(size)


def shape_signature(actual: tuple, expected: tuple, sizes: Mapping[str, int] | None = None) -> str | None:
    """What a wrong shape says about the mistake: transposed, one short, a size from another
    dimension, a dimension joined (cat) or added (stack), a dimension dropped or kept."""
    actual, expected, sizes = tuple(actual), tuple(expected), dict(sizes or {})
    got = f"got {actual}, expected {expected}"
    if actual == expected:
        return None
    if len(actual) == len(expected):
        if sorted(actual) == sorted(expected):
            return (f"the dimensions are in the wrong order ({got}): a transpose or permute "
                    f"is missing or swaps the wrong pair")
        diff = [i for i in range(len(actual)) if actual[i] != expected[i]]
        if len(diff) == 1:
            i = diff[0]
            a, e = actual[i], expected[i]
            if abs(a - e) == 1:
                return (f"dimension {i} is one {'short' if a < e else 'too long'} ({got}): "
                        f"an off-by-one in a range, slice or loop bound along that dimension")
            if a == 1:
                return (f"dimension {i} has size 1 where {e} are needed ({got}): only one entry "
                        f"was kept along it (the last position, [:, -1:], or one start for them all)")
            others = [j for j in range(len(expected)) if j != i and expected[j] == a]
            if others:
                return (f"dimension {i} has size {_dim_name(a, sizes)}, the size of dimension "
                        f"{others[0]} ({got}): a size was taken from the wrong dimension")
            if a in sizes.values():
                return (f"dimension {i} has size {_dim_name(a, sizes)} where {_dim_name(e, sizes)} "
                        f"is needed ({got}): the wrong size was used")
            if a * e and (a % e == 0 or e % a == 0):
                k = a // e if a > e else e // a
                return (f"dimension {i} is {k} times {'too long' if a > e else 'too short'} ({got}): "
                        f"pieces were joined along it (cat) that belong in a dimension of "
                        f"their own, or it was split or chunked along the wrong dimension")
        if math.prod(actual) == math.prod(expected):
            return f"the right number of values in the wrong shape ({got}): check the view or reshape"
        return f"the shape is wrong ({got})"
    if len(actual) == len(expected) + 1:
        for i in range(len(actual)):
            if actual[i] == 1 and actual[:i] + actual[i + 1:] == expected:
                return (f"there is an extra dimension of size 1 ({got}): keepdim=True, an "
                        f"unsqueeze or an index like [:, None] where none was meant")
        for i in range(len(actual) - 1):
            if actual[:i] + (actual[i] * actual[i + 1],) + actual[i + 2:] == expected:
                return (f"there is one dimension too many ({got}): torch.stack made a new "
                        f"dimension where torch.cat (joining along an existing one), or a view, was meant")
        return f"there is one dimension too many ({got})"
    if len(actual) + 1 == len(expected):
        for i in range(len(expected) - 1):
            if expected[:i] + (expected[i] * expected[i + 1],) + expected[i + 2:] == actual:
                return (f"two dimensions are merged into one ({got}): torch.cat joined the "
                        f"pieces along an existing dimension where torch.stack (a new dimension) was "
                        f"meant, or a view flattened too much")
        for i in range(len(expected)):
            if expected[:i] + expected[i + 1:] == actual:
                what = "a size-1 dimension was squeezed away" if expected[i] == 1 else (
                    "a sum, mean or index removed it, or one start was used for the whole batch")
                return f"dimension {i} of size {expected[i]} is missing ({got}): {what}"
        return f"one dimension is missing ({got})"
    if math.prod(actual) == math.prod(expected):
        return f"the right number of values in the wrong shape ({got}): check the view/reshape"
    return None


def value_signature(actual: torch.Tensor, expected: torch.Tensor, sizes: Mapping[str, int] | None = None,
                    atol: float = 1e-5) -> str | None:
    """What a wrong output of the right shape says about the mistake: a sign, a constant factor
    (named when it is a size or its square root), a constant offset, a transpose, a shift by one
    along an axis, the same values in another order, or only some positions right."""
    if not (isinstance(actual, torch.Tensor) and isinstance(expected, torch.Tensor)):
        return None
    if actual.shape != expected.shape or actual.numel() == 0:
        return None
    a, e, sizes = actual.detach().double(), expected.detach().double(), dict(sizes or {})

    def same(x, y):
        return x.shape == y.shape and torch.allclose(x, y, atol=atol, rtol=1e-4, equal_nan=True)

    if same(a, e):
        return None

    if torch.isnan(a).any() and not torch.isnan(e).any():
        return ("the output holds NaN: a 0/0, the log of 0 or of a negative number, or -inf "
                "multiplied by 0 somewhere")
    if torch.isinf(a).any() and not torch.isinf(e).any():
        return "the output holds inf: a division by (nearly) zero or a log of 0"
    if same(a, -e) and e.abs().max() > atol:
        return "the sign is flipped everywhere: a minus sign is missing or extra"
    big = e.abs() > 1e-3
    if big.sum() >= 2:
        ratios = a[big] / e[big]
        r = ratios.median().item()
        if r != 0 and torch.allclose(ratios, torch.full_like(ratios, r), rtol=1e-3) and same(a, e * r):
            if math.isclose(r, 1.0, rel_tol=1e-6):
                pass
            elif (named := _ratio_name(r, sizes)) is not None:
                return (f"the output is the reference times {named}: a scale factor is wrong (a "
                        f"division by the wrong size, or by a size instead of its square root)")
            elif r < 0:
                return f"the output is the reference times {r:.4g}: a sign and a scale are wrong"
            else:
                return (f"the output is the reference times {r:.4g} everywhere: a constant factor "
                        f"is wrong or missing (a coefficient, a 1/2, a square root)")
    offset = (a - e).flatten()
    if offset.numel() >= 2 and offset.abs().max() > atol and torch.allclose(offset, offset[:1].expand_as(offset), atol=atol):
        return (f"every value is off by the same {offset[0].item():+.4g}: a constant term is "
                f"missing or extra (an offset, a +1, a bias)")
    if a.dim() >= 2 and a.shape[-1] == a.shape[-2] and same(a, e.transpose(-2, -1)):
        return "the output is the reference transposed: rows and columns (the last two dimensions) are swapped"
    for dim in range(a.dim()):
        n = a.shape[dim]
        if n < 2:
            continue
        if same(a.narrow(dim, 1, n - 1), e.narrow(dim, 0, n - 1)):
            return (f"the output is shifted one step later along dimension {dim}: an index is one "
                    f"too small (i - 1 for i, or a slice starting one early)")
        if same(a.narrow(dim, 0, n - 1), e.narrow(dim, 1, n - 1)):
            return (f"the output is shifted one step earlier along dimension {dim}: an index is one "
                    f"too large (i + 1 for i, or a slice starting one late)")
        flipped = a.flip(dim)
        if same(flipped, e):
            return f"the output is reversed along dimension {dim}: an order is backwards"
        if n > 2 and same(a.sort(dim=dim).values, e.sort(dim=dim).values):
            return (f"the right values in the wrong order along dimension {dim}: pieces were "
                    f"swapped, or taken in the wrong order")
    close_mask = torch.isclose(a, e, atol=atol, rtol=1e-4)
    for dim in range(a.dim()):
        n = a.shape[dim]
        rows = close_mask.transpose(0, dim).reshape(n, -1).all(dim=1)
        if 0 < rows.sum() < n:
            right = rows.nonzero().flatten().tolist()
            if right == list(range(len(right))):
                return (f"along dimension {dim} the first {len(right)} of {n} positions are right "
                        f"and the rest are wrong: something goes wrong after position {len(right) - 1} "
                        f"(a bound, a mask or a cache that stops too early)")
            if right == list(range(n - len(right), n)) and 2 * len(right) >= n:
                return (f"along dimension {dim} the last {len(right)} of {n} positions are right "
                        f"and the first ones are wrong: the start is off (position 0 is handled "
                        f"differently)")
    return None


def signature(actual: Any, expected: Any, sizes: Mapping[str, int] | None = None,
              atol: float = 1e-5) -> str | None:
    """The class of mistake a wrong output shows, read from its shape and its values."""
    if isinstance(actual, torch.Tensor) and isinstance(expected, torch.Tensor):
        if actual.shape != expected.shape:
            return shape_signature(tuple(actual.shape), tuple(expected.shape), sizes)
        if actual.numel() == 1:
            return number_signature(actual.item(), expected.item(), sizes=sizes)
        return value_signature(actual, expected, sizes, atol)
    if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        return number_signature(actual, expected, sizes=sizes)
    return None


def number_signature(value: float, expected: float, terms: Mapping[str, float] | None = None,
                     sizes: Mapping[str, int] | None = None) -> str | None:
    """What a wrong number says about the mistake: one term of a sum left out or counted twice,
    the sign, a unit (thousands, millions, a percentage), a log in another base, a factor that
    equals a size or its square root, or off by one."""
    value, expected = float(value), float(expected)
    if expected == 0 or value == expected:
        return None
    if math.isclose(value, -expected, rel_tol=1e-6):
        return "the sign is flipped: a minus sign is missing or extra"
    diff = value - expected
    for name, term in (terms or {}).items():
        if term and math.isclose(diff, -term, rel_tol=1e-6):
            return f"{name} is left out (the count is short by exactly {_short(term)})"
        if term and math.isclose(diff, term, rel_tol=1e-6):
            return f"{name} is counted twice (the count is over by exactly {_short(term)})"
    ratio = value / expected
    for r, what in [(1e-3, "in thousands"), (1e-6, "in millions"), (1e-9, "in billions"),
                    (100.0, "a percentage, not a fraction"), (0.01, "a fraction divided by 100"),
                    (1 / math.log(2), "a log in base 2 (bits), not the natural log"),
                    (1 / math.log(10), "a log in base 10, not the natural log"),
                    (2.0, "twice the right value: a factor 2 is extra"),
                    (0.5, "half the right value: a factor 2 is missing")]:
        if math.isclose(ratio, r, rel_tol=1e-4):
            return f"the value is {what}"
    named = _ratio_name(ratio, sizes or {})
    if named:
        return f"the value is the right one times {named}: a size multiplies or divides where it should not"
    if expected.is_integer() and value.is_integer() and abs(diff) == 1:
        return f"the count is one {'too many' if diff > 0 else 'short'}: an off-by-one"
    return None


def _short(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:.4g}"
