"""The Mann-Whitney judge, after Kayenta's NetflixACAJudge: per-interval points of each metric, a
Mann-Whitney interval on the shift between the variants, and a score of the metrics that pass.

Read from spinnaker/kayenta, ``kayenta-judge/src/main/scala/com/netflix/kayenta/judge/``:
``NetflixACAJudge.scala`` (per metric: NaN strategy, outlier removal, then
``MannWhitneyClassifier(tolerance = 0.25, confLevel = 0.98, effectSizeThresholds)``),
``classifiers/metric/MannWhitneyClassifier.scala``, ``detectors/IQRDetector.scala``,
``stats/EffectSizes.scala``, ``scorers/WeightedSumScorer.scala``,
``classifiers/score/ThresholdScoreClassifier.scala``; and
``kayenta-mannwhitney/.../MannWhitney.scala``, a port of R's ``wilcox.test`` interval.

- Points: every ``analysis.mann_whitney.interval`` (60 s; Kayenta's points are the metric source's
  ``step``, commonly 60 s) one point per metric and variant: the interval's error rate, latency
  quantile or quality measure. An interval without data for a variant gives that variant no point
  (Kayenta's ``nanStrategy: remove``; its default, ``none``, turns NaN into 0, which would make an
  interval without traffic look perfect). Kayenta judges all points since the start at each
  analysis, so every look classifies every metric on all points so far.
- Classification, per metric: outliers beyond Tukey fences at 3 IQR (widened to the 1st/99th
  percentiles) are dropped from each variant. Identical or all-equal data pass. Otherwise the shift
  ``candidate - baseline`` gets R's asymptotic, continuity-corrected ``confidence`` (0.98) interval
  and its Hodges-Lehmann estimate; the metric is High when the interval's lower end exceeds
  ``tolerance`` (0.25) times the estimate's size and the mean ratio candidate/baseline is at least 1
  (``effectSize.allowedIncrease``, default 1.0), Low symmetrically. Kayenta's default direction is
  ``either``; here only the worse one counts (``direction: increase`` for error rate and latency,
  ``decrease`` for quality), so an improvement is never held against the candidate.
- Score: the weighted percent of classified metrics that pass (one Kayenta group, the metrics'
  weights within it; metrics without data are left out, as Kayenta's group score leaves them out).
  Below ``marginal_score`` (75) the failing metrics FAIL, below ``pass_score`` (95) they are
  INCONCLUSIVE (Kayenta's ``marginal``), otherwise every classified metric passes, as Kayenta passes
  the canary. The 75/95 thresholds are Spinnaker's canary stage defaults.
- Fewer than ``MIN_POINTS`` per variant is NO_DATA. Kayenta has no minimum: an empty series is
  ``Nodata`` (or a pass under the default NaN strategy), and with one to four points R's interval
  falls back to the whole range of differences, so any complete separation is High or Low.

Drift and cost are guardrails, judged at every look on the cumulative telemetry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import fmean
from typing import Any, Literal

from modelcanary.domain.judgement import Judgement, Look, Memory, MetricJudgement, Verdict
from modelcanary.domain.metrics import Analysis, CostMetric, DriftMetric, MannWhitneySettings, QualityMetric
from modelcanary.judges.guardrails import guardrail
from modelcanary.judges.threshold import Tested, cumulative, interval_value, next_due, unit
from modelcanary.stats.mann_whitney import shift_interval, without_outliers

NAME = "mann_whitney"
MIN_POINTS = 3  # per variant; with fewer, R's fallback to the range of differences calls any separation
ALLOWED_CHANGE = 1.0  # effectSize.allowedIncrease / allowedDecrease defaults: any mean ratio beyond 1

Label = Literal["pass", "high", "low", "no_data"]


@dataclass(frozen=True)
class Classification:
    """One metric's class, the interval on the shift ``candidate - baseline`` and its estimate, and
    the mean ratio candidate/baseline (``None`` where Kayenta's would be NaN)."""

    label: Label
    lower: float | None = None
    upper: float | None = None
    estimate: float | None = None
    ratio: float | None = None
    note: str = ""


def judge(analysis: Analysis, look: Look, memory: Memory) -> tuple[Judgement, Memory]:
    settings = analysis.mann_whitney
    new = dict(memory)  # never the caller's dict; unchanged parts are shared, never mutated
    if look.at >= memory.get("due", settings.interval):
        tested = [metric for metric in analysis.metrics if not isinstance(metric, DriftMetric | CostMetric)]
        new.update(_new_points(tested, look, memory, settings))
        new["due"] = next_due(look.at, settings.interval) if settings.interval > 0 else look.at
    classes: dict[str, dict[str, Any]] = new.get("classes", {})
    points: dict[str, list[list[float]]] = new.get("points", {})
    judged = {m.name: Classification(**classes[m.name]) for m in analysis.metrics if m.name in classes}
    score = _score(analysis, judged)
    metrics = tuple(
        guardrail(metric, look.telemetry)
        if isinstance(metric, DriftMetric | CostMetric)
        else _judgement(metric, judged.get(metric.name), points.get(metric.name, [[], []]), score, settings)
        for metric in analysis.metrics
    )
    return Judgement(judge=NAME, metrics=metrics), new


def classify(
    control: Sequence[float],
    experiment: Sequence[float],
    *,
    worse: Literal["high", "low"],
    confidence: float,
    tolerance: float,
) -> Classification:
    """Kayenta's MannWhitneyClassifier on two series, counting only the ``worse`` direction."""
    experiment, control = without_outliers(experiment), without_outliers(control)
    if not experiment or not control:
        return Classification("no_data")
    if sorted(experiment) == sorted(control):
        return Classification("pass", ratio=1.0, note="identical data")
    if len({*experiment, *control}) == 1:
        return Classification("pass", ratio=1.0, note="all values equal")
    if len(set(experiment)) == 1 and len(set(control)) == 1:
        # Kayenta adds Gaussian noise of 1e-5 times the value to each side so the test can rank them;
        # as the noise vanishes the interval and the estimate close on the difference itself
        lower = upper = estimate = experiment[0] - control[0]
    else:
        lower, upper, estimate = shift_interval(experiment, control, confidence)
    ratio = _mean_ratio(control, experiment)
    bound = tolerance * abs(estimate)
    if worse == "high" and lower > bound and ratio is not None and ratio >= ALLOWED_CHANGE:
        return Classification("high", lower, upper, estimate, ratio)
    if worse == "low" and upper < -bound and ratio is not None and ratio <= ALLOWED_CHANGE:
        return Classification("low", lower, upper, estimate, ratio)
    return Classification("pass", lower, upper, estimate, ratio)


def _mean_ratio(control: Sequence[float], experiment: Sequence[float]) -> float | None:
    """Kayenta's deviation: 1 when the baseline's mean is 0, NaN (``None``) when the candidate's is."""
    base, cand = fmean(control), fmean(experiment)
    if base == 0:
        return 1.0
    return None if cand == 0 else cand / base


def _new_points(tested: list[Tested], look: Look, memory: Memory, settings: MannWhitneySettings) -> Memory:
    """Close the interval: a point per metric and variant where it has data, and the classes of
    the metrics whose points changed."""
    before: dict[str, list[list[int]]] = memory.get("counts", {})
    points: dict[str, list[list[float]]] = dict(memory.get("points", {}))
    classes: dict[str, dict[str, Any]] = dict(memory.get("classes", {}))
    counts = {m.name: [cumulative(m, look.telemetry.baseline), cumulative(m, look.telemetry.candidate)] for m in tested}
    for metric in tested:
        prev = before.get(metric.name, [None, None])
        series = points.get(metric.name, [[], []])
        values = [interval_value(metric, now, then)[0] for now, then in zip(counts[metric.name], prev, strict=True)]
        if all(value is None for value in values) and metric.name in classes:
            continue
        series = [[*s, float(v)] if v is not None else s for s, v in zip(series, values, strict=True)]
        points[metric.name] = series
        if min(len(series[0]), len(series[1])) < MIN_POINTS:
            found = Classification("no_data")
        else:
            worse: Literal["high", "low"] = "low" if isinstance(metric, QualityMetric) else "high"
            found = classify(*series, worse=worse, confidence=settings.confidence, tolerance=settings.tolerance)
        classes[metric.name] = asdict(found)
    return {"counts": counts, "points": points, "classes": classes}


def _score(analysis: Analysis, judged: dict[str, Classification]) -> float | None:
    """Percent of the classified metrics' weight that passes; ``None`` when none is classified."""
    weights = {
        m.name: m.weight for m in analysis.metrics if judged.get(m.name, Classification("no_data")).label != "no_data"
    }
    if not weights:
        return None
    return 100 * sum(w for name, w in weights.items() if judged[name].label == "pass") / sum(weights.values())


def _judgement(
    metric: Tested,
    found: Classification | None,
    series: list[list[float]],
    score: float | None,
    settings: MannWhitneySettings,
) -> MetricJudgement:
    n_base, n_cand = len(series[0]), len(series[1])
    fields: dict[str, Any] = {"name": metric.name, "kind": metric.kind, "unit": unit(metric)}
    fields |= {"baseline_samples": n_base, "candidate_samples": n_cand}
    if found is None or found.label == "no_data" or score is None:
        reason = f"no data: {n_cand} candidate and {n_base} baseline points, {MIN_POINTS} needed of each"
        return MetricJudgement(
            verdict=Verdict.NO_DATA, baseline=None, candidate=None, limit=None, reason=reason, **fields
        )
    if score >= settings.pass_score:
        verdict, scored = Verdict.PASS, f"score {score:.0f} >= pass {settings.pass_score:g}"
    elif score >= settings.marginal_score:
        verdict, scored = Verdict.INCONCLUSIVE, f"score {score:.0f}: marginal, below pass {settings.pass_score:g}"
    else:
        verdict, scored = Verdict.FAIL, f"score {score:.0f} < marginal {settings.marginal_score:g}"
    shift, bound, limit = found.note, None, None
    if found.estimate is not None and found.lower is not None and found.upper is not None:
        high = not isinstance(metric, QualityMetric)  # the end that must clear the tolerance to count as worse
        bound, limit = (found.lower, 1.0) if high else (found.upper, -1.0)
        limit *= settings.tolerance * abs(found.estimate)
        ratio = "n/a" if found.ratio is None else f"{found.ratio:.3g}"
        shift = (
            f"{settings.confidence:.0%} interval on the shift [{found.lower:.4g}, {found.upper:.4g}], estimate "
            f"{found.estimate:.4g}, {'lower' if high else 'upper'} end vs {limit:.4g}, mean ratio {ratio}"
        )
    return MetricJudgement(
        verdict=Verdict.PASS if found.label == "pass" else verdict,
        baseline=fmean(series[0]),
        candidate=fmean(series[1]),
        limit=limit,
        bound=bound,
        reason=f"{found.label.capitalize()} on {n_cand} and {n_base} points: {shift}; {scored}",
        **fields,
    )
