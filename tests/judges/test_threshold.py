"""The threshold judge on hand-built telemetry, and the judge factory."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from modelcanary import judges
from modelcanary.domain.errors import SpecError
from modelcanary.domain.judgement import Judgement, MetricJudgement, Verdict
from modelcanary.domain.spec import Analysis
from modelcanary.domain.telemetry import LATENCY_EDGES_MS, RolloutTelemetry, VariantTelemetry
from modelcanary.stats.histogram import quantile

judge = judges.get_judge("threshold")


def analysis(*metrics: dict[str, Any]) -> Analysis:
    return Analysis.model_validate({"metrics": list(metrics)})


def served(requests: int, *, errors: int = 0, latency_ms: float = 10.0) -> VariantTelemetry:
    telemetry = VariantTelemetry()
    for index in range(requests):
        telemetry.observe(latency_ms=latency_ms, error=index < errors)
    return telemetry


def labelled(*groups: tuple[int, float, int]) -> VariantTelemetry:
    """``(count, score, label)`` groups of labelled predictions."""
    telemetry = VariantTelemetry()
    for count, score, label in groups:
        for _ in range(count):
            telemetry.observe_label(bucket=telemetry.observe_score(score), label=label)
    return telemetry


def only(result: Judgement) -> MetricJudgement:
    assert result.judge == "threshold"
    (metric,) = result.metrics
    return metric


# --- error rate: candidate rate <= baseline rate + margin -------------------------------------------------------------


@pytest.mark.parametrize(("candidate_errors", "verdict"), [(0, Verdict.PASS), (20, Verdict.PASS), (21, Verdict.FAIL)])
def test_error_rate(candidate_errors: int, verdict: Verdict) -> None:
    telemetry = RolloutTelemetry(baseline=served(1000, errors=10), candidate=served(1000, errors=candidate_errors))
    metric = only(judge(analysis({"kind": "error_rate", "margin": 0.01}), telemetry))
    assert (metric.name, metric.kind, metric.verdict) == ("error-rate", "error_rate", verdict)
    assert metric.baseline == 0.01
    assert metric.candidate == candidate_errors / 1000
    assert metric.limit == 0.01 + 0.01
    assert (metric.baseline_samples, metric.candidate_samples) == (1000, 1000)


def test_error_rate_reasons() -> None:
    telemetry = RolloutTelemetry(baseline=served(1000, errors=10), candidate=served(1000, errors=21))
    failed = only(judge(analysis({"kind": "error_rate"}), telemetry))
    assert failed.reason == "candidate 0.021 above limit 0.02 (baseline 0.01)"
    telemetry.candidate = served(1000, errors=5)
    passed = only(judge(analysis({"kind": "error_rate"}), telemetry))
    assert passed.reason == "candidate 0.005 within limit 0.02 (baseline 0.01)"


@pytest.mark.parametrize(("baseline", "candidate"), [(1000, 99), (99, 1000), (0, 0), (0, 1000)])
def test_error_rate_needs_min_requests_on_both_sides(baseline: int, candidate: int) -> None:
    telemetry = RolloutTelemetry(
        baseline=served(baseline, errors=baseline), candidate=served(candidate, errors=candidate)
    )
    metric = only(judge(analysis({"kind": "error_rate", "minRequests": 100}), telemetry))
    assert metric.verdict is Verdict.NO_DATA  # even with every request failing
    assert metric.reason == f"no data: {candidate} candidate and {baseline} baseline requests, 100 needed of each"
    assert (metric.baseline_samples, metric.candidate_samples) == (baseline, candidate)


# --- latency: candidate quantile <= baseline quantile * (1 + margin) --------------------------------------------------


@pytest.mark.parametrize(
    ("candidate_ms", "verdict"), [(10.0, Verdict.PASS), (11.0, Verdict.PASS), (20.0, Verdict.FAIL)]
)
def test_latency(candidate_ms: float, verdict: Verdict) -> None:
    telemetry = RolloutTelemetry(baseline=served(500, latency_ms=10.0), candidate=served(500, latency_ms=candidate_ms))
    metric = only(judge(analysis({"kind": "latency", "quantile": 0.95, "margin": 0.2}), telemetry))
    base = quantile(LATENCY_EDGES_MS, telemetry.baseline.latency_counts, 0.95)
    cand = quantile(LATENCY_EDGES_MS, telemetry.candidate.latency_counts, 0.95)
    assert base is not None and cand is not None
    assert (metric.name, metric.kind, metric.verdict) == ("latency", "latency", verdict)
    assert (metric.baseline, metric.candidate) == (base, cand)
    assert metric.limit == base * 1.2
    assert 10.0 <= base <= 11.0  # the 10 ms bucket is [9.45, 10.40); its 95th percentile reads 10.35
    assert metric.reason.startswith(f"candidate {cand:.4g} ms ")


def test_latency_uses_the_configured_quantile() -> None:
    # 90% fast, 10% slow: the median is fast on both sides, p99 is slow only on the candidate
    telemetry = RolloutTelemetry(
        baseline=served(900, latency_ms=5.0).merged(served(100, latency_ms=6.0)),
        candidate=served(900, latency_ms=5.0).merged(served(100, latency_ms=100.0)),
    )
    p50 = only(judge(analysis({"kind": "latency", "quantile": 0.5}), telemetry))
    p99 = only(judge(analysis({"kind": "latency", "quantile": 0.99}), telemetry))
    assert (p50.verdict, p99.verdict) == (Verdict.PASS, Verdict.FAIL)


def test_latency_needs_min_requests() -> None:
    telemetry = RolloutTelemetry(baseline=served(500), candidate=served(49, latency_ms=1000.0))
    metric = only(judge(analysis({"kind": "latency"}), telemetry))  # minRequests defaults to 50
    assert metric.verdict is Verdict.NO_DATA
    assert metric.reason == "no data: 49 candidate and 500 baseline requests, 50 needed of each"


# --- quality: candidate measure >= baseline measure - margin ----------------------------------------------------------


@pytest.mark.parametrize(
    ("wrong", "verdict", "candidate"), [(0, Verdict.PASS, 1.0), (2, Verdict.PASS, 0.99), (10, Verdict.FAIL, 0.95)]
)
def test_quality_accuracy(wrong: int, verdict: Verdict, candidate: float) -> None:
    baseline = labelled((100, 0.9, 1), (100, 0.1, 0))  # every one right
    # ``wrong`` negatives scored as positives
    cand = labelled((100, 0.9, 1), (100 - wrong, 0.1, 0), (wrong, 0.8, 0))
    metric = only(
        judge(analysis({"kind": "quality", "margin": 0.02}), RolloutTelemetry(baseline=baseline, candidate=cand))
    )
    assert (metric.name, metric.kind, metric.verdict) == ("quality", "quality", verdict)
    assert (metric.baseline, metric.candidate, metric.limit) == (1.0, candidate, 1.0 - 0.02)
    assert (metric.baseline_samples, metric.candidate_samples) == (200, 200)
    if verdict is Verdict.FAIL:
        assert metric.reason == "candidate 0.95 below limit 0.98 (baseline 1)"


def test_quality_threshold_decides_what_is_positive() -> None:
    # scores of 0.6 on positives: right at threshold 0.5, all missed at threshold 0.7
    baseline = labelled((100, 0.9, 1), (100, 0.1, 0))
    cand = labelled((100, 0.6, 1), (100, 0.1, 0))
    telemetry = RolloutTelemetry(baseline=baseline, candidate=cand)
    at_half = only(judge(analysis({"kind": "quality", "threshold": 0.5}), telemetry))
    at_seven = only(judge(analysis({"kind": "quality", "threshold": 0.7}), telemetry))
    assert (at_half.verdict, at_half.candidate) == (Verdict.PASS, 1.0)
    assert (at_seven.verdict, at_seven.candidate) == (Verdict.FAIL, 0.5)


def test_quality_precision_and_recall_count_their_own_denominators() -> None:
    baseline = labelled((80, 0.9, 1), (20, 0.2, 1), (100, 0.1, 0))  # precision 1.0, recall 0.8
    cand = labelled((100, 0.9, 1), (25, 0.9, 0), (75, 0.1, 0))  # precision 0.8, recall 1.0
    telemetry = RolloutTelemetry(baseline=baseline, candidate=cand)
    precision = only(judge(analysis({"kind": "quality", "measure": "precision", "minLabels": 50}), telemetry))
    recall = only(judge(analysis({"kind": "quality", "measure": "recall", "minLabels": 50}), telemetry))
    assert (precision.verdict, precision.baseline, precision.candidate) == (Verdict.FAIL, 1.0, 0.8)
    assert (precision.baseline_samples, precision.candidate_samples) == (80, 125)  # predicted positives
    assert (recall.verdict, recall.baseline, recall.candidate) == (Verdict.PASS, 0.8, 1.0)
    assert (recall.baseline_samples, recall.candidate_samples) == (100, 100)  # actual positives


def test_quality_needs_min_labels() -> None:
    baseline = labelled((100, 0.9, 1), (100, 0.1, 0))
    cand = labelled((50, 0.9, 0), (49, 0.1, 1))  # 99 labels, every one wrong
    metric = only(judge(analysis({"kind": "quality"}), RolloutTelemetry(baseline=baseline, candidate=cand)))
    assert metric.verdict is Verdict.NO_DATA
    assert metric.reason == "no data: 99 candidate and 200 baseline labels for accuracy, 100 needed of each"


def test_quality_without_labels_has_no_data_and_no_values() -> None:
    metric = only(judge(analysis({"kind": "quality", "measure": "recall"}), RolloutTelemetry()))
    assert metric.verdict is Verdict.NO_DATA
    assert (metric.baseline, metric.candidate, metric.limit) == (None, None, None)
    assert metric.reason == "no data: 0 candidate and 0 baseline labels for recall, 100 needed of each"


# --- the whole judgement ----------------------------------------------------------------------------------------------


def test_judgement_keeps_the_spec_order_and_the_worst_verdict() -> None:
    telemetry = RolloutTelemetry(baseline=served(1000, errors=10), candidate=served(1000, errors=100))
    spec = analysis({"kind": "quality", "name": "acc"}, {"kind": "error_rate"}, {"kind": "latency", "name": "p95"})
    result = judge(spec, telemetry)
    assert [(m.name, m.verdict) for m in result.metrics] == [
        ("acc", Verdict.NO_DATA),
        ("error-rate", Verdict.FAIL),
        ("p95", Verdict.PASS),
    ]
    assert result.verdict is Verdict.FAIL
    assert [m.name for m in result.failing()] == ["error-rate"]


def test_judge_is_pure() -> None:
    telemetry = RolloutTelemetry(baseline=served(300, errors=3), candidate=served(300, errors=9))
    before = (telemetry.baseline.to_json(), telemetry.candidate.to_json())
    spec = analysis({"kind": "error_rate"}, {"kind": "latency"})
    assert judge(spec, telemetry) == judge(spec, telemetry)
    assert (telemetry.baseline.to_json(), telemetry.candidate.to_json()) == before


# --- the factory ------------------------------------------------------------------------------------------------------


def test_unknown_judge_lists_the_known_ones() -> None:
    with pytest.raises(SpecError) as caught:
        judges.get_judge("kayenta")
    assert caught.value.problems == [("spec.analysis.judge", "unknown judge 'kayenta'; known: threshold")]


def test_spec_judge_names_are_the_factory_keys() -> None:
    literal = Analysis.model_fields["judge"].annotation
    assert typing.get_origin(literal) is typing.Literal
    assert set(typing.get_args(literal)) == set(judges.JUDGES)
    for name in judges.JUDGES:
        assert judges.get_judge(name) is judges.JUDGES[name]
