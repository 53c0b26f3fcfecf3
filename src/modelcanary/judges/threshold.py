"""The threshold judge, after Flagger's canary analysis: checks on each interval's data, and a
rollback after ``failed_checks`` failed checks.

Read from fluxcd/flagger: ``pkg/controller/scheduler.go`` (``advanceCanary``, ``runAnalysis``),
``pkg/controller/scheduler_metrics.go`` (the checks), ``pkg/canary/status.go`` (the counter) and
``pkg/apis/flagger/v1beta1/canary.go`` (the defaults). What it keeps from Flagger:

- Every ``analysis.threshold.interval`` seconds of the rollout's clock (Flagger's ``analysis.interval``:
  60 s by default, and never below 10 s) one check runs on that interval's data alone: the difference
  between the cumulative telemetry now and at the previous check. The error rate of the candidate
  must stay at most the baseline's plus ``margin``; its latency ``quantile`` at most the baseline's
  times ``1 + margin``; its ``measure`` on the labels that arrived in the interval at least the
  baseline's minus ``margin``. (Flagger compares each query with a fixed ``thresholdRange``; here the
  baseline on the same traffic sets the range, as in modelcanary's other judges.)
- A check fails when any metric fails it. Flagger's ``status.failedChecks`` is incremented on every
  failed check and never reset by a passing one (only a new revision resets it), so this counts the
  TOTAL of failed checks, not consecutive ones. When it reaches ``failed_checks`` (5 here, as in
  Flagger's examples; the code's fallback is 1), the metrics that failed that check are FAIL (one
  within its limit on fewer samples than its minimum did not fail it, and stays NO_DATA). Flagger
  rolls back at the tick after that check; the judge says FAIL at the check itself.
- A metric without data fails the check: Flagger's providers return ``ErrNoValuesFound`` and
  ``runMetricChecks`` halts advancement and counts the check as failed ("no values found ... probably
  not receiving traffic"). Here "no data" is fewer than the metric's ``min_requests`` /
  ``min_labels`` in the interval. Its verdict is NO_DATA until the count reaches the threshold, then
  FAIL: a canary without traffic is rolled back, as Flagger does. Before the first check every
  metric is NO_DATA (Flagger's first tick only starts the canary).
- A metric that passed the last check is PASS; one that failed it but has not exhausted the
  threshold is INCONCLUSIVE (Flagger halts advancement). Between checks the last check's verdicts
  stand; after the threshold is reached the judge stops checking, as Flagger stops the analysis.

- At a 100% step the baseline serves no one, so its values in a check are all its data since the
  rollout began (the champion's numbers from the earlier steps); compared with each interval's
  alone, every candidate reaching 100% had "no data" for a baseline and was rolled back.

Unlike Flagger, which stops at the first failing metric, every metric is checked, so the judgement
names all of them. Drift and cost are guardrails, judged at every look on the cumulative telemetry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelcanary.domain.judgement import Judgement, Look, Memory, MetricJudgement, Verdict
from modelcanary.domain.metrics import Analysis, CostMetric, DriftMetric, ErrorRateMetric, LatencyMetric, QualityMetric
from modelcanary.domain.telemetry import LATENCY_EDGES_MS, VariantTelemetry, score_bucket
from modelcanary.judges.guardrails import guardrail
from modelcanary.stats.classification import Confusion, confusion
from modelcanary.stats.histogram import quantile

NAME = "threshold"
MIN_INTERVAL_S = 10.0  # Flagger's GetAnalysisInterval never schedules checks closer than this

Tested = ErrorRateMetric | LatencyMetric | QualityMetric
Entry = dict[str, Any]  # one metric's last check, JSON-ready: the fields of its MetricJudgement


def judge(analysis: Analysis, look: Look, memory: Memory) -> tuple[Judgement, Memory]:
    settings = analysis.threshold
    interval = max(settings.interval, MIN_INTERVAL_S)
    new = dict(memory)  # never the caller's dict; unchanged parts are shared, never mutated
    if memory.get("failed", 0) < settings.failed_checks and look.at >= memory.get("due", interval):
        tested = [metric for metric in analysis.metrics if not isinstance(metric, DriftMetric | CostMetric)]
        new.update(_check(tested, look, memory, settings.failed_checks))
        new["due"] = next_due(look.at, interval)
    last: dict[str, Entry] = new.get("last", {})
    metrics = tuple(
        guardrail(metric, look.telemetry)
        if isinstance(metric, DriftMetric | CostMetric)
        else _judgement(metric, last.get(metric.name), new.get("due", interval))
        for metric in analysis.metrics
    )
    return Judgement(judge=NAME, metrics=metrics), new


def next_due(at: float, interval: float) -> float:
    """The next tick of an ``interval`` ticker on the rollout's clock after ``at``.

    >>> next_due(60.0, 60.0), next_due(61.0, 60.0), next_due(185.0, 60.0)
    (120.0, 120.0, 240.0)
    """
    return (math.floor(at / interval) + 1) * interval


def cumulative(metric: Tested, variant: VariantTelemetry) -> list[int]:
    """The cumulative counts whose difference between two looks is the metric's data in between."""
    if isinstance(metric, ErrorRateMetric):
        return [int(variant.requests), int(variant.errors)]
    if isinstance(metric, LatencyMetric):
        return [int(count) for count in variant.latency_counts]
    c = confusion(variant.positive_label_scores, variant.negative_label_scores, score_bucket(metric.threshold))
    return [int(c.tp), int(c.fp), int(c.tn), int(c.fn)]


def interval_value(metric: Tested, now: Sequence[int], before: Sequence[int] | None) -> tuple[float | None, int]:
    """The metric's value on the data between two looks' cumulative counts, and its samples
    (requests, or labels in the measure's denominator); ``None`` when there are none.

    >>> spec = ErrorRateMetric(kind="error_rate")
    >>> interval_value(spec, [300, 6], [100, 2])
    (0.02, 200)
    """
    delta = list(now) if before is None else [a - b for a, b in zip(now, before, strict=True)]
    if isinstance(metric, ErrorRateMetric):
        return (delta[1] / delta[0] if delta[0] > 0 else None), delta[0]
    if isinstance(metric, LatencyMetric):
        return quantile(LATENCY_EDGES_MS, delta, metric.quantile), sum(delta)
    return Confusion(tp=delta[0], fp=delta[1], tn=delta[2], fn=delta[3]).measure(metric.measure)


def unit(metric: Tested) -> str:
    if isinstance(metric, ErrorRateMetric):
        return "error rate"
    return "ms" if isinstance(metric, LatencyMetric) else metric.measure


def _check(tested: list[Tested], look: Look, memory: Memory, threshold: int) -> Memory:
    """One check of every metric on the data since the previous check: the new counts, the failed
    checks so far, and each metric's entry."""
    before: dict[str, list[list[int]]] = memory.get("counts", {})
    counts = {m.name: [cumulative(m, look.telemetry.baseline), cumulative(m, look.telemetry.candidate)] for m in tested}
    alone = look.weight >= 100  # the candidate serves everyone: the baseline's reference is all its data so far
    outcomes = [_Outcome.of(m, counts[m.name], before.get(m.name, [None, None]), alone=alone) for m in tested]
    failed = int(memory.get("failed", 0)) + any(outcome.status in ("worse", "no_data") for outcome in outcomes)
    window = f"over {float(memory.get('since', 0.0)):g}-{look.at:g} s; {failed} of {threshold} failed checks"
    last: dict[str, Entry] = {}
    for metric, outcome in zip(tested, outcomes, strict=True):
        if outcome.status == "pass":
            verdict = Verdict.PASS
        elif failed >= threshold and outcome.status in ("worse", "no_data"):
            verdict = Verdict.FAIL  # named only if it failed this check: one within its limit on few samples did not
        else:
            verdict = Verdict.INCONCLUSIVE if outcome.status == "worse" else Verdict.NO_DATA
        last[metric.name] = {
            "verdict": verdict.value,
            "baseline": outcome.base,
            "candidate": outcome.cand,
            "limit": outcome.limit,
            "baseline_samples": outcome.n_base,
            "candidate_samples": outcome.n_cand,
            "reason": f"{outcome.reason(metric)} {window}",
        }
    return {"counts": counts, "since": look.at, "failed": failed, "last": last}


@dataclass(frozen=True)
class _Outcome:
    """One metric over one interval: ``pass``, ``worse``, ``few`` (within the limit on fewer samples
    than the metric's minimum) or ``no_data`` (none at all), and the numbers behind it."""

    status: str
    base: float | None
    cand: float | None
    limit: float | None
    n_base: int
    n_cand: int
    alone: bool = False  # the candidate served everyone; the baseline's values are all its data so far

    @classmethod
    def of(
        cls, metric: Tested, now: Sequence[Sequence[int]], prev: Sequence[Sequence[int] | None], *, alone: bool
    ) -> _Outcome:
        # at a 100% step the baseline serves no one: its values are its data since the rollout began
        base, n_base = interval_value(metric, now[0], None if alone else prev[0])
        cand, n_cand = interval_value(metric, now[1], prev[1])
        # Flagger has no minimum: its query returns a value whenever the interval had any traffic,
        # and only a query without a value is a failed check ("no values found")
        if base is None or cand is None:
            return cls("no_data", base, cand, None, n_base, n_cand, alone)
        if isinstance(metric, ErrorRateMetric):
            limit = base + metric.margin
        elif isinstance(metric, LatencyMetric):
            limit = base * (1 + metric.margin)
        else:
            limit = base - metric.margin
        worse = cand < limit if isinstance(metric, QualityMetric) else cand > limit
        # below the metric's minimum a value within the limit is no failed check, but no pass either
        few = min(n_base, n_cand) < _minimum(metric)
        return cls("worse" if worse else "few" if few else "pass", base, cand, limit, n_base, n_cand, alone)

    def reason(self, metric: Tested) -> str:
        if self.base is None or self.cand is None or self.limit is None:
            what = f"labels for {metric.measure}" if isinstance(metric, QualityMetric) else "requests"
            return (
                f"no data: {self.n_cand} candidate and {self.n_base} baseline {what}, {_minimum(metric)} needed "
                "of each (a check without data fails, as in Flagger)"
            )
        ms = " ms" if isinstance(metric, LatencyMetric) else ""
        relation = "within"
        if self.status == "worse":
            relation = "below" if isinstance(metric, QualityMetric) else "above"
        baseline = "baseline so far, the candidate serving all" if self.alone else "baseline"
        values = f"candidate {self.cand:.4g}{ms} {relation} limit {self.limit:.4g}{ms} ({baseline} {self.base:.4g}{ms})"
        if self.status == "few":
            return f"too few samples to pass ({min(self.n_base, self.n_cand)} of {_minimum(metric)}): {values}"
        return values


def _minimum(metric: Tested) -> int:
    return metric.min_labels if isinstance(metric, QualityMetric) else metric.min_requests


def _judgement(metric: Tested, entry: Entry | None, due: float) -> MetricJudgement:
    if entry is None:
        entry = {
            "verdict": Verdict.NO_DATA,
            "baseline": None,
            "candidate": None,
            "limit": None,
            "baseline_samples": 0,
            "candidate_samples": 0,
            "reason": f"no data: no check yet, the first runs at {due:g} s",
        }
    return MetricJudgement(name=metric.name, kind=metric.kind, unit=unit(metric), **entry)
