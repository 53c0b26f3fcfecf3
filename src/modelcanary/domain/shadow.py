"""The shadow lane's telemetry: the candidate's predictions on copies of requests the baseline
served, paired with the baseline's on the same rows. Counts and fixed-edge histograms, so the
totals of many gateways are their sums, like every other telemetry.

>>> shadow = ShadowTelemetry()
>>> shadow.pair(baseline=0.2, candidate=0.7); shadow.pair(baseline=0.6, candidate=0.65)
>>> shadow.pairs, shadow.discordant, round(shadow.summary()["mean_score_difference"], 3)
(2, 1, 0.275)
>>> shadow.label(baseline=0.2, candidate=0.7, label=1)
>>> shadow.summary()["paired_labels"]
{'both_right': 0, 'baseline_only': 0, 'candidate_only': 1, 'both_wrong': 0}
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

DECISION_THRESHOLD = 0.5  # a score at or above it is a positive decision
# candidate score minus baseline score, per row: buckets of 0.02 over (-1, 1)
SCORE_DIFF_EDGES = tuple(round(-1 + i * 0.02, 2) for i in range(1, 100))
_CENTRES = [-0.99 + 0.02 * i for i in range(len(SCORE_DIFF_EDGES) + 1)]
_PAIRED = ("both_right", "baseline_only", "candidate_only", "both_wrong")
_PAIRED_INDEX = {(True, True): 0, (True, False): 1, (False, True): 2, (False, False): 3}


def _zeros() -> list[int]:
    return [0] * (len(SCORE_DIFF_EDGES) + 1)


@dataclass
class ShadowTelemetry:
    requests: int = 0  # shadow predictions made (one per request copied)
    errors: int = 0  # of those, failed
    shed: int = 0  # copies dropped because the shadow queue was full
    pairs: int = 0  # rows scored by both models
    discordant: int = 0  # rows on which the two decisions differ
    score_diff_counts: list[int] = field(default_factory=_zeros)
    # the differences' sum, for their mean: read off the buckets' centres, a difference of exactly 0
    # (identical models) counted as +0.01
    score_diff_sum: float = 0.0
    # labelled rows: both right, only the baseline right, only the candidate right, both wrong
    paired_labels: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    segments: dict[str, ShadowTelemetry] = field(default_factory=dict)

    def pair(self, *, baseline: float, candidate: float) -> None:
        self.pairs += 1
        if (baseline >= DECISION_THRESHOLD) != (candidate >= DECISION_THRESHOLD):
            self.discordant += 1
        difference = candidate - baseline
        self.score_diff_counts[bisect_right(SCORE_DIFF_EDGES, difference)] += 1
        self.score_diff_sum += difference

    def label(self, *, baseline: float, candidate: float, label: int) -> None:
        base_right = (baseline >= DECISION_THRESHOLD) == bool(label)
        cand_right = (candidate >= DECISION_THRESHOLD) == bool(label)
        self.paired_labels[_PAIRED_INDEX[(base_right, cand_right)]] += 1

    def segment(self, name: str) -> ShadowTelemetry:
        counts = self.segments.get(name)
        if counts is None:
            counts = self.segments[name] = ShadowTelemetry()
        return counts

    def within(self, names: Collection[str]) -> ShadowTelemetry:
        """The lane's counts for the requests of segments ``names`` alone, as a variant's ``within``
        (so a judge compares it with the baseline's requests of the same segments); itself when its
        segments do not hold every copy.

        >>> lane = ShadowTelemetry()
        >>> for name in ("eu", "eu", "us"):
        ...     for part in (lane, lane.segment(name)):
        ...         part.requests += 1
        >>> lane.within(["eu"]).requests, lane.within(["asia"]).requests
        (2, 0)
        """
        if sum(part.requests for part in self.segments.values()) != self.requests:
            return self
        return reduce(
            ShadowTelemetry.merged, [self.segments[n] for n in names if n in self.segments], ShadowTelemetry()
        )

    def merged(self, other: ShadowTelemetry) -> ShadowTelemetry:
        return ShadowTelemetry(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            shed=self.shed + other.shed,
            pairs=self.pairs + other.pairs,
            discordant=self.discordant + other.discordant,
            score_diff_counts=[a + b for a, b in zip(self.score_diff_counts, other.score_diff_counts, strict=True)],
            score_diff_sum=self.score_diff_sum + other.score_diff_sum,
            paired_labels=[a + b for a, b in zip(self.paired_labels, other.paired_labels, strict=True)],
            segments={
                name: (self.segments.get(name) or ShadowTelemetry()).merged(
                    other.segments.get(name) or ShadowTelemetry()
                )
                for name in self.segments.keys() | other.segments.keys()
            },
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "shed": self.shed,
            "pairs": self.pairs,
            "discordant": self.discordant,
            "score_diff_counts": self.score_diff_counts,
            "score_diff_sum": self.score_diff_sum,
            "paired_labels": self.paired_labels,
        }
        if self.segments:
            data["segments"] = {name: counts.to_json() for name, counts in self.segments.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShadowTelemetry:
        return cls(
            requests=int(data["requests"]),
            errors=int(data["errors"]),
            shed=int(data["shed"]),
            pairs=int(data["pairs"]),
            discordant=int(data["discordant"]),
            score_diff_counts=list(data["score_diff_counts"]),
            # rows written before the sum was kept: the buckets' centres, as their mean was read then
            score_diff_sum=float(data["score_diff_sum"])
            if "score_diff_sum" in data
            else sum(c * n for c, n in zip(_CENTRES, data["score_diff_counts"], strict=True)),
            paired_labels=list(data["paired_labels"]),
            segments={str(name): cls.from_json(counts) for name, counts in data.get("segments", {}).items()},
        )

    def summary(self) -> dict[str, Any]:
        """Agreement with the baseline and the paired comparison on labelled rows, for reports."""
        labelled = sum(self.paired_labels)
        both, base_only, cand_only, _ = self.paired_labels
        mean_diff = self.score_diff_sum / self.pairs if self.pairs else None
        return {
            "requests": self.requests,
            "errors": self.errors,
            "shed": self.shed,
            "pairs": self.pairs,
            "discordant_rate": self.discordant / self.pairs if self.pairs else None,
            "mean_score_difference": mean_diff,
            "labelled_pairs": labelled,
            "paired_labels": dict(zip(_PAIRED, self.paired_labels, strict=True)),
            "baseline_accuracy": (both + base_only) / labelled if labelled else None,
            "candidate_accuracy": (both + cand_only) / labelled if labelled else None,
        }
