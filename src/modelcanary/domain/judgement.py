"""What a judge says: one verdict per metric, with the numbers behind it, and the worst of them."""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from modelcanary.domain.telemetry import RolloutTelemetry


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
    unit: str = ""  # of baseline, candidate, limit and bound
    e_value: float | None = None  # evidence against "the candidate is within its margin"
    bound: float | None = None  # anytime-valid bound on the candidate, compared with ``limit``

    @classmethod
    def note(cls, name: str, telemetry: RolloutTelemetry, reason: str) -> MetricJudgement:
        """A check that holds nothing back, but says why something was not done (a pass, with the
        requests it concerns)."""
        return cls(
            name=name,
            kind=name,
            verdict=Verdict.PASS,
            baseline=None,
            candidate=None,
            limit=None,
            baseline_samples=telemetry.baseline.requests,
            candidate_samples=telemetry.candidate.requests,
            reason=reason,
        )


class Judgement(BaseModel):
    model_config = ConfigDict(frozen=True)

    judge: str
    metrics: tuple[MetricJudgement, ...]
    e_value: float | None = None  # the weighted mean of the metrics' e-values
    threshold: float | None = None  # the e-value at which the judge rolls back (1/alpha)
    hold: str | None = None  # why no step may advance now, whatever the metrics say (sample-ratio mismatch)

    @property
    def verdict(self) -> Verdict:
        """The worst metric verdict; a judgement with no metrics has no data."""
        if not self.metrics:
            return Verdict.NO_DATA
        worst = max((metric.verdict for metric in self.metrics), key=lambda verdict: verdict.severity)
        return Verdict.INCONCLUSIVE if self.hold and worst is Verdict.PASS else worst

    def failing(self) -> list[MetricJudgement]:
        return [metric for metric in self.metrics if metric.verdict is Verdict.FAIL]

    def summary(self) -> str:
        parts = [f"{metric.name}: {metric.reason}" for metric in self.metrics]
        return "; ".join([f"hold: {self.hold}", *parts] if self.hold else parts)


@dataclass(frozen=True)
class Look:
    """What a judge sees at one look: the rollout's cumulative telemetry, and the candidate's
    configured share of traffic (percent) since the previous look."""

    at: float  # seconds on the rollout's clock
    weight: float
    telemetry: RolloutTelemetry
    # where in a judge's periodic work (the rank test's intervals) this rollout falls, in [0, 1):
    # rollouts started together then do not all do that work in the same tick (``phase_of``)
    phase: float = 0.0
    # the rollout has a shadow lane (its spec's ``traffic.shadow``), so the candidate's shadow
    # predictions are evidence too, from the first look on (a judge's weights never change)
    shadow: bool = False
    # the router splits keys, not requests (its spec's ``traffic.stickyKey``): requests of one key all
    # go to one variant, so the request share is no binomial at the weight (the sample-ratio check tests
    # the share of keys)
    sticky: bool = False


def phase_of(rollout_id: str) -> float:
    """A rollout's ``Look.phase``: fixed by its id, spread evenly over rollouts."""
    return zlib.crc32(rollout_id.encode()) / 2**32


Memory = dict[str, Any]
"""What a judge carries from one look to the next (JSON-serialisable; ``{}`` at the first look).
Saved with the rollout's state, so a verdict can be replayed from the store."""
