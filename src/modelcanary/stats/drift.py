"""Distances between two binned distributions (same bucket edges): guardrails for drift.

>>> round(psi([50, 50], [50, 50]), 6), round(js([10, 0], [0, 10]), 6)
(0.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_EPS = 1e-6  # keeps an empty bucket from making PSI infinite, as most PSI implementations do


def _shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    if total <= 0:
        raise ValueError("a distribution needs at least one count")
    return [c / total for c in counts]


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index, sum of (a - e) ln(a / e); 0.1 is a shift, 0.25 a big one."""
    e, a = _shares(expected), _shares(actual)
    return sum((ai - ei) * math.log(max(ai, _EPS) / max(ei, _EPS)) for ei, ai in zip(e, a, strict=True))


def js(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits, in [0, 1]."""
    p_, q_ = _shares(p), _shares(q)
    m = [(a + b) / 2 for a, b in zip(p_, q_, strict=True)]

    def kl(x: list[float]) -> float:
        return sum(xi * math.log2(xi / mi) for xi, mi in zip(x, m, strict=True) if xi > 0)

    return (kl(p_) + kl(q_)) / 2


def wasserstein(p: Sequence[float], q: Sequence[float], centers: Sequence[float]) -> float:
    """Earth mover's distance between two histograms whose buckets sit at ``centers`` (increasing).

    >>> wasserstein([1, 0], [0, 1], [0.0, 1.0])
    1.0
    """
    p_, q_ = _shares(p), _shares(q)
    distance, carried = 0.0, 0.0
    for i in range(len(centers) - 1):
        carried += p_[i] - q_[i]
        distance += abs(carried) * (centers[i + 1] - centers[i])
    return distance
