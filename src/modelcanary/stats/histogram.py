"""Quantiles of binned data, as Prometheus' ``histogram_quantile`` reads them: linear within a bucket."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate


def quantile(edges: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q``-quantile of values binned so that ``counts[i]`` lies in ``[edges[i-1], edges[i])``.

    The open first bucket is read as ``[0, edges[0])``; the open last one reports its lower edge,
    since nothing is known above it. ``None`` when there are no values.

    >>> quantile([10, 20, 30], [0, 5, 5, 0], 0.5)
    20.0
    >>> quantile([10, 20, 30], [0, 0, 0, 0], 0.5) is None
    True
    """
    return quantile_of_running(edges, counts, list(accumulate(counts)), q)


def quantile_of_running(
    edges: Sequence[float], counts: Sequence[int], running: Sequence[int], q: float
) -> float | None:
    """``quantile``, given the running sums of ``counts`` too (a caller reading several quantiles,
    or tails, of one histogram sums it once).

    >>> quantile_of_running([10, 20, 30], [0, 5, 5, 0], [0, 5, 10, 10], 0.5)
    20.0
    """
    if not 0 < q < 1:
        raise ValueError("q must be in (0, 1)")
    if len(counts) != len(edges) + 1 or len(running) != len(counts):
        raise ValueError("a histogram has one more bucket than edges")
    total = running[-1]
    if total == 0:
        return None
    rank = q * total
    # the first bucket whose running count reaches the rank: it holds values (rank > 0, and the
    # running count before it is short of the rank)
    index = bisect_left(running, rank)
    if index >= len(edges):  # the open last bucket
        return float(edges[-1])
    seen = running[index - 1] if index else 0
    low = 0.0 if index == 0 else float(edges[index - 1])
    return low + (float(edges[index]) - low) * (rank - seen) / counts[index]
