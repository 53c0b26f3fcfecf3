"""The sequential judge: anytime-valid evidence, so looking often costs nothing.

Every metric becomes one or more streams of bad events with exposures: errors per request,
latency above a threshold per request, wrong predictions per matured label. For each stream an
e-process (stats/eprocess.py) bets, look by look, that the candidate's bad-event rate is worse than
the baseline's by more than the margin; the metric's e-value is its streams' weighted mean, and the
rollout rolls back when the weighted mean over metrics reaches 1/alpha (Ville's inequality bounds
the chance of that under "the candidate is within its margins" by alpha, whenever it is read). The
metrics that carry the evidence are named.

A metric passes when a time-uniform confidence bound puts the candidate within its margin: rate
metrics compare the candidate's upper bound with the baseline's lower bound; latency bets the
other way, that the candidate stays below the baseline stretched by the margin.

Latency is tested at thresholds set by the baseline's own quantiles, read before each interval:
a candidate request is bad above ``(1 + margin)`` times the threshold, a baseline one above it. The
buckets are 10% apart, so the candidate's threshold is rounded to an edge, up for the failing side
and down for the passing one: each side errs on its own safe side. With
``distribution`` on, two more kinds of evidence join the configured quantile's: the p50, p90, p99
and p99.9 thresholds, so a regression confined to the tail is caught whatever quantile was
configured; and a rank test over every bucket (judges/rank.py), which uses what the thresholds
throw away. A request's score is the normal quantile of its bucket's mid-rank in the baseline's
histogram before the interval (van der Waerden's scores: efficient for a shift of log-latency), and
the e-process bets that the candidate's scores, read at its latency divided by ``1 + margin``, run
above the baseline's in the same interval (stats/eprocess.py ``shift_bets``). A whole distribution a
few percent slower moves one threshold's exceedances a little but every request's score.

With a shadow lane (``Look.shadow``) the error rate and accuracy read it too: the shadow copies'
failures, and a paired test on the labelled rows both models scored (``_shadow_streams``), so a
candidate can be rolled back in its shadow phase, before it serves anyone.

A sample-ratio mismatch (the candidate's share of requests far from the weight set) holds the
rollout: no step advances on data whose split cannot be trusted. With sticky routing the check is
off (judges/sample_ratio.py), and the judgement says so.

No stream bets on an interval in which the weight changed, nor on those in the few seconds after
(``SampleRatio.settle``: gateways apply a new weight a poll late): the candidate's share changed
partway, and a change both variants share at the same moment (a burst of errors, slower
responses) would then read as a difference between them. Nor on an interval whose counts cannot
be counts of one interval (fewer than before, more bad events than exposures: a counter reset).
The counts move on past such an interval all the same, so the next one is only the new requests;
the rate metrics' confidence bounds read the intervals bet on alone.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, NamedTuple

from modelcanary.domain.judgement import Judgement, Look, Memory, MetricJudgement, Verdict
from modelcanary.domain.metrics import (
    Analysis,
    CostMetric,
    DriftMetric,
    ErrorRateMetric,
    LatencyMetric,
    Metric,
    QualityMetric,
)
from modelcanary.domain.shadow import DECISION_THRESHOLD
from modelcanary.domain.telemetry import LATENCY_EDGES_MS, RolloutTelemetry, score_bucket
from modelcanary.judges import rank
from modelcanary.judges.guardrails import guardrail
from modelcanary.judges.sample_ratio import STICKY, SampleRatio
from modelcanary.stats.classification import Confusion, confusion
from modelcanary.stats.eprocess import (
    bet_above,
    paired_bets,
    paired_stake,
    plug_in_ratio,
    rate_lower,
    rate_upper,
    ratio_bets,
)
from modelcanary.stats.histogram import quantile_of_running

NAME = "sequential"
MEMORY_VERSION = 6  # bump when the meaning of the saved memory changes
DISTRIBUTION_QUANTILES = (0.5, 0.9, 0.99, 0.999)
BASELINE_BOUND_SHARE = 0.1  # of alpha, spent on the baseline bounds that turn absolute margins into ratios
_BUCKET_RATIO = LATENCY_EDGES_MS[1] / LATENCY_EDGES_MS[0]
# the fixed alternatives each e-process bets on, as multiples of its null ratio
GRID = (1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
_SIDE = 1 + len(GRID)  # components per side: the plug-in, then the grid
# the paired test's fixed stakes, as shares of the largest it may make (as many as the grid's ratios)
PAIRED_STAKES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
# An absolute margin over a baseline rate below margin / (_ONE_SAMPLE_RATIO - 1) is tested with the
# one-sample test (candidate vs the baseline's upper bound + margin), not as a rate ratio: a ratio
# null of 1 + margin / L grows without limit as the baseline's rate L goes to 0, and the ratio test
# then bets nothing (at L = 0, never), while the candidate may fail every other request.
_ONE_SAMPLE_RATIO = GRID[-1]


class _Counts(NamedTuple):
    """One stream's cumulative bad events and exposures per variant. (Named tuples: a look makes a
    dozen of each of these, and a frozen dataclass took several times as long to make.)"""

    bad_c: int
    n_c: int
    bad_b: int
    n_b: int


_NONE = _Counts(0, 0, 0, 0)


class _Stream(NamedTuple):
    key: str
    weight: float
    now: _Counts
    prev: _Counts
    r0: float  # the null ratio: bad-event rate of the candidate / the baseline's, at most
    bound: float | None = None  # set instead: the candidate's own bad-event rate, at most (one-sample test)
    paired: float | None = None  # set instead: the paired test's margin (bad_c, bad_b: the discordant pairs)
    # the counts of its passing side, where a verdict reads that (a latency metric's own quantile):
    # the candidate's threshold is rounded the other way, so each side errs on its own safe side
    pass_now: _Counts | None = None
    pass_prev: _Counts | None = None
    # false when the candidate's threshold could not be stretched by the margin (past the last
    # bucket edge): the failing side does not bet on the interval
    stretched: bool = True
    # a shadow lane's: both exposures are the baseline's requests (copies of them), whatever the
    # weight, so an interval in which the weight changed is bet on as any other
    lane: bool = False


def _delta(now: _Counts, prev: _Counts) -> _Counts:
    return _Counts(now.bad_c - prev.bad_c, now.n_c - prev.n_c, now.bad_b - prev.bad_b, now.n_b - prev.n_b)


def _consistent(d: _Counts) -> bool:
    """Whether an interval's counts can be counts: none went down, no more bad events than exposures
    (a counter reset, or two sources out of step, give others; betting on them bets on nothing real)."""
    return 0 <= d.bad_c <= d.n_c and 0 <= d.bad_b <= d.n_b


@dataclass
class _Tails:
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


def judge(analysis: Analysis, look: Look, memory: Memory) -> tuple[Judgement, Memory]:
    tested = [m for m in analysis.metrics if not isinstance(m, DriftMetric | CostMetric)]
    memory = _readable(memory)
    now = look.telemetry
    requests = [now.baseline.requests, now.candidate.requests]
    before_requests = memory.get("requests", [0, 0])
    srm = SampleRatio.read(memory.get("srm"), look, before_requests)
    # whether this look's interval was served at one weight, the gateways caught up: only then do
    # the streams bet on it (the module's docstring)
    settled = srm.settle(look)
    margined = sum(1 for m in tested if isinstance(m, ErrorRateMetric | QualityMetric) and m.margin > 0)
    alpha_e = analysis.alpha * (1 - BASELINE_BOUND_SHARE) if margined else analysis.alpha
    alpha_b = analysis.alpha * BASELINE_BOUND_SHARE / max(margined, 1)

    # the memory's lists are never changed (a look makes new ones), so the new memory may share them
    before: dict[str, list[int]] = memory.get("prev", {})
    start: list[Any] | None = memory.get("rank")  # where the rank test's interval started
    evidence: dict[str, list[float]] = dict(memory.get("e", {}))
    metric_e: dict[str, float] = {}
    tails = _Tails()
    rates: dict[str, _Counts] = {}  # each rate metric's counts now, read again for its verdict
    rank_now, rank_bets = rank.interval(tested, look, start, settled)
    lanes: dict[str, _Counts] = {}  # each shadow stream's counts now
    for metric in tested:
        streams = _streams(metric, before, now, alpha_b, tails, rates)
        if look.shadow and isinstance(metric, ErrorRateMetric | QualityMetric):
            streams += _shadow_streams(metric, before, now, streams[0], lanes)
        total = weights_sum = 0.0
        for stream in streams:
            logs = _update(stream, evidence.get(stream.key, _NO_EVIDENCE), settled)
            evidence[stream.key] = logs
            total += stream.weight * _mixture(logs[:_SIDE])
            weights_sum += stream.weight
        # the rank test weighs from the look the thresholds do on, so the weights never change
        if streams and isinstance(metric, LatencyMetric) and metric.distribution:
            key = f"{metric.name}@shift"
            logs = evidence.get(key, rank.NO_EVIDENCE)
            if rank_bets:
                assert start is not None and rank_now is not None
                logs = evidence[key] = rank.update(metric, start[2:], rank_now[2:], logs)
            total += _mixture(logs[: rank.SIDE])
            weights_sum += 1.0
        metric_e[metric.name] = total / weights_sum if streams else 1.0

    weights = {m.name: m.weight for m in tested}
    combined = sum(weights[n] * e for n, e in metric_e.items()) / sum(weights.values()) if tested else 1.0
    responsible = _responsible(metric_e, weights, 1 / alpha_e) if combined >= 1 / alpha_e else set()
    counted = _counted(tested, before, rates, memory.get("counted", {}), settled)
    judged = tuple(
        guardrail(metric, now)
        if isinstance(metric, DriftMetric | CostMetric)
        else _judge_metric(
            metric,
            now,
            evidence,
            metric_e[metric.name],
            metric.name in responsible,
            analysis.alpha,
            tails,
            rates,
            counted,
        )
        for metric in analysis.metrics
    )
    if look.sticky:
        # the router splits keys: the request share is no binomial at the weight (sample_ratio.py)
        hold, judged = None, (*judged, MetricJudgement.note("sample-ratio", now, STICKY))
    else:
        hold = srm.update(before_requests, requests, look)
    judgement = Judgement(judge=NAME, metrics=judged, e_value=combined, threshold=1 / alpha_e, hold=hold)
    after = _counts_for_next_look(tested, now, tails, rates) | {key: list(c) for key, c in lanes.items() if c != _NONE}
    if after == before and rank_now == start and requests == before_requests:
        return judgement, memory  # a look with no new data changes nothing
    return judgement, {
        "version": MEMORY_VERSION,
        "prev": after,
        "rank": rank_now,
        "requests": requests,
        "e": evidence,
        "srm": srm.saved(),
        "counted": {name: list(c) for name, c in counted.items() if c != _NONE},
    }


def _readable(memory: Memory) -> Memory:
    """The memory, if this version wrote it; one of any other version starts the evidence again at 1
    (still valid, only slower) rather than read numbers whose meaning changed, or weigh evidence
    gathered under other weights."""
    return memory if memory.get("version") == MEMORY_VERSION else {}


def _counts_for_next_look(
    tested: Sequence[Metric], now: RolloutTelemetry, tails: _Tails, rates: dict[str, _Counts]
) -> dict[str, list[int]]:
    """What the next look reads of this one, per stream: the counts so far (a rate stream's, when
    any is not 0), and for latency the thresholds the next interval is tested at (set by the
    baseline's quantiles now) with the counts above them so far. A few numbers a stream, rather
    than every histogram of the look: the memory is saved with the rollout at every look."""
    kept: dict[str, list[int]] = {}
    for metric in tested:
        if isinstance(metric, LatencyMetric):
            # (latencies, not requests: a metric source may count requests it has no latency for)
            if tails.above(now.baseline.latency_counts, 0) < rank.MIN_BASELINE:
                continue
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
            continue
        assert isinstance(metric, ErrorRateMetric | QualityMetric)
        counts = rates[metric.name] if metric.name in rates else _rate_counts(metric, now)
        if counts != _NONE:
            kept[metric.name] = [counts.bad_c, counts.n_c, counts.bad_b, counts.n_b]
    return kept


def _counted(
    tested: Sequence[Metric],
    before: dict[str, list[int]],
    rates: dict[str, _Counts],
    so_far: dict[str, list[int]],
    settled: bool,
) -> dict[str, _Counts]:
    """Each rate metric's counts over the intervals its stream bets on (settled at one weight, and
    consistent), which its confidence bounds read: a candidate that served most of its requests
    after a step, beside a baseline whose requests came before it, is not compared with it over
    the interval that mixed the two. (A step whose shared conditions differ from the last's still
    is: docs/sequential-judge.md, "What it does not do".)"""
    counted: dict[str, _Counts] = {}
    for metric in tested:
        if not isinstance(metric, ErrorRateMetric | QualityMetric):
            continue
        total = _Counts(*so_far[metric.name]) if metric.name in so_far else _NONE
        prev = _Counts(*before[metric.name]) if metric.name in before else _NONE
        delta = _delta(rates[metric.name], prev)
        if settled and _consistent(delta):
            total = _Counts(*(a + b for a, b in zip(total, delta, strict=True)))
        counted[metric.name] = total
    return counted


_NO_EVIDENCE = [0.0] * _SIDE


def _update(stream: _Stream, logs: list[float], settled: bool) -> list[float]:
    """Add one interval's bets to each component of the stream's e-process against "within the
    margin" (the failing side), and of its e-process against "beyond it" (the passing side) where
    a verdict reads that: rate metrics pass on confidence bounds instead, and a latency metric on
    its own quantile only.

    Each e-process is an even mixture of a plug-in bet (the ratio estimated from before the
    interval, so it is predictable, and it learns the effect's size) and fixed bets on a grid of
    ratios (which need no past, so a first look or a large batch is not wasted). A mixture of test
    supermartingales is one; it costs at most log 2 against the better half.

    No bet on an interval that was not ``settled`` at one weight (a lane's excepted) or whose counts
    are not ``_consistent``: which intervals are skipped is fixed before their bad events are read,
    so the product of the others is still a test supermartingale.
    """
    fail = logs[:_SIDE]
    passing = (logs[_SIDE:] or _NO_EVIDENCE) if stream.pass_now is not None else []
    x_c, n_c, x_b, n_b = delta = _delta(stream.now, stream.prev)
    if not (settled or stream.lane) or not _consistent(delta):
        return fail + passing
    if stream.paired is not None:
        if x_c + x_b > n_c:  # more discordant pairs than pairs
            return fail
        # the paired test: the plug-in stakes what the pairs so far suggest, the rest fixed shares
        margin, prev = stream.paired, stream.prev
        top = 1 / (1 + margin)
        stakes = [paired_stake(prev.bad_c, prev.bad_b, prev.n_c, margin), *(top * s for s in PAIRED_STAKES)]
        return [log + bet for log, bet in zip(logs[:_SIDE], paired_bets(x_c, x_b, n_c, margin, stakes), strict=True)]
    if stream.bound is not None:
        # the one-sample test: the candidate's rate against the bound; the plug-in bets at the
        # candidate's own smoothed rate so far, the grid at multiples of the bound
        bound = stream.bound
        a_hat = (stream.prev.bad_c + 0.5) / (stream.prev.n_c + 1.0)
        bets = [a_hat, *(bound * g for g in GRID)]
        return [log + bet_above(x_c, n_c, bound, a) for log, a in zip(logs[:_SIDE], bets, strict=True)]
    r0, prev = stream.r0, stream.prev
    if stream.stretched:
        r_hat = min(plug_in_ratio(prev.bad_c, prev.n_c, prev.bad_b, prev.n_b), 50.0)
        worse = ratio_bets(x_c, x_b, n_c, n_b, r0, [r_hat, *(r0 * g for g in GRID)], worse=True)
        fail = [log + bet for log, bet in zip(fail, worse, strict=True)]
    if stream.pass_now is None or stream.pass_prev is None:
        return fail
    # the passing side reads the candidate at its own threshold: its own counts, and its own plug-in
    x_pass = stream.pass_now.bad_c - stream.pass_prev.bad_c
    if not 0 <= x_pass <= n_c:
        return fail + passing
    r_pass = min(plug_in_ratio(stream.pass_prev.bad_c, prev.n_c, prev.bad_b, prev.n_b), 50.0)
    better = ratio_bets(x_pass, x_b, n_c, n_b, r0, [r_pass, *(r0 / g for g in GRID)], worse=False)
    return fail + [log + bet for log, bet in zip(passing, better, strict=True)]


def _mixture(logs: list[float]) -> float:
    """The e-value of one side: half on the plug-in component, half spread over the grid."""
    plug_in, grid = logs[0], logs[1:]
    return 0.5 * math.exp(min(plug_in, 700.0)) + 0.5 * sum([math.exp(min(g, 700.0)) for g in grid]) / len(grid)


def _responsible(metric_e: dict[str, float], weights: dict[str, float], threshold: float) -> set[str]:
    """The fewest metrics whose evidence alone reaches the threshold."""
    total, names = sum(weights.values()), set()
    running = 0.0
    for name in sorted(metric_e, key=lambda n: weights[n] * metric_e[n], reverse=True):
        names.add(name)
        running += weights[name] * metric_e[name] / total
        if running >= threshold:
            break
    return names


# -- streams ---------------------------------------------------------------------------------------


def _streams(
    metric: Metric,
    before: dict[str, list[int]],
    now: RolloutTelemetry,
    alpha_b: float,
    tails: _Tails,
    rates: dict[str, _Counts],
) -> list[_Stream]:
    if isinstance(metric, LatencyMetric):
        streams = []
        for _, key, weight in _latency_keys(metric):
            kept = before.get(key)
            if kept is None:  # the baseline had too few requests at the last look to set thresholds
                return []
            index, cand_index, bad_c, n_c, bad_b, n_b, *passing = kept
            now_above, prev = _above(now, index, cand_index, tails), _Counts(bad_c, n_c, bad_b, n_b)
            pass_now = pass_prev = None
            if passing:  # the configured quantile's (it comes first): its passing side is the metric's
                pass_index, pass_bad_c = passing
                pass_now = now_above._replace(bad_c=tails.above(now.candidate.latency_counts, pass_index))
                pass_prev = prev._replace(bad_c=pass_bad_c)
            streams.append(
                _Stream(
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
        return streams
    assert isinstance(metric, ErrorRateMetric | QualityMetric)
    counts_now = rates[metric.name] = _rate_counts(metric, now)
    counts_prev = _Counts(*before[metric.name]) if metric.name in before else _NONE
    r0, bound = 1.0, None
    if metric.margin > 0:
        # H0 is rate_c <= rate_b + margin. A time-uniform confidence sequence on the baseline's rate
        # from the data before the interval (its own alpha spent; both ends hold at once) turns it
        # into a null the e-process can bet against: as a ratio, 1 + margin / L with L the lower
        # end; where the baseline's rate is near 0 that ratio is useless (infinite at L = 0), so the
        # candidate's rate alone is tested against U + margin with U the upper end. Until the
        # baseline has shown anything, U is 1 and nothing is bet.
        low = rate_lower(counts_prev.bad_b, counts_prev.n_b, alpha_b)
        if low * (_ONE_SAMPLE_RATIO - 1) > metric.margin:
            r0 = 1 + metric.margin / low
        else:
            r0, bound = math.inf, rate_upper(counts_prev.bad_b, counts_prev.n_b, alpha_b) + metric.margin
    return [_Stream(key=metric.name, weight=1.0, now=counts_now, prev=counts_prev, r0=r0, bound=bound)]


def _shadow_streams(
    metric: ErrorRateMetric | QualityMetric,
    before: dict[str, list[int]],
    now: RolloutTelemetry,
    live: _Stream,
    lanes: dict[str, _Counts],
) -> list[_Stream]:
    """A rollout with a shadow lane reads the candidate's shadow predictions as well: an error
    rate, the shadow copies' failures against the baseline's, tested as the live stream is (same
    null); accuracy at the lane's decision threshold, the paired test on the labelled rows both
    models scored (``paired_bets``). These count before the candidate serves anyone, so a
    candidate that fails in shadow is rolled back from there. Each weighs as much as the live stream."""
    lane = now.candidate.shadow
    if isinstance(metric, ErrorRateMetric):
        key = f"{metric.name}@shadow"
        errors, requests = (lane.errors, lane.requests) if lane is not None else (0, 0)
        counts = _Counts(errors, requests, now.baseline.errors, now.baseline.requests)
        paired = None
    elif metric.measure == "accuracy" and abs(metric.threshold - DECISION_THRESHOLD) < 1e-9:
        key = f"{metric.name}@paired"
        _, worse, better, _ = lane.paired_labels if lane is not None else (0, 0, 0, 0)
        labelled = sum(lane.paired_labels) if lane is not None else 0
        counts, paired = _Counts(worse, labelled, better, labelled), metric.margin
    else:
        return []  # the lane pairs decisions at its own threshold only, and right or wrong only
    lanes[key] = counts
    prev = _Counts(*before[key]) if key in before else _NONE
    return [_Stream(key=key, weight=1.0, now=counts, prev=prev, r0=live.r0, bound=live.bound, paired=paired, lane=True)]


def _rate_counts(metric: ErrorRateMetric | QualityMetric, t: RolloutTelemetry) -> _Counts:
    if isinstance(metric, ErrorRateMetric):
        return _Counts(t.candidate.errors, t.candidate.requests, t.baseline.errors, t.baseline.requests)
    bucket = score_bucket(metric.threshold)
    base = confusion(t.baseline.positive_label_scores, t.baseline.negative_label_scores, bucket)
    cand = confusion(t.candidate.positive_label_scores, t.candidate.negative_label_scores, bucket)

    def bad_and_exposure(c: Confusion) -> tuple[int, int]:
        if metric.measure == "accuracy":
            return c.fp + c.fn, c.n
        if metric.measure == "precision":
            return c.fp, c.tp + c.fp
        return c.fn, c.tp + c.fn

    (bad_c, n_c), (bad_b, n_b) = bad_and_exposure(cand), bad_and_exposure(base)
    return _Counts(bad_c, n_c, bad_b, n_b)


def _latency_keys(metric: LatencyMetric) -> list[tuple[float, str, float]]:
    """The quantiles a latency metric is tested at, each with its stream's key and weight: the
    configured one carries the metric, the distribution's others share its weight once more."""
    quantiles = [metric.quantile]
    if metric.distribution:
        quantiles += [q for q in DISTRIBUTION_QUANTILES if abs(q - metric.quantile) > 1e-9]
    return [
        (q, f"{metric.name}@q{q:g}", 1.0 if q == metric.quantile else 1.0 / (len(quantiles) - 1)) for q in quantiles
    ]


def _above(t: RolloutTelemetry, index: int, cand_index: int, tails: _Tails) -> _Counts:
    """Requests above the thresholds: the candidate's at bucket ``cand_index`` (the last, past it),
    the baseline's at ``index``."""
    return _Counts(
        tails.above(t.candidate.latency_counts, min(cand_index, len(LATENCY_EDGES_MS))),
        t.candidate.requests,
        tails.above(t.baseline.latency_counts, index),
        t.baseline.requests,
    )


def _bucket_above(value: float) -> int:
    """The first bucket whose lower edge is at or above ``value``."""
    return bisect_left(LATENCY_EDGES_MS, value) + 1


# -- verdicts --------------------------------------------------------------------------------------


def _judge_metric(
    metric: ErrorRateMetric | LatencyMetric | QualityMetric,
    now: RolloutTelemetry,
    evidence: dict[str, list[float]],
    e_value: float,
    failed: bool,
    alpha: float,
    tails: _Tails,
    rates: dict[str, _Counts],
    counted: dict[str, _Counts],
) -> MetricJudgement:
    if isinstance(metric, LatencyMetric):
        return _latency_verdict(metric, now, evidence, e_value, failed, alpha, tails)
    counts = rates[metric.name]  # (as ``_streams`` read them)
    minimum = metric.min_requests if isinstance(metric, ErrorRateMetric) else metric.min_labels
    rate_c = counts.bad_c / counts.n_c if counts.n_c else None
    rate_b = counts.bad_b / counts.n_b if counts.n_b else None
    # the bounds read the intervals the stream bet on (``_counted``)
    judged = counted.get(metric.name, _NONE)
    high_c = rate_upper(judged.bad_c, judged.n_c, alpha / 4)
    ceiling = rate_lower(judged.bad_b, judged.n_b, alpha / 4) + metric.margin  # the most high_c may be
    within = high_c <= ceiling
    quality = isinstance(metric, QualityMetric)

    def shown(rate: float | None) -> float | None:  # quality is reported as the measure, not its misses
        return None if rate is None else (1 - rate if quality else rate)

    # reported on the metric's own scale: the bound is the candidate's worst plausible value, and the
    # limit the figure it is compared with, the baseline's best plausible value moved by the margin
    limit = None if judged.n_b == 0 else (1 - ceiling if quality else ceiling)
    bound = 1 - high_c if quality else high_c
    what = "labels" if quality else "requests"
    unscored = now.baseline.unscored_labels + now.candidate.unscored_labels if quality else 0
    unread = f"; {unscored} more for predictions without a score, which it cannot read" if unscored else ""
    return _verdict(
        metric,
        failed=failed,
        passed=within and min(counts.n_c, counts.n_b) >= minimum,
        no_data=min(counts.n_c, counts.n_b) < minimum and not failed,
        values=(shown(rate_b), shown(rate_c)),
        limit=limit,
        bound=bound,
        e_value=e_value,
        samples=(counts.n_b, counts.n_c),
        unit=metric.measure if isinstance(metric, QualityMetric) else "error rate",
        detail=f"{counts.n_c} candidate and {counts.n_b} baseline {what}, {minimum} needed of each{unread}",
    )


def _latency_verdict(
    metric: LatencyMetric,
    now: RolloutTelemetry,
    evidence: dict[str, list[float]],
    e_value: float,
    failed: bool,
    alpha: float,
    tails: _Tails,
) -> MetricJudgement:
    base = tails.quantile(now.baseline.latency_counts, metric.quantile)
    cand = tails.quantile(now.candidate.latency_counts, metric.quantile)
    logs = evidence.get(f"{metric.name}@q{metric.quantile:g}")
    pass_e = _mixture(logs[_SIDE:]) if logs and len(logs) > _SIDE else 1.0
    samples = (tails.above(now.baseline.latency_counts, 0), tails.above(now.candidate.latency_counts, 0))
    limit = None if base is None else base * (1 + metric.margin)
    # (the e-process compares counts above thresholds at bucket edges; a pass also needs the quantile
    # read off the histograms within the limit, so that a pass never reports one beyond it)
    estimated = cand is not None and limit is not None and cand <= limit
    return _verdict(
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


def _verdict(
    metric: Metric,
    *,
    failed: bool,
    passed: bool,
    no_data: bool,
    values: tuple[float | None, float | None],
    limit: float | None,
    bound: float | None,
    e_value: float,
    samples: tuple[int, int],
    unit: str,
    detail: str,
) -> MetricJudgement:
    base, cand = values
    estimates = f"candidate {_fmt(cand)} vs baseline {_fmt(base)} {unit}, e-value {e_value:.3g}"
    if failed:
        verdict, reason = Verdict.FAIL, f"evidence of a regression: {estimates}"
    elif no_data:
        verdict, reason = Verdict.NO_DATA, f"no data: {detail}"
    elif passed:
        verdict, reason = Verdict.PASS, f"within margin: {estimates}"
    else:
        verdict, reason = Verdict.INCONCLUSIVE, f"not yet shown within margin: {estimates}"
    return MetricJudgement(
        name=metric.name,
        kind=metric.kind,
        verdict=verdict,
        baseline=base,
        candidate=cand,
        limit=limit,
        baseline_samples=samples[0],
        candidate_samples=samples[1],
        reason=reason,
        unit=unit,
        e_value=e_value,
        bound=bound,
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
