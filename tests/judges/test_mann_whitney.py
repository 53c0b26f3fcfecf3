"""The Mann-Whitney (Kayenta-like) judge: its interval against R's procedure rebuilt on scipy,
Kayenta's classification rules, the points kept per interval, and the score."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import mannwhitneyu, norm, rankdata

from modelcanary import judges
from modelcanary.domain.judgement import Judgement, Look, Memory, Verdict
from modelcanary.domain.metrics import Analysis
from modelcanary.domain.telemetry import RolloutTelemetry, VariantTelemetry
from modelcanary.judges import mann_whitney
from modelcanary.judges.mann_whitney import Classification, classify
from modelcanary.stats.mann_whitney import percentile, shift_interval, without_outliers

judge = judges.get_judge("mann_whitney")


def r_wdiff(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], mu: float, zq: float) -> float:
    """R's ``wdiff`` from ``wilcox.test``, written out on scipy's ranks."""
    ranks = rankdata(np.concatenate((x - mu, y)))
    ties = np.unique(ranks, return_counts=True)[1]
    nx, ny = len(x), len(y)
    dz = ranks[:nx].sum() - nx * (nx + 1) / 2 - nx * ny / 2
    sigma = math.sqrt(nx * ny / 12 * ((nx + ny + 1) - (ties**3 - ties).sum() / ((nx + ny) * (nx + ny - 1))))
    return float((dz - np.sign(dz) * 0.5) / sigma - zq)


def r_interval(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], confidence: float) -> tuple[float, float]:
    """R's two-sided interval: its fallbacks to the ends, else a root search (here to 1e-13)."""
    lo, hi = x.min() - y.max(), x.max() - y.min()

    def root(zq: float) -> float:
        if r_wdiff(x, y, lo, zq) <= 0:
            return float(lo)
        if r_wdiff(x, y, hi, zq) >= 0:
            return float(hi)
        return float(brentq(lambda mu: r_wdiff(x, y, mu, zq), lo, hi, xtol=1e-13))

    z = norm.ppf(1 - (1 - confidence) / 2)
    return root(z), root(-z)


# --- the interval on the shift ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(25))
def test_interval_is_rs_wilcox_interval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nx, ny = rng.integers(3, 40, size=2)
    digits = int(rng.integers(1, 4))  # coarse rounding makes ties within and across the variants
    x = np.round(rng.lognormal(0.1 * rng.random(), 0.3, nx), digits)
    y = np.round(rng.lognormal(0.0, 0.3, ny), digits)
    lower, upper, estimate = shift_interval(x.tolist(), y.tolist(), 0.98)
    assert (lower, upper) == pytest.approx(r_interval(x, y, 0.98), abs=1e-9)
    assert estimate == pytest.approx(float(np.median(np.subtract.outer(x, y))))  # Hodges-Lehmann
    assert lower <= estimate <= upper


def test_interval_inverts_scipys_mann_whitney_test() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(1.0, 1.0, 25), rng.normal(0.0, 1.0, 30)
    lower, upper, _ = shift_interval(x.tolist(), y.tolist(), 0.98)

    def p(mu: float) -> float:
        return float(mannwhitneyu(x - mu, y, method="asymptotic", use_continuity=True).pvalue)

    eps = 1e-9
    assert p(lower - eps) < 0.02 <= p(lower + eps)
    assert p(upper + eps) < 0.02 <= p(upper - eps)


def test_with_few_points_the_interval_falls_back_to_the_range_of_differences() -> None:
    assert shift_interval([5.0, 6.0, 7.0], [1.0, 2.0, 3.0], 0.98)[:2] == (2.0, 6.0)
    found = classify([1.0, 2.0, 3.0], [5.0, 6.0, 7.0], worse="high", confidence=0.98, tolerance=0.25)
    assert (found.label, found.lower, found.upper, found.estimate) == ("high", 2.0, 6.0, 4.0)


# --- Kayenta's classification -----------------------------------------------------------------------------------------


def kayenta(control: list[float], experiment: list[float], worse: str = "high", **kw: float) -> Classification:
    settings = {"confidence": 0.98, "tolerance": 0.25} | kw
    return classify(control, experiment, worse=worse, **settings)  # type: ignore[arg-type]


def test_identical_or_all_equal_data_pass() -> None:
    assert kayenta([1.0, 2.0, 3.0], [3.0, 1.0, 2.0]) == Classification("pass", ratio=1.0, note="identical data")
    assert kayenta([4.0] * 3, [4.0] * 5) == Classification("pass", ratio=1.0, note="all values equal")


def test_constant_variants_are_compared_as_kayenta_does_after_its_noise() -> None:
    found = kayenta([0.01] * 5, [0.03] * 5)
    assert found.label == "high"
    assert found.lower == pytest.approx(0.02)
    assert found.upper == found.lower
    assert found.estimate == found.lower
    assert found.ratio == pytest.approx(3.0)
    assert kayenta([0.03] * 5, [0.01] * 5).label == "pass"  # better is not worse


def test_only_the_worse_direction_counts() -> None:
    low, high = [float(v) for v in range(10)], [float(v) + 20 for v in range(10)]
    assert kayenta(control=high, experiment=low, worse="high").label == "pass"
    assert kayenta(control=high, experiment=low, worse="low").label == "low"
    assert kayenta(control=low, experiment=high, worse="low").label == "pass"


def test_the_interval_must_clear_a_quarter_of_the_estimate_not_just_zero() -> None:
    control = np.linspace(0, 10, 30).tolist()
    shifted = [v + 2.5 for v in control]
    found = kayenta(control, shifted)
    assert found.lower is not None and found.estimate is not None
    assert 0 < found.lower < 0.25 * found.estimate  # significant, but within Kayenta's tolerance
    assert found.label == "pass"
    assert kayenta(control, shifted, tolerance=0.0).label == "high"
    assert kayenta(control, [v + 3.0 for v in control]).label == "high"


def test_mean_ratio_follows_kayentas_effect_size() -> None:
    # a zero baseline mean gives a ratio of 1, which allows High; a zero candidate mean gives NaN,
    # which Kayenta never classifies, so even a candidate that is always wrong passes as not Low
    from_zero = kayenta([0.0] * 5, [0.01, 0.02, 0.01, 0.03, 0.02])
    assert (from_zero.label, from_zero.ratio) == ("high", 1.0)
    to_zero = kayenta([0.9, 0.8, 0.85, 0.9, 0.88], [0.0] * 5, worse="low")
    assert (to_zero.label, to_zero.ratio) == ("pass", None)


def test_percentile_is_commons_maths_legacy_estimate() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 37, 120):
        values = sorted(rng.normal(size=n).tolist())
        for p in (1, 25, 50, 75, 99):
            assert percentile(values, p) == pytest.approx(float(np.percentile(values, p, method="weibull")))


def test_outliers_are_dropped_only_from_a_hundred_points_on() -> None:
    values = [float(v % 10) for v in range(99)]
    assert without_outliers([*values, 1e6]) == values
    assert without_outliers([*values[:98], 1e6]) == [*values[:98], 1e6]


# --- the judge: points per interval, the score ------------------------------------------------------------------------


def analysis(*metrics: dict[str, Any], **settings: float) -> Analysis:
    return Analysis.model_validate({"judge": "mann_whitney", "metrics": list(metrics), "mannWhitney": settings})


class Rollout:
    def __init__(self, spec: Analysis) -> None:
        self.spec = spec
        self.telemetry = RolloutTelemetry()
        self.memory: Memory = {}

    def serve(self, base: tuple[int, int] = (1000, 10), cand: tuple[int, int] = (1000, 10)) -> None:
        for (requests, errors), variant in ((base, self.telemetry.baseline), (cand, self.telemetry.candidate)):
            for index in range(requests):
                variant.observe(latency_ms=10.0, error=index < errors)

    def judge(self, at: float) -> Judgement:
        telemetry = RolloutTelemetry(
            baseline=VariantTelemetry.from_json(self.telemetry.baseline.to_json()),
            candidate=VariantTelemetry.from_json(self.telemetry.candidate.to_json()),
        )
        judgement, self.memory = judge(self.spec, Look(at=at, weight=50.0, telemetry=telemetry), self.memory)
        return judgement


def test_one_point_per_interval_and_variant_where_it_has_data() -> None:
    rollout = Rollout(analysis({"kind": "error_rate"}))
    rollout.serve(cand=(1000, 20))
    for at in (10.0, 30.0, 59.0):
        assert rollout.judge(at).metrics[0].reason == "no data: 0 candidate and 0 baseline points, 3 needed of each"
    rollout.judge(60.0)
    rollout.serve(cand=(0, 0))  # the candidate gets no traffic in this interval: no point, not a zero
    rollout.judge(120.0)
    rollout.serve(base=(1000, 30), cand=(500, 15))
    metric = rollout.judge(180.0).metrics[0]
    assert rollout.memory["points"]["error-rate"] == [[0.01, 0.01, 0.03], [0.02, 0.03]]
    assert (metric.verdict, metric.baseline_samples, metric.candidate_samples) == (Verdict.NO_DATA, 3, 2)
    rollout.serve()
    metric = rollout.judge(240.0).metrics[0]
    assert metric.verdict is not Verdict.NO_DATA
    assert metric.baseline == pytest.approx(0.015)  # means of points
    assert metric.candidate == pytest.approx(0.02)


def test_metrics_are_classified_only_when_their_points_change(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counted(*args: Any, **kw: Any) -> Classification:
        calls.append(1)
        return classify(*args, **kw)

    monkeypatch.setattr(mann_whitney, "classify", counted)
    rollout = Rollout(analysis({"kind": "error_rate"}))
    for k in range(1, 31):  # five minutes of looks every 10 s
        rollout.serve(base=(100, 1), cand=(100, 1 + k % 3))
        rollout.judge(10.0 * k)
    assert len(calls) == 3  # at 180, 240 and 300 s; before that, too few points to classify


def test_a_gross_error_regression_fails_on_that_metric() -> None:
    rollout = Rollout(analysis({"kind": "error_rate"}, {"kind": "latency"}))
    verdicts = []
    for minute in range(1, 4):
        rollout.serve(cand=(1000, 300))
        verdicts.append(rollout.judge(60.0 * minute))
    assert [j.verdict for j in verdicts] == [Verdict.NO_DATA, Verdict.NO_DATA, Verdict.FAIL]
    errors, latency = verdicts[-1].metrics
    assert (errors.verdict, latency.verdict) == (Verdict.FAIL, Verdict.PASS)
    assert errors.reason.startswith("High on 3 and 3 points: 98% interval on the shift [0.29, 0.29]")
    assert errors.reason.endswith("score 50 < marginal 75")
    assert errors.bound == pytest.approx(0.29)
    assert errors.limit == pytest.approx(0.25 * 0.29)


def judged(spec: Analysis, labels: dict[str, str]) -> dict[str, Verdict]:
    """The verdicts for metrics already classified as ``labels`` (memory as the judge stores it)."""
    points = [[1.0, 2.0, 3.0], [1.0, 2.0, 4.0]]
    memory = {
        "due": 1e9,
        "points": {name: points for name in labels},
        "classes": {name: asdict(Classification(label, 0.5, 1.5, 1.0, 1.2)) for name, label in labels.items()},  # type: ignore[arg-type]
    }
    judgement = judge(spec, Look(at=0.0, weight=50.0, telemetry=RolloutTelemetry()), memory)[0]
    return {m.name: m.verdict for m in judgement.metrics}


def four(*weights: float, **settings: float) -> Analysis:
    names = "abcd"
    return analysis(
        *({"kind": "error_rate", "name": n, "weight": w} for n, w in zip(names, weights, strict=True)), **settings
    )


@pytest.mark.parametrize(
    ("labels", "verdicts"),
    [
        ("pppp", "PPPP"),  # score 100
        ("hppp", "IPPP"),  # 75: marginal
        ("hhpp", "FFPP"),  # 50: below marginal
        ("hpp-", "FPPN"),  # 2 of 3 classified: 67; no data is left out of the score and never passes
        ("----", "NNNN"),
    ],
)
def test_score_against_pass_and_marginal(labels: str, verdicts: str) -> None:
    full = {"p": "pass", "h": "high", "-": "no_data"}
    short = {Verdict.PASS: "P", Verdict.INCONCLUSIVE: "I", Verdict.FAIL: "F", Verdict.NO_DATA: "N"}
    result = judged(four(1, 1, 1, 1), {name: full[c] for name, c in zip("abcd", labels, strict=True)})
    assert "".join(short[result[name]] for name in "abcd") == verdicts


def test_score_is_weighted_and_a_passing_score_passes_the_canary() -> None:
    # 30 of 31: above 95, so Kayenta passes the canary whatever the one light metric says
    assert judged(
        four(1, 10, 10, 10), dict(zip("abcd", ["high", "pass", "pass", "pass"], strict=True))
    ) == dict.fromkeys("abcd", Verdict.PASS)
    heavy = judged(four(10, 1, 1, 1), dict(zip("abcd", ["high", "pass", "pass", "pass"], strict=True)))
    assert heavy["a"] is Verdict.FAIL  # 3 of 13: 23


def test_score_thresholds_come_from_the_spec() -> None:
    labels = dict(zip("abcd", ["high", "pass", "pass", "pass"], strict=True))
    assert judged(four(1, 1, 1, 1, passScore=70, marginalScore=50), labels)["a"] is Verdict.PASS
    assert judged(four(1, 1, 1, 1, passScore=99, marginalScore=80), labels)["a"] is Verdict.FAIL


def test_guardrails_stay_out_of_the_score() -> None:
    spec = analysis({"kind": "error_rate", "name": "a"}, {"kind": "drift"}, {"kind": "cost"})
    assert judged(spec, {"a": "high"}) == {
        "a": Verdict.FAIL,
        "prediction-drift": Verdict.NO_DATA,
        "cpu-cost": Verdict.NO_DATA,
    }
