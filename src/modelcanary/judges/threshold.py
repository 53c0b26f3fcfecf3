"""The threshold judge: compares the candidate's point estimates with the baseline's plus a margin.

Clear and fast, like Flagger's per-metric checks, but it compares against the baseline on the same
traffic rather than against a fixed number. It makes no promise about false rollbacks when it looks
often; the statistical judge is the one that does.
"""

from __future__ import annotations

from modelcanary.domain.judgement import Judgement, Look, Memory, MetricJudgement, Verdict
from modelcanary.domain.spec import (
    Analysis,
    CostMetric,
    DriftMetric,
    ErrorRateMetric,
    LatencyMetric,
    Metric,
    QualityMetric,
)
from modelcanary.domain.telemetry import LATENCY_EDGES_MS, RolloutTelemetry, VariantTelemetry, score_bucket
from modelcanary.judges.guardrails import guardrail
from modelcanary.stats.classification import confusion
from modelcanary.stats.histogram import quantile

NAME = "threshold"


def judge(analysis: Analysis, look: Look, memory: Memory) -> tuple[Judgement, Memory]:
    metrics = tuple(_judge_metric(metric, look.telemetry) for metric in analysis.metrics)
    return Judgement(judge=NAME, metrics=metrics), memory


def _judge_metric(metric: Metric, telemetry: RolloutTelemetry) -> MetricJudgement:
    if isinstance(metric, DriftMetric | CostMetric):
        return guardrail(metric, telemetry)
    if isinstance(metric, ErrorRateMetric):
        return _error_rate(metric, telemetry.baseline, telemetry.candidate)
    if isinstance(metric, LatencyMetric):
        return _latency(metric, telemetry.baseline, telemetry.candidate)
    return _quality(metric, telemetry.baseline, telemetry.candidate)


def _verdict(
    metric: ErrorRateMetric | LatencyMetric | QualityMetric,
    *,
    samples: tuple[int, int],
    minimum: int,
    values: tuple[float | None, float | None],
    limit: float | None,
    worse: bool,
    lower_is_worse: bool = False,
    unit: str,
    what: str,
) -> MetricJudgement:
    base, cand = values
    common = {
        "name": metric.name,
        "kind": metric.kind,
        "baseline": base,
        "candidate": cand,
        "limit": limit,
        "baseline_samples": samples[0],
        "candidate_samples": samples[1],
    }
    if min(samples) < minimum or base is None or cand is None or limit is None:
        reason = f"no data: {samples[1]} candidate and {samples[0]} baseline {what}, {minimum} needed of each"
        return MetricJudgement(verdict=Verdict.NO_DATA, reason=reason, **common)
    relation = ("below" if lower_is_worse else "above") if worse else "within"
    reason = f"candidate {cand:.4g}{unit} {relation} limit {limit:.4g}{unit} (baseline {base:.4g}{unit})"
    return MetricJudgement(verdict=Verdict.FAIL if worse else Verdict.PASS, reason=reason, **common)


def _error_rate(metric: ErrorRateMetric, base: VariantTelemetry, cand: VariantTelemetry) -> MetricJudgement:
    rates = (
        base.errors / base.requests if base.requests else None,
        cand.errors / cand.requests if cand.requests else None,
    )
    limit = None if rates[0] is None else rates[0] + metric.margin
    worse = rates[1] is not None and limit is not None and rates[1] > limit
    return _verdict(
        metric,
        samples=(base.requests, cand.requests),
        minimum=metric.min_requests,
        values=rates,
        limit=limit,
        worse=worse,
        unit="",
        what="requests",
    )


def _latency(metric: LatencyMetric, base: VariantTelemetry, cand: VariantTelemetry) -> MetricJudgement:
    values = (
        quantile(LATENCY_EDGES_MS, base.latency_counts, metric.quantile),
        quantile(LATENCY_EDGES_MS, cand.latency_counts, metric.quantile),
    )
    limit = None if values[0] is None else values[0] * (1 + metric.margin)
    worse = values[1] is not None and limit is not None and values[1] > limit
    return _verdict(
        metric,
        samples=(base.requests, cand.requests),
        minimum=metric.min_requests,
        values=values,
        limit=limit,
        worse=worse,
        unit=" ms",
        what="requests",
    )


def _quality(metric: QualityMetric, base: VariantTelemetry, cand: VariantTelemetry) -> MetricJudgement:
    bucket = score_bucket(metric.threshold)
    (base_value, base_n), (cand_value, cand_n) = (
        confusion(t.positive_label_scores, t.negative_label_scores, bucket).measure(metric.measure)
        for t in (base, cand)
    )
    limit = None if base_value is None else base_value - metric.margin
    worse = cand_value is not None and limit is not None and cand_value < limit
    return _verdict(
        metric,
        samples=(base_n, cand_n),
        minimum=metric.min_labels,
        values=(base_value, cand_value),
        limit=limit,
        worse=worse,
        lower_is_worse=True,
        unit="",
        what=f"labels for {metric.measure}",
    )
