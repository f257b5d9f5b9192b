"""Shared by the benchmarks: timing a call, and the median of paired rounds' own ratios.

A busy machine slows a whole stretch of time. The sides of one round run seconds apart, so the
ratio within a round is steadier than a ratio of best rounds, which may come from other minutes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """fn's result and the seconds it took."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def paired_ratio(ours: list[float], theirs: list[float]) -> float:
    """The median over rounds of theirs / ours seconds: how many times faster ours ran, round by round."""
    return statistics.median(t / o for o, t in zip(ours, theirs, strict=True))
