"""Guardrail metrics every judge shares: plain limits on cumulative data, no statistics.

Prediction drift compares the variants' score histograms; cost compares CPU time per request.
"""

from __future__ import annotations

import itertools

from modelcanary.domain.judgement import MetricJudgement, Verdict
from modelcanary.domain.metrics import CostMetric, DriftMetric
from modelcanary.domain.telemetry import SCORE_EDGES, RolloutTelemetry
from modelcanary.stats.drift import js, psi, wasserstein

# bucket centres of the score histogram, for the Wasserstein distance
_SCORE_CENTRES = [SCORE_EDGES[0] / 2] + [(a + b) / 2 for a, b in itertools.pairwise(SCORE_EDGES)] + [1.0]


def guardrail(metric: DriftMetric | CostMetric, telemetry: RolloutTelemetry) -> MetricJudgement:
    if isinstance(metric, DriftMetric):
        return drift(metric, telemetry)
    return cost(metric, telemetry)


def _no_data(metric: DriftMetric | CostMetric, base: int, cand: int, what: str) -> MetricJudgement:
    return MetricJudgement(
        name=metric.name,
        kind=metric.kind,
        verdict=Verdict.NO_DATA,
        baseline=None,
        candidate=None,
        limit=None,
        baseline_samples=base,
        candidate_samples=cand,
        reason=f"no data: {cand} candidate and {base} baseline {what}, {metric.min_requests} needed of each",
    )


def drift(metric: DriftMetric, telemetry: RolloutTelemetry) -> MetricJudgement:
    base, cand = telemetry.baseline.score_counts, telemetry.candidate.score_counts
    n_base, n_cand = sum(base), sum(cand)
    if min(n_base, n_cand) < metric.min_requests:
        return _no_data(metric, n_base, n_cand, "scored predictions")
    if metric.distance == "psi":
        distance = psi(base, cand)
    elif metric.distance == "js":
        distance = js(base, cand)
    else:
        distance = wasserstein(base, cand, _SCORE_CENTRES)
    worse = distance > metric.limit
    return MetricJudgement(
        name=metric.name,
        kind=metric.kind,
        verdict=Verdict.FAIL if worse else Verdict.PASS,
        baseline=0.0,
        candidate=distance,
        limit=metric.limit,
        baseline_samples=n_base,
        candidate_samples=n_cand,
        unit=metric.distance,
        reason=f"{metric.distance} between the score distributions {distance:.4g} "
        f"{'above' if worse else 'within'} limit {metric.limit:g}",
    )


def cost(metric: CostMetric, telemetry: RolloutTelemetry) -> MetricJudgement:
    """CPU time per request where it was measured: a variant served by a remote model (or read from
    a metric source) has no CPU time here, which is no data, not a cost of 0."""
    base, cand = telemetry.baseline, telemetry.candidate
    if min(base.cpu_requests, cand.cpu_requests) < metric.min_requests:
        what = "requests with their model's CPU time measured (models in the gateway's process only)"
        return _no_data(metric, base.cpu_requests, cand.cpu_requests, what)
    per_base, per_cand = base.cpu_ms / base.cpu_requests, cand.cpu_ms / cand.cpu_requests
    limit = per_base * (1 + metric.margin)
    worse = per_cand > limit
    return MetricJudgement(
        name=metric.name,
        kind=metric.kind,
        verdict=Verdict.FAIL if worse else Verdict.PASS,
        baseline=per_base,
        candidate=per_cand,
        limit=limit,
        baseline_samples=base.cpu_requests,
        candidate_samples=cand.cpu_requests,
        unit="cpu ms/request",
        reason=f"candidate {per_cand:.4g} CPU ms per request {'above' if worse else 'within'} limit {limit:.4g} "
        f"(baseline {per_base:.4g})",
    )


def circuit_breaker(telemetry: RolloutTelemetry) -> MetricJudgement | None:
    """A failed check when any gateway's circuit breaker took the candidate out; None otherwise.

    Not a metric a spec names: every rollout has it, whatever its judge, and it needs no samples.

    >>> from modelcanary.domain.telemetry import RolloutTelemetry
    >>> telemetry = RolloutTelemetry()
    >>> circuit_breaker(telemetry) is None
    True
    >>> telemetry.candidate.breaker_trips, telemetry.candidate.breaker_reason = 1, "5 failures in a row"
    >>> circuit_breaker(telemetry).verdict.value
    'fail'
    """
    candidate = telemetry.candidate
    if candidate.breaker_trips == 0:
        return None
    return MetricJudgement(
        name=CIRCUIT_BREAKER,
        kind=CIRCUIT_BREAKER,
        verdict=Verdict.FAIL,
        baseline=None,
        candidate=float(candidate.breaker_trips),
        limit=0.0,
        baseline_samples=telemetry.baseline.requests,
        candidate_samples=candidate.requests,
        unit="gateways that took the candidate out",
        reason=candidate.breaker_reason or f"the circuit breaker tripped on {candidate.breaker_trips} gateway(s)",
    )


CIRCUIT_BREAKER = "circuit-breaker"
