"""Latency as streams of bad events: requests above thresholds set by the baseline's quantiles.

The thresholds are read off the baseline's histogram before each interval: a candidate request is
bad above ``(1 + margin)`` times the threshold, a baseline one above it. The buckets are 10% apart,
so the candidate's threshold is rounded to an edge, up for the failing side and down for the
passing one: each side errs on its own safe side. With ``distribution`` on, the p50, p90, p99 and
p99.9 thresholds join the configured quantile's, so a regression confined to the tail is caught
whatever quantile was configured (the rank test over every bucket, which uses what the thresholds
throw away, is judges/rank.py).

A look keeps, per threshold, the bucket indices and the counts above them (``thresholds``); the
next look reads its interval's streams from them (``streams``). A latency metric passes on its own
quantile's passing side, and on the quantile read off the histograms within its limit (``verdict``).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import accumulate

from modelcanary.domain.judgement import MetricJudgement
from modelcanary.domain.metrics import LatencyMetric
from modelcanary.domain.telemetry import LATENCY_EDGES_MS, RolloutTelemetry
from modelcanary.judges import rank
from modelcanary.judges.evidence import SIDE, Counts, Stream, metric_judgement, mixture
from modelcanary.stats.histogram import quantile_of_running

DISTRIBUTION_QUANTILES = (0.5, 0.9, 0.99, 0.999)
_BUCKET_RATIO = LATENCY_EDGES_MS[1] / LATENCY_EDGES_MS[0]


@dataclass
class Tails:
    """The running sums of the latency histograms one look reads, each summed once: a look reads
    four histograms for up to six quantiles and sixteen counts above a threshold."""

    _running: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict)

    def running(self, counts: list[int]) -> list[int]:
        found = self._running.get(id(counts))
        if found is None:  # the list is kept with its sums, so its id is not reused during the look
            found = self._running[id(counts)] = (counts, list(accumulate(counts)))
        return found[1]

    def above(self, counts: list[int], index: int) -> int:
        """``sum(counts[index:])``."""
        running = self.running(counts)
        return running[-1] - running[index - 1] if index else running[-1]

    def quantile(self, counts: list[int], q: float) -> float | None:
        return quantile_of_running(LATENCY_EDGES_MS, counts, self.running(counts), q)


def streams(metric: LatencyMetric, before: dict[str, list[int]], now: RolloutTelemetry, tails: Tails) -> list[Stream]:
    """The metric's streams over the interval since the last look, at the thresholds it kept."""
    found = []
    for _, key, weight in _latency_keys(metric):
        kept = before.get(key)
        if kept is None:  # the baseline had too few requests at the last look to set thresholds
            return []
        index, cand_index, bad_c, n_c, bad_b, n_b, *passing = kept
        now_above, prev = _above(now, index, cand_index, tails), Counts(bad_c, n_c, bad_b, n_b)
        pass_now = pass_prev = None
        if passing:  # the configured quantile's (it comes first): its passing side is the metric's
            pass_index, pass_bad_c = passing
            pass_now = now_above._replace(bad_c=tails.above(now.candidate.latency_counts, pass_index))
            pass_prev = prev._replace(bad_c=pass_bad_c)
        found.append(
            Stream(
                key=key,
                weight=weight,
                now=now_above,
                prev=prev,
                r0=1.0,
                pass_now=pass_now,
                pass_prev=pass_prev,
                stretched=cand_index <= len(LATENCY_EDGES_MS),
            )
        )
    return found


def thresholds(metric: LatencyMetric, now: RolloutTelemetry, tails: Tails) -> dict[str, list[int]]:
    """What the next look reads of this one, per stream: the thresholds the next interval is tested
    at (set by the baseline's quantiles now), with the counts above them so far; none while the
    baseline has too few latencies to set them."""
    kept: dict[str, list[int]] = {}
    # (latencies, not requests: a metric source may count requests it has no latency for)
    if tails.above(now.baseline.latency_counts, 0) < rank.MIN_BASELINE:
        return kept
    # the candidate's threshold is the baseline's stretched by the margin, rounded to a bucket
    # edge: up for the failing side, down for the passing one, so each errs on its own safe
    # side (rounded up for both, a candidate up to 10% slower was shown within a 1% margin)
    buckets = math.log1p(metric.margin) / math.log(_BUCKET_RATIO)
    up, down = math.ceil(buckets - 1e-9), math.floor(buckets + 1e-9)
    for position, (q, key, _) in enumerate(_latency_keys(metric)):
        edge = tails.quantile(now.baseline.latency_counts, q)
        assert edge is not None
        index = min(_bucket_above(edge), len(LATENCY_EDGES_MS))  # requests in buckets >= index exceed it
        # past the last edge the stretched threshold does not exist: kept as it is, and the
        # failing side then bets nothing (a lower threshold would not be the margin's)
        cand_index = index + up
        counts = _above(now, index, cand_index, tails)
        kept[key] = [index, cand_index, counts.bad_c, counts.n_c, counts.bad_b, counts.n_b]
        if position == 0:  # the configured quantile's passing side: the candidate's own threshold
            # (lower past the last edge: a stricter test of "better", still on its safe side)
            pass_index = min(index + down, len(LATENCY_EDGES_MS))
            kept[key] += [pass_index, tails.above(now.candidate.latency_counts, pass_index)]
    return kept


def verdict(
    metric: LatencyMetric,
    now: RolloutTelemetry,
    evidence: dict[str, list[float]],
    e_value: float,
    failed: bool,
    alpha: float,
    tails: Tails,
) -> MetricJudgement:
    base = tails.quantile(now.baseline.latency_counts, metric.quantile)
    cand = tails.quantile(now.candidate.latency_counts, metric.quantile)
    logs = evidence.get(f"{metric.name}@q{metric.quantile:g}")
    pass_e = mixture(logs[SIDE:]) if logs and len(logs) > SIDE else 1.0
    samples = (tails.above(now.baseline.latency_counts, 0), tails.above(now.candidate.latency_counts, 0))
    limit = None if base is None else base * (1 + metric.margin)
    # (the e-process compares counts above thresholds at bucket edges; a pass also needs the quantile
    # read off the histograms within the limit, so that a pass never reports one beyond it)
    estimated = cand is not None and limit is not None and cand <= limit
    return metric_judgement(
        metric,
        failed=failed,
        passed=pass_e >= 2 / alpha and min(samples) >= metric.min_requests and estimated,
        no_data=min(samples) < metric.min_requests and not failed,
        values=(base, cand),
        limit=limit,
        bound=None,
        e_value=e_value,
        samples=samples,
        unit="ms",
        detail=f"{samples[1]} candidate and {samples[0]} baseline latencies, {metric.min_requests} needed",
    )


def _latency_keys(metric: LatencyMetric) -> list[tuple[float, str, float]]:
    """The quantiles a latency metric is tested at, each with its stream's key and weight: the
    configured one carries the metric, the distribution's others share its weight once more."""
    quantiles = [metric.quantile]
    if metric.distribution:
        quantiles += [q for q in DISTRIBUTION_QUANTILES if abs(q - metric.quantile) > 1e-9]
    return [
        (q, f"{metric.name}@q{q:g}", 1.0 if q == metric.quantile else 1.0 / (len(quantiles) - 1)) for q in quantiles
    ]


def _above(t: RolloutTelemetry, index: int, cand_index: int, tails: Tails) -> Counts:
    """Requests above the thresholds, of those a model answered (``VariantTelemetry.called``):
    the candidate's at bucket ``cand_index`` (the last, past it), the baseline's at ``index``."""
    return Counts(
        tails.above(t.candidate.latency_counts, min(cand_index, len(LATENCY_EDGES_MS))),
        t.candidate.called,
        tails.above(t.baseline.latency_counts, index),
        t.baseline.called,
    )


def _bucket_above(value: float) -> int:
    """The first bucket whose lower edge is at or above ``value``."""
    return bisect_left(LATENCY_EDGES_MS, value) + 1
