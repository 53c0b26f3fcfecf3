"""The threshold (Flagger-like) judge on hand-built telemetry, and the judge factory."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from modelcanary import judges
from modelcanary.domain.errors import SpecError
from modelcanary.domain.judgement import Judgement, Look, Memory, MetricJudgement, Verdict
from modelcanary.domain.metrics import Analysis
from modelcanary.domain.telemetry import LATENCY_EDGES_MS, RolloutTelemetry, VariantTelemetry
from modelcanary.stats.histogram import quantile

judge = judges.get_judge("threshold")


def analysis(*metrics: dict[str, Any], failed_checks: int = 1, interval: float = 60.0) -> Analysis:
    settings = {"interval": interval, "failedChecks": failed_checks}
    return Analysis.model_validate({"judge": "threshold", "metrics": list(metrics), "threshold": settings})


def served(
    requests: int, *, errors: int = 0, latency_ms: float = 10.0, into: VariantTelemetry | None = None
) -> VariantTelemetry:
    telemetry = VariantTelemetry() if into is None else into
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


def look(at: float, telemetry: RolloutTelemetry) -> Look:
    """A snapshot of cumulative telemetry, as the store hands it to the judge."""
    copy = RolloutTelemetry(
        baseline=VariantTelemetry.from_json(telemetry.baseline.to_json()),
        candidate=VariantTelemetry.from_json(telemetry.candidate.to_json()),
    )
    return Look(at=at, weight=50.0, telemetry=copy)


def first_check(spec: Analysis, telemetry: RolloutTelemetry) -> Judgement:
    """The judgement of the check at 60 s, on everything served since the start."""
    return judge(spec, look(60.0, telemetry), {})[0]


def only(result: Judgement) -> MetricJudgement:
    assert result.judge == "threshold"
    (metric,) = result.metrics
    return metric


class Rollout:
    """Cumulative telemetry served interval by interval, judged at every look."""

    def __init__(self, spec: Analysis) -> None:
        self.spec = spec
        self.telemetry = RolloutTelemetry()
        self.memory: Memory = {}

    def serve(
        self, *, base_errors: int = 10, cand_errors: int = 10, requests: int = 1000, cand_ms: float = 10.0
    ) -> None:
        served(requests, errors=base_errors, into=self.telemetry.baseline)
        served(requests, errors=cand_errors, latency_ms=cand_ms, into=self.telemetry.candidate)

    def judge(self, at: float) -> Judgement:
        judgement, self.memory = judge(self.spec, look(at, self.telemetry), self.memory)
        return judgement


# --- one check: error rate, latency and quality against the baseline on the same interval -----------------------------


@pytest.mark.parametrize(("candidate_errors", "verdict"), [(0, Verdict.PASS), (20, Verdict.PASS), (21, Verdict.FAIL)])
def test_error_rate(candidate_errors: int, verdict: Verdict) -> None:
    telemetry = RolloutTelemetry(baseline=served(1000, errors=10), candidate=served(1000, errors=candidate_errors))
    metric = only(first_check(analysis({"kind": "error_rate", "margin": 0.01}), telemetry))
    assert (metric.name, metric.kind, metric.verdict) == ("error-rate", "error_rate", verdict)
    assert metric.baseline == 0.01
    assert metric.candidate == candidate_errors / 1000
    assert metric.limit == 0.01 + 0.01
    assert (metric.baseline_samples, metric.candidate_samples) == (1000, 1000)


def test_error_rate_reasons() -> None:
    telemetry = RolloutTelemetry(baseline=served(1000, errors=10), candidate=served(1000, errors=21))
    failed = only(first_check(analysis({"kind": "error_rate"}), telemetry))
    assert failed.reason == "candidate 0.021 above limit 0.02 (baseline 0.01) over 0-60 s; 1 of 1 failed checks"
    telemetry.candidate = served(1000, errors=5)
    passed = only(first_check(analysis({"kind": "error_rate"}, failed_checks=5), telemetry))
    assert passed.reason == "candidate 0.005 within limit 0.02 (baseline 0.01) over 0-60 s; 0 of 5 failed checks"


@pytest.mark.parametrize(("baseline", "candidate"), [(0, 0), (0, 1000), (1000, 0)])
def test_an_interval_without_data_is_a_failed_check(baseline: int, candidate: int) -> None:
    telemetry = RolloutTelemetry(
        baseline=served(baseline, errors=baseline), candidate=served(candidate, errors=candidate)
    )
    metric = only(first_check(analysis({"kind": "error_rate", "minRequests": 100}, failed_checks=5), telemetry))
    assert metric.verdict is Verdict.NO_DATA
    assert metric.reason == (
        f"no data: {candidate} candidate and {baseline} baseline requests, 100 needed of each "
        "(a check without data fails, as in Flagger) over 0-60 s; 1 of 5 failed checks"
    )
    assert (metric.baseline_samples, metric.candidate_samples) == (baseline, candidate)


@pytest.mark.parametrize(("baseline", "candidate"), [(1000, 99), (99, 1000)])
def test_fewer_samples_than_the_minimum_never_pass_but_are_no_failed_check(baseline: int, candidate: int) -> None:
    """Flagger computes a metric on whatever traffic an interval had; only modelcanary's minimum
    keeps a thin interval from counting as a pass."""
    telemetry = RolloutTelemetry(
        baseline=served(baseline, errors=baseline), candidate=served(candidate, errors=candidate)
    )
    metric = only(first_check(analysis({"kind": "error_rate", "minRequests": 100}, failed_checks=5), telemetry))
    assert metric.verdict is Verdict.NO_DATA  # even with every request failing on both sides: equal
    assert metric.reason == (
        "too few samples to pass (99 of 100): candidate 1 within limit 1.01 (baseline 1) over 0-60 s; "
        "0 of 5 failed checks"
    )


def test_a_thin_interval_that_is_worse_is_a_failed_check() -> None:
    telemetry = RolloutTelemetry(baseline=served(1000), candidate=served(50, errors=25))
    metric = only(first_check(analysis({"kind": "error_rate", "minRequests": 100}, failed_checks=1), telemetry))
    assert metric.verdict is Verdict.FAIL


@pytest.mark.parametrize(
    ("candidate_ms", "verdict"), [(10.0, Verdict.PASS), (11.0, Verdict.PASS), (20.0, Verdict.FAIL)]
)
def test_latency(candidate_ms: float, verdict: Verdict) -> None:
    telemetry = RolloutTelemetry(baseline=served(500, latency_ms=10.0), candidate=served(500, latency_ms=candidate_ms))
    metric = only(first_check(analysis({"kind": "latency", "quantile": 0.95, "margin": 0.2}), telemetry))
    base = quantile(LATENCY_EDGES_MS, telemetry.baseline.latency_counts, 0.95)
    cand = quantile(LATENCY_EDGES_MS, telemetry.candidate.latency_counts, 0.95)
    assert base is not None and cand is not None
    assert (metric.name, metric.kind, metric.verdict, metric.unit) == ("latency", "latency", verdict, "ms")
    assert (metric.baseline, metric.candidate) == (base, cand)
    assert metric.limit == base * 1.2
    assert metric.reason.startswith(f"candidate {cand:.4g} ms ")


def test_latency_uses_the_configured_quantile() -> None:
    # 90% fast, 10% slow: the median is fast on both sides, p99 is slow only on the candidate
    telemetry = RolloutTelemetry(
        baseline=served(900, latency_ms=5.0).merged(served(100, latency_ms=6.0)),
        candidate=served(900, latency_ms=5.0).merged(served(100, latency_ms=100.0)),
    )
    p50 = only(first_check(analysis({"kind": "latency", "quantile": 0.5}), telemetry))
    p99 = only(first_check(analysis({"kind": "latency", "quantile": 0.99}), telemetry))
    assert (p50.verdict, p99.verdict) == (Verdict.PASS, Verdict.FAIL)


@pytest.mark.parametrize(
    ("wrong", "verdict", "candidate"), [(0, Verdict.PASS, 1.0), (2, Verdict.PASS, 0.99), (10, Verdict.FAIL, 0.95)]
)
def test_quality_accuracy(wrong: int, verdict: Verdict, candidate: float) -> None:
    baseline = labelled((100, 0.9, 1), (100, 0.1, 0))  # every one right
    cand = labelled((100, 0.9, 1), (100 - wrong, 0.1, 0), (wrong, 0.8, 0))  # ``wrong`` negatives scored positive
    spec = analysis({"kind": "quality", "margin": 0.02})
    metric = only(first_check(spec, RolloutTelemetry(baseline=baseline, candidate=cand)))
    assert (metric.name, metric.kind, metric.verdict, metric.unit) == ("quality", "quality", verdict, "accuracy")
    assert (metric.baseline, metric.candidate, metric.limit) == (1.0, candidate, 1.0 - 0.02)
    assert (metric.baseline_samples, metric.candidate_samples) == (200, 200)
    if verdict is Verdict.FAIL:
        assert metric.reason.startswith("candidate 0.95 below limit 0.98 (baseline 1) over 0-60 s")


def test_quality_threshold_and_measures_count_their_own_denominators() -> None:
    baseline = labelled((80, 0.9, 1), (20, 0.2, 1), (100, 0.1, 0))  # precision 1.0, recall 0.8
    cand = labelled((100, 0.9, 1), (25, 0.9, 0), (75, 0.1, 0))  # precision 0.8, recall 1.0
    telemetry = RolloutTelemetry(baseline=baseline, candidate=cand)
    precision = only(first_check(analysis({"kind": "quality", "measure": "precision", "minLabels": 50}), telemetry))
    recall = only(first_check(analysis({"kind": "quality", "measure": "recall", "minLabels": 50}), telemetry))
    assert (precision.verdict, precision.baseline, precision.candidate) == (Verdict.FAIL, 1.0, 0.8)
    assert (precision.baseline_samples, precision.candidate_samples) == (80, 125)  # predicted positives
    assert (recall.verdict, recall.baseline, recall.candidate) == (Verdict.PASS, 0.8, 1.0)
    assert (recall.baseline_samples, recall.candidate_samples) == (100, 100)  # actual positives
    at_95 = only(first_check(analysis({"kind": "quality", "threshold": 0.95, "minLabels": 50}), telemetry))
    assert (at_95.baseline, at_95.candidate) == (0.5, 0.5)  # nothing scores 0.95: only the negatives are right


# --- the checks over time ---------------------------------------------------------------------------------------------


def test_no_check_before_the_first_interval() -> None:
    rollout = Rollout(analysis({"kind": "error_rate"}))
    for at in (10.0, 20.0, 59.0):
        rollout.serve(cand_errors=500)
        metric = only(rollout.judge(at))
        assert metric.verdict is Verdict.NO_DATA
        assert metric.reason == "no data: no check yet, the first runs at 60 s"
    assert only(rollout.judge(60.0)).verdict is Verdict.FAIL


@pytest.mark.parametrize(("first", "second", "verdict"), [(100, 5, Verdict.PASS), (0, 30, Verdict.INCONCLUSIVE)])
def test_a_check_sees_only_its_own_interval(first: int, second: int, verdict: Verdict) -> None:
    # cumulative rates would say the opposite: 105/2000 fails, 30/2000 passes
    rollout = Rollout(analysis({"kind": "error_rate"}, failed_checks=5))
    rollout.serve(cand_errors=first)
    rollout.judge(60.0)
    rollout.serve(cand_errors=second)
    metric = only(rollout.judge(120.0))
    assert (metric.verdict, metric.candidate, metric.candidate_samples) == (verdict, second / 1000, 1000)
    assert "over 60-120 s" in metric.reason


def test_between_checks_the_last_check_stands() -> None:
    rollout = Rollout(analysis({"kind": "error_rate"}, {"kind": "latency"}, failed_checks=5))
    rollout.serve()
    at_check = rollout.judge(60.0)
    for at in (70.0, 80.0, 119.0):
        rollout.serve(cand_errors=900, cand_ms=500.0)  # terrible, but not checked until 120 s
        assert rollout.judge(at) == at_check
    assert rollout.judge(120.0).verdict is Verdict.INCONCLUSIVE


def test_failed_checks_are_counted_in_total_not_in_a_row() -> None:
    # Flagger's status.failedChecks only ever grows during an analysis: a passing check does not reset it
    rollout = Rollout(analysis({"kind": "error_rate"}, failed_checks=5))
    verdicts = []
    for check in range(9):
        rollout.serve(cand_errors=50 if check % 2 == 0 else 10)
        verdicts.append(only(rollout.judge(60.0 * (check + 1))).verdict)
    assert verdicts == [Verdict.INCONCLUSIVE, Verdict.PASS] * 4 + [Verdict.FAIL]
    assert only(rollout.judge(545.0)).reason.endswith("over 480-540 s; 5 of 5 failed checks")


def test_fail_names_the_metrics_that_failed_the_last_check() -> None:
    rollout = Rollout(analysis({"kind": "error_rate"}, {"kind": "latency"}, failed_checks=3))
    rollout.serve(cand_errors=50)
    rollout.judge(60.0)
    rollout.serve(cand_errors=50)
    rollout.judge(120.0)
    rollout.serve(cand_ms=50.0)
    result = rollout.judge(180.0)
    assert [(m.name, m.verdict) for m in result.metrics] == [("error-rate", Verdict.PASS), ("latency", Verdict.FAIL)]


def test_fail_does_not_name_a_metric_within_its_limit_on_few_samples() -> None:
    """At the check that reaches ``failed_checks``, a metric within its limit on fewer samples than
    its minimum did not fail it: it stays NO_DATA (it was named FAIL beside the one that failed)."""
    spec = analysis(
        {"kind": "error_rate", "margin": 0.01},
        {"kind": "quality", "name": "acc", "margin": 0.02, "minLabels": 100},
    )
    labels = labelled((9, 0.9, 1), (1, 0.1, 0))  # ten labels each, all right: within, but 10 of 100
    baseline, candidate = (
        served(1000, errors=10, into=labels),
        served(1000, errors=100, into=labelled((9, 0.9, 1), (1, 0.1, 0))),
    )
    result = first_check(spec, RolloutTelemetry(baseline=baseline, candidate=candidate))
    assert [(m.name, m.verdict) for m in result.metrics] == [("error-rate", Verdict.FAIL), ("acc", Verdict.NO_DATA)]
    assert result.metrics[1].reason.startswith("too few samples to pass (10 of 100)")
    assert result.verdict is Verdict.FAIL


def test_a_check_without_data_fails_and_rolls_back_as_in_flagger() -> None:
    rollout = Rollout(analysis({"kind": "error_rate"}, {"kind": "latency"}, failed_checks=5))
    rollout.serve()
    assert rollout.judge(60.0).verdict is Verdict.PASS
    verdicts = [rollout.judge(60.0 * k).verdict for k in range(2, 7)]  # no more traffic
    assert verdicts == [Verdict.NO_DATA] * 4 + [Verdict.FAIL]
    assert [m.verdict for m in rollout.judge(360.0).metrics] == [Verdict.FAIL, Verdict.FAIL]


def test_too_few_samples_in_an_interval_is_no_data_whatever_came_before() -> None:
    rollout = Rollout(analysis({"kind": "error_rate", "minRequests": 100}, failed_checks=5))
    rollout.serve()
    rollout.judge(60.0)
    rollout.serve(requests=99)  # 1099 requests in all, but 99 in this interval
    metric = only(rollout.judge(120.0))
    assert (metric.verdict, metric.candidate_samples) == (Verdict.NO_DATA, 99)


def test_the_judge_stops_checking_once_it_has_failed() -> None:
    rollout = Rollout(analysis({"kind": "error_rate"}, failed_checks=1))
    rollout.serve(cand_errors=500)
    failed = rollout.judge(60.0)
    memory = rollout.memory
    rollout.serve()
    assert rollout.judge(120.0) == failed
    assert rollout.memory == memory


def test_interval_setting_and_flaggers_ten_second_floor() -> None:
    every_30 = Rollout(analysis({"kind": "error_rate"}, interval=30.0))
    every_30.serve()
    assert only(every_30.judge(30.0)).verdict is Verdict.PASS
    every_5 = Rollout(analysis({"kind": "error_rate"}, interval=5.0))
    every_5.serve()
    assert only(every_5.judge(5.0)).reason == "no data: no check yet, the first runs at 10 s"
    assert only(every_5.judge(10.0)).verdict is Verdict.PASS


def test_a_late_look_checks_the_whole_gap_once_and_stays_on_the_grid() -> None:
    rollout = Rollout(analysis({"kind": "error_rate"}, failed_checks=5))
    rollout.serve()
    rollout.serve()
    metric = only(rollout.judge(185.0))
    assert (metric.candidate_samples, rollout.memory["due"]) == (2000, 240.0)
    assert "over 0-185 s" in metric.reason


def test_judgement_keeps_the_spec_order_and_the_worst_verdict() -> None:
    telemetry = RolloutTelemetry(baseline=served(1000, errors=10), candidate=served(1000, errors=100))
    spec = analysis(
        {"kind": "quality", "name": "acc"}, {"kind": "error_rate"}, {"kind": "latency", "name": "p95"}, failed_checks=5
    )
    result = first_check(spec, telemetry)
    assert [(m.name, m.verdict) for m in result.metrics] == [
        ("acc", Verdict.NO_DATA),
        ("error-rate", Verdict.INCONCLUSIVE),
        ("p95", Verdict.PASS),
    ]
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.failing() == []


def test_guardrails_are_judged_at_every_look_on_cumulative_telemetry() -> None:
    base, cand = VariantTelemetry(), VariantTelemetry()
    for _ in range(200):
        base.observe(latency_ms=10.0, cpu_ms=1.0)
        cand.observe(latency_ms=10.0, cpu_ms=3.0)
    spec = analysis({"kind": "error_rate"}, {"kind": "cost"})
    result = judge(spec, look(10.0, RolloutTelemetry(baseline=base, candidate=cand)), {})[0]
    assert [(m.name, m.verdict) for m in result.metrics] == [
        ("error-rate", Verdict.NO_DATA),
        ("cpu-cost", Verdict.FAIL),
    ]


# --- the factory ------------------------------------------------------------------------------------------------------


def test_unknown_judge_lists_the_known_ones() -> None:
    with pytest.raises(SpecError) as caught:
        judges.get_judge("kayenta")
    known = ", ".join(sorted(judges.JUDGES))
    assert caught.value.problems == [("spec.analysis.judge", f"unknown judge 'kayenta'; known: {known}")]
    assert {"mann_whitney", "sequential", "threshold"} <= set(judges.JUDGES)


def test_spec_judge_names_are_the_factory_keys() -> None:
    literal = Analysis.model_fields["judge"].annotation
    assert typing.get_origin(literal) is typing.Literal
    assert set(typing.get_args(literal)) == set(judges.JUDGES)
    for name in judges.JUDGES:
        assert judges.get_judge(name) is judges.JUDGES[name]


@pytest.mark.parametrize(("cand_errors", "verdict"), [(10, Verdict.PASS), (60, Verdict.FAIL)])
def test_at_a_full_step_the_baseline_is_judged_on_all_its_data_so_far(cand_errors: int, verdict: Verdict) -> None:
    """At 100% the baseline serves no one: compared with each interval's data alone, every candidate
    reaching that step had "no data" for a baseline, failed its checks and was rolled back."""
    spec = analysis({"kind": "error_rate", "margin": 0.01, "minRequests": 500})
    telemetry = RolloutTelemetry(baseline=served(4000, errors=40), candidate=served(1000, errors=10))
    memory = judge(spec, Look(at=60.0, weight=50.0, telemetry=telemetry), {})[1]  # a passed check at 50%
    served(2000, errors=cand_errors, into=telemetry.candidate)  # then a minute at 100%: the baseline idle
    result = only(judge(spec, Look(at=120.0, weight=100.0, telemetry=telemetry), memory)[0])
    assert result.verdict is verdict, result.reason
    assert (result.baseline_samples, result.candidate_samples) == (4000, 2000)
    assert result.baseline == pytest.approx(0.01) and "baseline so far, the candidate serving all" in result.reason
