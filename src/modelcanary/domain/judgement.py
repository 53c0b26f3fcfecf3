"""What a judge says: one verdict per metric, with the numbers behind it, and the worst of them."""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict


class Verdict(enum.StrEnum):
    PASS = "pass"
    NO_DATA = "no_data"  # too few samples to say anything: never a pass
    INCONCLUSIVE = "inconclusive"
    FAIL = "fail"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    def is_worse(self, other: Verdict) -> bool:
        """
        >>> Verdict.FAIL.is_worse(Verdict.PASS), Verdict.NO_DATA.is_worse(Verdict.INCONCLUSIVE)
        (True, False)
        """
        return self.severity > other.severity


_SEVERITY = {Verdict.PASS: 0, Verdict.NO_DATA: 1, Verdict.INCONCLUSIVE: 2, Verdict.FAIL: 3}


class MetricJudgement(BaseModel):
    """One metric's verdict and why: both estimates, the limit the candidate must stay within."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str
    verdict: Verdict
    baseline: float | None
    candidate: float | None
    limit: float | None
    baseline_samples: int
    candidate_samples: int
    reason: str


class Judgement(BaseModel):
    model_config = ConfigDict(frozen=True)

    judge: str
    metrics: tuple[MetricJudgement, ...]

    @property
    def verdict(self) -> Verdict:
        """The worst metric verdict; a judgement with no metrics has no data."""
        if not self.metrics:
            return Verdict.NO_DATA
        return max((metric.verdict for metric in self.metrics), key=lambda verdict: verdict.severity)

    def failing(self) -> list[MetricJudgement]:
        return [metric for metric in self.metrics if metric.verdict is Verdict.FAIL]

    def summary(self) -> str:
        return "; ".join(f"{metric.name}: {metric.reason}" for metric in self.metrics)
