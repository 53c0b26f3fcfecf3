"""The sequential judge: anytime-valid evidence, so looking often costs nothing.

Every metric becomes one or more streams of bad events with exposures: errors per request,
latency above a threshold per request, wrong predictions per matured label. For each stream an
e-process (judges/evidence.py, on stats/eprocess.py) bets, look by look, that the candidate's
bad-event rate is worse than the baseline's by more than the margin; the metric's e-value is its
streams' weighted mean, and the rollout rolls back when the weighted mean over metrics reaches
1/alpha (Ville's inequality bounds the chance of that under "the candidate is within its margins"
by alpha, whenever it is read). The metrics that carry the evidence are named.

A metric passes when a time-uniform confidence bound puts the candidate within its margin: rate
metrics compare the candidate's upper bound with the baseline's lower bound; latency bets the
other way, that the candidate stays below the baseline stretched by the margin.

Latency is tested at thresholds set by the baseline's own quantiles, read before each interval
(judges/latency.py: requests above them are its bad events). With ``distribution`` on, the p50,
p90, p99 and p99.9 thresholds join the configured quantile's, and so does a rank test over every
bucket (judges/rank.py), which uses what the thresholds throw away. A request's score is the
normal quantile of its bucket's mid-rank in the baseline's histogram before the interval (van der
Waerden's scores: efficient for a shift of log-latency), and the e-process bets that the
candidate's scores, read at its latency divided by ``1 + margin``, run above the baseline's in the
same interval (stats/eprocess.py ``shift_bets``). A whole distribution a few percent slower moves
one threshold's exceedances a little but every request's score.

With a shadow lane (``Look.shadow``) the error rate and accuracy read it too: the shadow copies'
failures, and a paired test on the labelled rows both models scored (``_shadow_streams``), so a
candidate can be rolled back in its shadow phase, before it serves anyone.

A sample-ratio mismatch (the candidate's share of requests far from the weight set) holds the
rollout: no step advances on data whose split cannot be trusted. With sticky routing it tests the
share of users (distinct sticky keys) instead, and says so in a line of the judgement
(judges/sample_ratio.py).

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
from collections.abc import Sequence
from typing import Any

from modelcanary.domain.judgement import Judgement, Look, Memory, MetricJudgement
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
from modelcanary.domain.telemetry import RolloutTelemetry, score_bucket
from modelcanary.judges import latency, rank
from modelcanary.judges.evidence import (
    GRID,
    NO_EVIDENCE,
    NONE,
    PAIRED_STAKES,
    SIDE,
    Counts,
    Stream,
    consistent,
    interval_counts,
    metric_judgement,
    mixture,
    update,
)
from modelcanary.judges.guardrails import guardrail
from modelcanary.judges.latency import DISTRIBUTION_QUANTILES
from modelcanary.judges.sample_ratio import NO_KEYS, SampleRatio
from modelcanary.stats.classification import Confusion, confusion
from modelcanary.stats.eprocess import rate_lower, rate_upper

__all__ = [
    "BASELINE_BOUND_SHARE",
    "DISTRIBUTION_QUANTILES",
    "GRID",
    "MEMORY_VERSION",
    "NAME",
    "PAIRED_STAKES",
    "judge",
]

NAME = "sequential"
MEMORY_VERSION = 7  # bump when the meaning of the saved memory changes (7: the additive test, 2026-12-03)
BASELINE_BOUND_SHARE = 0.1  # of alpha, spent on the baseline bounds that turn absolute margins into ratios
# An absolute margin over a baseline rate below margin / (_LARGEST_RATIO - 1) is tested as a
# difference (``stats.eprocess.bet_beside``), not as a rate ratio: a ratio
# null of 1 + margin / L grows without limit as the baseline's rate L goes to 0, and the ratio test
# then bets nothing (at L = 0, never), while the candidate may fail every other request.
_LARGEST_RATIO = GRID[-1]


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
    tails = latency.Tails()
    rates: dict[str, Counts] = {}  # each rate metric's counts now, read again for its verdict
    rank_now, rank_bets = rank.interval(tested, look, start, settled)
    lanes: dict[str, Counts] = {}  # each shadow stream's counts now
    for metric in tested:
        streams = _streams(metric, before, now, alpha_b, tails, rates)
        if look.shadow and isinstance(metric, ErrorRateMetric | QualityMetric):
            streams += _shadow_streams(metric, before, now, streams[0], lanes)
        total = weights_sum = 0.0
        for stream in streams:
            logs = update(stream, evidence.get(stream.key, NO_EVIDENCE), settled)
            evidence[stream.key] = logs
            total += stream.weight * mixture(logs[:SIDE])
            weights_sum += stream.weight
        # the rank test weighs from the look the thresholds do on, so the weights never change
        if streams and isinstance(metric, LatencyMetric) and metric.distribution:
            key = f"{metric.name}@shift"
            logs = evidence.get(key, rank.NO_EVIDENCE)
            if rank_bets:
                assert start is not None and rank_now is not None
                logs = evidence[key] = rank.update(metric, start[2:], rank_now[2:], logs)
            total += mixture(logs[: rank.SIDE])
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
    keys = [now.baseline.keys, now.candidate.keys]
    by_key = SampleRatio.read(memory.get("srm_keys"), look, keys) if look.sticky else None
    if by_key is None:
        hold = srm.update(before_requests, requests, look)
    elif not any(keys):
        hold, judged = None, (*judged, MetricJudgement.note("sample-ratio", now, NO_KEYS))
    else:
        # the router splits keys: the request share is no binomial at the weight (sample_ratio.py)
        gateways = max(now.baseline.key_gateways, now.candidate.key_gateways, 1)
        hold = by_key.update(memory.get("keys", [0, 0]), keys, look, unit="users (sticky keys)", gateways=gateways)
        judged = (*judged, by_key.of_keys(look, gateways, held=hold is not None))
    judgement = Judgement(judge=NAME, metrics=judged, e_value=combined, threshold=1 / alpha_e, hold=hold)
    after = _counts_for_next_look(tested, now, tails, rates) | {key: list(c) for key, c in lanes.items() if c != NONE}
    if after == before and rank_now == start and requests == before_requests:
        return judgement, memory  # a look with no new data changes nothing
    return judgement, {
        "version": MEMORY_VERSION,
        "prev": after,
        "rank": rank_now,
        "requests": requests,
        "e": evidence,
        "srm": srm.saved(),
        **({"srm_keys": by_key.saved(), "keys": keys} if by_key is not None else {}),
        "counted": {name: list(c) for name, c in counted.items() if c != NONE},
    }


def _readable(memory: Memory) -> Memory:
    """The memory, if this version wrote it; one of any other version starts the evidence again at 1
    (still valid, only slower) rather than read numbers whose meaning changed, or weigh evidence
    gathered under other weights."""
    return memory if memory.get("version") == MEMORY_VERSION else {}


def _counts_for_next_look(
    tested: Sequence[Metric], now: RolloutTelemetry, tails: latency.Tails, rates: dict[str, Counts]
) -> dict[str, list[int]]:
    """What the next look reads of this one, per stream: the counts so far (a rate stream's, when
    any is not 0), and for latency the thresholds the next interval is tested at (set by the
    baseline's quantiles now) with the counts above them so far. A few numbers a stream, rather
    than every histogram of the look: the memory is saved with the rollout at every look."""
    kept: dict[str, list[int]] = {}
    for metric in tested:
        if isinstance(metric, LatencyMetric):
            kept |= latency.thresholds(metric, now, tails)
            continue
        assert isinstance(metric, ErrorRateMetric | QualityMetric)
        counts = rates[metric.name] if metric.name in rates else _rate_counts(metric, now)
        if counts != NONE:
            kept[metric.name] = [counts.bad_c, counts.n_c, counts.bad_b, counts.n_b]
    return kept


def _counted(
    tested: Sequence[Metric],
    before: dict[str, list[int]],
    rates: dict[str, Counts],
    so_far: dict[str, list[int]],
    settled: bool,
) -> dict[str, Counts]:
    """Each rate metric's counts over the intervals its stream bets on (settled at one weight, and
    consistent), which its confidence bounds read: a candidate that served most of its requests
    after a step, beside a baseline whose requests came before it, is not compared with it over
    the interval that mixed the two. (A step whose shared conditions differ from the last's still
    is: docs/sequential-judge.md, "What it does not do".)"""
    counted: dict[str, Counts] = {}
    for metric in tested:
        if not isinstance(metric, ErrorRateMetric | QualityMetric):
            continue
        total = Counts(*so_far[metric.name]) if metric.name in so_far else NONE
        prev = Counts(*before[metric.name]) if metric.name in before else NONE
        delta = interval_counts(rates[metric.name], prev)
        if settled and consistent(delta):
            total = Counts(*(a + b for a, b in zip(total, delta, strict=True)))
        counted[metric.name] = total
    return counted


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
    tails: latency.Tails,
    rates: dict[str, Counts],
) -> list[Stream]:
    if isinstance(metric, LatencyMetric):
        return latency.streams(metric, before, now, tails)
    assert isinstance(metric, ErrorRateMetric | QualityMetric)
    counts_now = rates[metric.name] = _rate_counts(metric, now)
    counts_prev = Counts(*before[metric.name]) if metric.name in before else NONE
    r0, additive = 1.0, None
    if metric.margin > 0:
        # H0 is rate_c <= rate_b + margin. A time-uniform confidence sequence on the baseline's rate
        # from the data before the interval (its own alpha spent) turns it into a null the ratio
        # test can bet against: 1 + margin / L with L the lower end. Where the baseline's rate is
        # near 0 that ratio is useless (infinite at L = 0), so the margin is tested as a difference
        # (``evidence.update``'s additive test), within each interval: a rate
        # both variants share may move freely, where a one-sample test against the baseline's past
        # upper bound counted a shared burst of errors against the candidate (docs/sequential-judge.md).
        low = rate_lower(counts_prev.bad_b, counts_prev.n_b, alpha_b)
        if low * (_LARGEST_RATIO - 1) > metric.margin:
            r0 = 1 + metric.margin / low
        else:
            r0, additive = math.inf, metric.margin
    return [Stream(key=metric.name, weight=1.0, now=counts_now, prev=counts_prev, r0=r0, additive=additive)]


def _shadow_streams(
    metric: ErrorRateMetric | QualityMetric,
    before: dict[str, list[int]],
    now: RolloutTelemetry,
    live: Stream,
    lanes: dict[str, Counts],
) -> list[Stream]:
    """A rollout with a shadow lane reads the candidate's shadow predictions as well: an error
    rate, the shadow copies' failures against the baseline's, tested as the live stream is (same
    null); accuracy at the lane's decision threshold, the paired test on the labelled rows both
    models scored (``paired_bets``). These count before the candidate serves anyone, so a
    candidate that fails in shadow is rolled back from there. Each weighs as much as the live stream."""
    lane = now.candidate.shadow
    if isinstance(metric, ErrorRateMetric):
        key = f"{metric.name}@shadow"
        errors, requests = (lane.errors, lane.requests) if lane is not None else (0, 0)
        counts = Counts(errors, requests, now.baseline.errors, now.baseline.requests)
        paired = None
    elif metric.measure == "accuracy" and abs(metric.threshold - DECISION_THRESHOLD) < 1e-9:
        key = f"{metric.name}@paired"
        _, worse, better, _ = lane.paired_labels if lane is not None else (0, 0, 0, 0)
        labelled = sum(lane.paired_labels) if lane is not None else 0
        counts, paired = Counts(worse, labelled, better, labelled), metric.margin
    else:
        return []  # the lane pairs decisions at its own threshold only, and right or wrong only
    lanes[key] = counts
    prev = Counts(*before[key]) if key in before else NONE
    return [
        Stream(key=key, weight=1.0, now=counts, prev=prev, r0=live.r0, additive=live.additive, paired=paired, lane=True)
    ]


def _rate_counts(metric: ErrorRateMetric | QualityMetric, t: RolloutTelemetry) -> Counts:
    if isinstance(metric, ErrorRateMetric):
        return Counts(t.candidate.errors, t.candidate.requests, t.baseline.errors, t.baseline.requests)
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
    return Counts(bad_c, n_c, bad_b, n_b)


# -- verdicts --------------------------------------------------------------------------------------


def _judge_metric(
    metric: ErrorRateMetric | LatencyMetric | QualityMetric,
    now: RolloutTelemetry,
    evidence: dict[str, list[float]],
    e_value: float,
    failed: bool,
    alpha: float,
    tails: latency.Tails,
    rates: dict[str, Counts],
    counted: dict[str, Counts],
) -> MetricJudgement:
    if isinstance(metric, LatencyMetric):
        return latency.verdict(metric, now, evidence, e_value, failed, alpha, tails)
    counts = rates[metric.name]  # (as ``_streams`` read them)
    minimum = metric.min_requests if isinstance(metric, ErrorRateMetric) else metric.min_labels
    rate_c = counts.bad_c / counts.n_c if counts.n_c else None
    rate_b = counts.bad_b / counts.n_b if counts.n_b else None
    # the bounds read the intervals the stream bet on (``_counted``)
    judged = counted.get(metric.name, NONE)
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
    return metric_judgement(
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
