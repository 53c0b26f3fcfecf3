"""The sequential judge's rank test for latency: every request's rank, not only the few near a threshold.

A threshold sees a request only as above or below it; a whole distribution a few percent slower
moves a threshold's exceedances a little but every request's rank. Each request is scored by its
bucket's mid-rank in the baseline's histogram before the interval, as a normal quantile (van der
Waerden's scores: efficient for a shift of log-latency), and an e-process bets that the candidate's
scores, read at its latency divided by ``1 + margin``, run above the baseline's in the same interval
(``stats.eprocess.shift_bets``: conditioned on the pooled scores, so shared conditions cancel).
docs/sequential-judge.md has the argument; ``judges.sequential`` weighs it into the latency metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from itertools import accumulate
from statistics import NormalDist
from typing import Any

from modelcanary.domain.judgement import Look
from modelcanary.domain.metrics import LatencyMetric, Metric
from modelcanary.domain.telemetry import LATENCY_EDGES_MS
from modelcanary.stats.eprocess import shift_bets

GRID = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)  # the fixed bets (per request, on scores in [0, 1])
SIDE = 1 + len(GRID)  # the plug-in bet, then the grid
EVERY_S = 10.0  # the shortest interval
MIN_BASELINE = 20  # baseline latencies before the latency thresholds and this test start
_PLUG_IN_MAX = 10.0
_Z = 3.0  # normal scores are clipped to [-_Z, _Z] and mapped onto [0, 1]
_BUCKET_RATIO = LATENCY_EDGES_MS[1] / LATENCY_EDGES_MS[0]


def interval(
    tested: Sequence[Metric], look: Look, start: list[Any] | None, settled: bool
) -> tuple[list[Any] | None, bool]:
    """Where the rank test's interval starts after this look, and whether the test bets on the one
    that ends now. An interval is ``[at, weight, lo, hi, ...]``: its start's time and weight, and
    both variants' latency histograms then (``[lo, hi]`` and the buckets ``lo..hi-1`` of the
    candidate's, then of the baseline's; the buckets outside hold none).

    An interval runs at least ``EVERY_S``: a controller looks every second, and the test
    reads every bucket, so betting on ten looks at once costs a tenth and loses nothing (the pooled
    requests of a longer interval are as exchangeable, at one weight, as a shorter one's). One whose
    weight changed is dropped unread: its candidate share changed partway, so its requests are not.
    Until the weight has settled (``settled`` false: ``SampleRatio.settle``, gateways still
    catching up with a new weight) the interval starts again at every look, so the first one bet on
    starts after the gateways' lag. A rollout's first interval, and the first at each new weight, is
    shorter by ``look.phase`` of ``EVERY_S``, so that a thousand rollouts started in one tick do not
    all bet in one tick."""
    if not any(isinstance(m, LatencyMetric) and m.distribution for m in tested):
        return None, False
    same = settled and start is not None and start[1] == look.weight
    if same and start is not None and look.at - start[0] < EVERY_S:
        return start, False
    cand, base = look.telemetry.candidate.latency_counts, look.telemetry.baseline.latency_counts
    if sum(base) < MIN_BASELINE:
        return None, False
    used = [i for i, (c, b) in enumerate(zip(cand, base, strict=True)) if c or b]
    lo, hi = used[0], used[-1] + 1
    bets = same
    # a first interval (at the start or a new weight) is shorter by the rollout's phase, so that
    # rollouts started or stepped together bet in different ticks
    at = look.at if bets else look.at - look.phase * EVERY_S
    return [at, look.weight, lo, hi, *cand[lo:hi], *base[lo:hi]], bets


NO_EVIDENCE = [0.0] * (SIDE + 2)  # the logs, then the excess and its variance summed over the intervals
_NORMAL = NormalDist()


def update(metric: LatencyMetric, kept: list[int], kept_now: list[int], logs: list[float]) -> list[float]:
    """Add one interval's bets to the rank test's e-process (the module's docstring), and its excess
    and variance to the sums its plug-in bet is estimated from (that ratio is the best bet on
    normal-ish scores, and is read before the interval, so it is predictable). ``kept`` and
    ``kept_now`` are the histograms at the interval's start and now, as ``interval`` keeps them."""
    import numpy as np  # here, not at the top: the CLI imports this module and needs no numpy

    (lo, hi, *flat), (lo_now, hi_now, *flat_now) = kept, kept_now
    if lo < lo_now or hi > hi_now:
        return logs  # the histograms went back (telemetry reset): no bet on this interval
    # over this look's buckets, and one more in front for every bucket below them (the baseline
    # had none there): the interval's new requests per bucket, candidate's then baseline's, and
    # the baseline's before it
    width, width_now = hi - lo, hi_now - lo_now
    before_pad, after_pad = [0] * (1 + lo - lo_now), [0] * (hi_now - hi)
    prev_c, prev_b = [*before_pad, *flat[:width], *after_pad], [*before_pad, *flat[width:], *after_pad]
    new_c = [a - b for a, b in zip([0, *flat_now[:width_now]], prev_c, strict=True)]
    new_b = [a - b for a, b in zip([0, *flat_now[width_now:]], prev_b, strict=True)]
    if min(new_c) < 0 or min(new_b) < 0:
        return logs
    # the candidate is read at its latency / (1 + margin): down by the margin in buckets, rounded up
    # (so it reads a little faster than it is: the safe side), the lowest ones into the front bucket
    shift = math.ceil(math.log1p(metric.margin) / math.log(_BUCKET_RATIO) - 1e-9)
    if shift:
        new_c = [sum(new_c[: 1 + shift]), *new_c[1 + shift :], *[0] * min(shift, len(new_c) - 1)]
    # each bucket's smoothed mid-rank in the baseline before the interval, as a normal score
    below = list(accumulate(prev_b))
    total = below[-1] + 1
    ranks = np.array([(run - 0.5 * count + 0.5) / total for run, count in zip(below, prev_b, strict=True)])
    scores = np.interp(ranks, *_normal_scores())
    excess_sum, variance_sum = logs[SIDE], logs[SIDE + 1]
    plug_in = min(max(excess_sum / variance_sum, 0.0), _PLUG_IN_MAX) if variance_sum > 0 else 0.0
    bets, excess, variance = shift_bets(scores, new_c, new_b, [plug_in, *GRID])
    return [log + bet for log, bet in zip(logs[:SIDE], bets, strict=True)] + [
        excess_sum + excess,
        variance_sum + variance,
    ]


def prepare() -> None:
    """Import numpy and make the rank test's table (``judges.prepare``)."""
    _normal_scores()


@cache
def _normal_scores() -> tuple[Any, Any]:
    """A table of mid-ranks and their scores (numpy arrays): the normal quantile, clipped to
    [-_Z, _Z], mapped onto [0, 1]. Read by linear interpolation (monotone, as a score must be;
    within 1e-3 of the quantile), since the quantile function is pure Python and a look reads every
    bucket."""
    import numpy as np

    low, high = _NORMAL.cdf(-_Z), _NORMAL.cdf(_Z)
    ranks = np.linspace(low, high, 4097)
    return ranks, np.array([(min(max(_NORMAL.inv_cdf(r), -_Z), _Z) + _Z) / (2 * _Z) for r in ranks.tolist()])
