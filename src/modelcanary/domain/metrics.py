"""The analysis part of the rollout spec: what each metric compares, with what margin and on how
much data, and the settings of the judges that are not the default one."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from modelcanary.domain.specbase import Seconds, SpecModel, problem_at


class _Metric(SpecModel):
    weight: float = Field(
        default=1.0, gt=0, description="share of alpha this metric's evidence gets, relative to the others"
    )


class ErrorRateMetric(_Metric):
    """Candidate error rate may exceed the baseline's by at most ``margin`` (absolute, 0.01 = 1 point)."""

    kind: Literal["error_rate"]
    name: str = "error-rate"
    margin: float = Field(default=0.01, ge=0, le=1)
    min_requests: int = Field(default=100, ge=1)


class LatencyMetric(_Metric):
    """Candidate latency at ``quantile`` may exceed the baseline's by at most ``margin`` (relative, 0.21 = +21%).

    Latency is binned in buckets 10% apart, so a margin counts in whole buckets: to pass, rounded
    down (0.2 reads +10%), to fail, rounded up (0.2 reads +21%). The default, 0.21, is two buckets
    both ways; 0.1, 0.331 and 0.4641 are one, three and four.

    With ``distribution`` (the default) the sequential judge also tests the whole distribution (its
    p50, p90, p99 and p99.9), so a regression confined to the tail is caught whatever the quantile.
    """

    kind: Literal["latency"]
    name: str = "latency"
    quantile: float = Field(default=0.95, gt=0, lt=1)
    margin: float = Field(default=0.21, ge=0)
    min_requests: int = Field(default=50, ge=1)
    distribution: bool = True


class QualityMetric(_Metric):
    """Candidate ``measure`` on labelled predictions may fall below the baseline's by at most ``margin``.

    A prediction counts as positive when its score is at least ``threshold``. A label counts once its
    prediction is ``matureAfter`` old (0: at once): set it to the longest a label takes to come.
    Where the delay depends on the outcome (a chargeback confirms fraud weeks later, a legitimate
    payment settles at once), labels counted as they come are the fast outcomes only, and a
    candidate that misses every fraud would compare as well as the baseline until the slow ones
    came. Matured, each variant's labels are those of all its predictions older than the window.
    """

    kind: Literal["quality"]
    name: str = "quality"
    measure: Literal["accuracy", "precision", "recall"] = "accuracy"
    threshold: float = Field(default=0.5, ge=0, le=1)
    margin: float = Field(default=0.02, ge=0, le=1)
    min_labels: int = Field(default=100, ge=1)
    mature_after: Seconds = Field(default=0.0, description="a label counts once its prediction is this old")


class DriftMetric(_Metric):
    """A guardrail: the distance between the variants' prediction-score distributions stays below ``limit``."""

    kind: Literal["drift"]
    name: str = "prediction-drift"
    distance: Literal["psi", "js", "wasserstein"] = "psi"
    limit: float = Field(default=0.2, gt=0)
    min_requests: int = Field(default=200, ge=1)


class CostMetric(_Metric):
    """A guardrail: candidate CPU time per request may exceed the baseline's by at most ``margin`` (relative)."""

    kind: Literal["cost"]
    name: str = "cpu-cost"
    margin: float = Field(default=0.5, ge=0)
    min_requests: int = Field(default=100, ge=1)


Metric = Annotated[
    ErrorRateMetric | LatencyMetric | QualityMetric | DriftMetric | CostMetric, Field(discriminator="kind")
]


class ThresholdSettings(SpecModel):
    """Flagger's analysis: every ``interval`` each metric is checked on that interval's data alone,
    and the rollout rolls back after ``failed_checks`` failed checks."""

    interval: Seconds = Field(default=60.0, gt=0)
    failed_checks: int = Field(default=5, ge=1)


class MannWhitneySettings(SpecModel):
    """Kayenta's NetflixACAJudge: per-interval points of each metric, a Mann-Whitney test at
    ``confidence`` with an effect ``tolerance``, and a score (percent of metrics passing) against
    ``pass_score`` and ``marginal_score``."""

    interval: Seconds = Field(default=60.0, gt=0)
    confidence: float = Field(default=0.98, gt=0.5, lt=1)
    tolerance: float = Field(default=0.25, ge=0)
    pass_score: float = Field(default=95.0, ge=0, le=100)
    marginal_score: float = Field(default=75.0, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered_scores(self) -> MannWhitneySettings:
        if self.marginal_score > self.pass_score:
            scores = f"marginalScore ({self.marginal_score:g}) must not be above passScore ({self.pass_score:g})"
            at = "marginalScore" if "marginal_score" in self.model_fields_set else "passScore"  # the one given
            raise problem_at("MannWhitneySettings", (at,), scores, self.marginal_score)
        return self


class Analysis(SpecModel):
    judge: Literal["sequential", "threshold", "mann_whitney"] = "sequential"
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="the promised false-rollback rate")
    metrics: list[Metric] = Field(min_length=1)
    threshold: ThresholdSettings = ThresholdSettings()
    mann_whitney: MannWhitneySettings = MannWhitneySettings()

    @model_validator(mode="after")
    def _unique_names(self) -> Analysis:
        names = [metric.name for metric in self.metrics]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            again = next(index for index, name in enumerate(names) if name in names[:index])  # the second of a name
            why = f"metric names must be unique; repeated: {', '.join(duplicates)} (set name:)"
            raise problem_at("Analysis", ("metrics", again), why, names[again])
        return self
