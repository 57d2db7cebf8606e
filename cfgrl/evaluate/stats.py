"""Interval estimates for evaluation success rates (pure functions, no I/O).

Success is binary per episode, so a success rate is a binomial proportion:

- ``wilson_interval``: the Wilson score interval. Unlike the Wald interval ``p ± z sqrt(p(1-p)/n)`` it
  stays inside [0, 1] and does not collapse to zero width at 0/n or n/n, which matters for the
  small per-task counts of a robot evaluation (50 episodes per task on LIBERO).
- ``paired_difference``: the difference of two success rates measured on the SAME episodes (same
  init states and seeds for every guidance weight w), with Newcombe's square-and-add interval for
  paired proportions (Newcombe 1998, "method 10": Wilson intervals of both rates, combined with the
  phi correlation of the 2x2 table of paired outcomes, no continuity correction). Pairing removes the
  init-state difficulty from the comparison, so it is much tighter than comparing two independent
  Wilson intervals when both weights solve the same init states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

CONFIDENCE = 0.95


def z_value(confidence: float = CONFIDENCE) -> float:
    """Two-sided standard-normal quantile: 1.95996... for 95%."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of ``successes / n``:
    ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``."""
    if n <= 0:
        raise ValueError("a success rate needs at least one episode")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..{n}, got {successes}")
    z = z_value(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    # 0/n and n/n have exact ends (0 and 1); floating point lands a few ulps off them.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class PairedDifference:
    """``rate(a) - rate(b)`` over n paired episodes, with its interval and the 2x2 table behind it."""

    diff: float
    low: float
    high: float
    n: int
    both: int  # a and b succeeded
    only_a: int  # a succeeded, b failed
    only_b: int  # b succeeded, a failed
    neither: int


def newcombe_paired_interval(
    both: int, only_a: int, only_b: int, neither: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Newcombe's square-and-add interval for p_a - p_b from the 2x2 table of paired outcomes."""
    n = both + only_a + only_b + neither
    if n <= 0:
        raise ValueError("a paired difference needs at least one pair")
    succ_a, succ_b = both + only_a, both + only_b
    p_a, p_b = succ_a / n, succ_b / n
    low_a, high_a = wilson_interval(succ_a, n, confidence)
    low_b, high_b = wilson_interval(succ_b, n, confidence)
    # phi: correlation of the paired outcomes; 0 when a margin is constant (the product vanishes).
    margins = succ_a * (n - succ_a) * succ_b * (n - succ_b)
    phi = (both * neither - only_a * only_b) / math.sqrt(margins) if margins > 0 else 0.0
    below = (p_a - low_a) ** 2 - 2.0 * phi * (p_a - low_a) * (high_b - p_b) + (high_b - p_b) ** 2
    above = (high_a - p_a) ** 2 - 2.0 * phi * (high_a - p_a) * (p_b - low_b) + (p_b - low_b) ** 2
    diff = p_a - p_b
    return max(-1.0, diff - math.sqrt(max(below, 0.0))), min(1.0, diff + math.sqrt(max(above, 0.0)))


def paired_difference(a: Sequence[bool], b: Sequence[bool], confidence: float = CONFIDENCE) -> PairedDifference:
    """Success of ``a`` minus success of ``b``; ``a[i]`` and ``b[i]`` are the same episode (init, seed)."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need equal lengths, got {len(a)} and {len(b)}")
    both = sum(1 for x, y in zip(a, b) if x and y)
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    neither = len(a) - both - only_a - only_b
    low, high = newcombe_paired_interval(both, only_a, only_b, neither, confidence)
    return PairedDifference((only_a - only_b) / len(a), low, high, len(a), both, only_a, only_b, neither)
