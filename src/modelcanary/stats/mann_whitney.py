"""The numerics behind the Kayenta-style judge: R's ``wilcox.test`` interval on a location shift,
as Kayenta's MannWhitney port computes it, and Kayenta's IQR outlier detector."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

IQR_FACTOR = 3.0  # NetflixACAJudge: IQRDetector(factor = 3.0, reduceSensitivity = true)


def shift_interval(
    experiment: Sequence[float], control: Sequence[float], confidence: float
) -> tuple[float, float, float]:
    """R's ``wilcox.test(experiment, control, conf.int = TRUE, exact = FALSE, correct = TRUE)``:
    the interval on the location shift and its Hodges-Lehmann estimate (the median of all pairwise
    differences, inside the region R's root search for the estimate lands in).

    R finds each end with ``uniroot(tol = 1e-4)`` on a step function of the shift; its ends are the
    steps, pairwise differences, which are returned exactly. When the confidence is out of reach
    (few points), an end falls back to the smallest or largest difference, as in R. As in R, all
    values tied on both sides have no interval (the classifier never asks for one).
    """
    import numpy as np  # here, not at the top: every CLI command imports this module, few judge

    x, y = np.asarray(experiment, dtype=float), np.asarray(control, dtype=float)
    diffs = np.sort(np.subtract.outer(x, y), axis=None)
    n = diffs.size
    # between the steps no value of x - mu ties one of y: only the ties within each side count
    sigma = _sigma(len(x), len(y), _tie_term(x.tolist()) + _tie_term(y.tolist()))
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    mu_min, mu_max = float(x.min() - y.max()), float(x.max() - y.min())
    at_min, at_max = _wdiff(x, y, mu_min), _wdiff(x, y, mu_max)

    def root(zq: float) -> float:
        if at_min - zq <= 0:
            return mu_min
        if at_max - zq >= 0:
            return mu_max
        # the step where (dz - correction) / sigma falls to zq: with G differences above the shift,
        # dz = G - n/2, and the continuity-corrected statistic reaches zq once G <= n/2 + t + sign(t)/2
        t = zq * sigma
        rank = math.ceil(n - (n / 2 + t + math.copysign(0.5, t)))
        return float(diffs[min(max(rank, 1), n) - 1])

    return root(z), root(-z), float(diffs[(n - 1) // 2] + diffs[n // 2]) / 2


def percentile(ordered: Sequence[float], p: float) -> float:
    """Apache Commons Math's default (legacy) percentile of sorted values, as Kayenta's IQRDetector
    reads it: position ``p (n + 1) / 100``, linear between neighbours, clamped to the ends.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 25), percentile([1.0, 2.0, 3.0, 4.0], 99)
    (1.25, 4.0)
    """
    n = len(ordered)
    pos = p * (n + 1) / 100
    if pos < 1:
        return ordered[0]
    if pos >= n:
        return ordered[-1]
    low = math.floor(pos)
    return ordered[low - 1] + (pos - low) * (ordered[low] - ordered[low - 1])


def without_outliers(values: Sequence[float]) -> list[float]:
    """Kayenta's IQRDetector(factor = 3, reduceSensitivity = true): drop values beyond the wider of
    the 3-IQR Tukey fences and the 1st/99th percentiles (so nothing goes below 100 values)."""
    if len(values) < 100:
        return list(values)
    ordered = sorted(values)
    q1, q3 = percentile(ordered, 25), percentile(ordered, 75)
    low = min(percentile(ordered, 1), q1 - IQR_FACTOR * (q3 - q1))
    high = max(percentile(ordered, 99), q3 + IQR_FACTOR * (q3 - q1))
    return [value for value in values if low <= value <= high]


def _tie_term(values: Iterable[float]) -> float:
    """``sum(t**3 - t)`` over the groups of equal values: the ties' share of the rank variance."""
    return float(sum(t**3 - t for t in Counter(values).values()))


def _sigma(nx: int, ny: int, ties: float) -> float:
    return math.sqrt(nx * ny / 12 * ((nx + ny + 1) - ties / ((nx + ny) * (nx + ny - 1))))


def _wdiff(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], mu: float) -> float:
    """R's ``wdiff(mu, 0)``: the continuity-corrected rank statistic of ``x - mu`` against ``y``. The
    rank sum of ``x - mu`` over its minimum is the pairs it beats plus half the pairs it ties, ties
    across the two sides included, exactly as R's average ranks give it."""
    import numpy as np

    shifted = x - mu
    beats = np.count_nonzero(shifted[:, None] > y) + np.count_nonzero(shifted[:, None] == y) / 2
    dz = float(beats) - len(x) * len(y) / 2
    sigma = _sigma(len(x), len(y), _tie_term([*shifted.tolist(), *y.tolist()]))
    return (dz - math.copysign(0.5, dz) * (dz != 0)) / sigma
