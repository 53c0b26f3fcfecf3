"""Telemetry: cumulative, mergeable sufficient statistics per rollout and variant.

Everything is a count or a histogram over fixed bucket edges, so the totals of many gateway
replicas are their element-wise sum, and a judge sees the same numbers however they were split.

>>> a, b = VariantTelemetry(), VariantTelemetry()
>>> a.observe(latency_ms=4.0); b.observe(latency_ms=6.0, error=True)
>>> total = a.merged(b)
>>> total.requests, total.errors, sum(total.latency_counts)
(2, 1, 2)
"""

from __future__ import annotations

import enum
from bisect import bisect_right
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from functools import reduce
from typing import Any

from modelcanary.domain.shadow import ShadowTelemetry


class Variant(enum.StrEnum):
    BASELINE = "baseline"
    CANDIDATE = "candidate"


def _geometric(low: float, high: float, ratio: float) -> tuple[float, ...]:
    edges = [low]
    while edges[-1] < high:
        edges.append(round(edges[-1] * ratio, 6))
    return tuple(edges)


# Latency bucket edges in milliseconds: 0.05 ms to ~2 min, each 10% wider than the last, so a
# quantile read from the buckets is within 10% of the exact one, and the tail is never clipped.
LATENCY_EDGES_MS = _geometric(0.05, 120_000.0, 1.1)
# Score bucket edges: buckets of 0.01 over [0, 1), then [1, inf); a decision threshold resolves to 0.01.
SCORE_EDGES = tuple(round(i / 100, 2) for i in range(1, 101))


def score_bucket(score: float) -> int:
    """Index of the score bucket; scores outside [0, 1] fall in the first or last one."""
    return bisect_right(SCORE_EDGES, score)


def _zeros(edges: tuple[float, ...]) -> list[int]:
    return [0] * (len(edges) + 1)


@dataclass
class VariantTelemetry:
    """One variant's cumulative counts. Bucket ``i`` of a histogram holds values in
    ``[edges[i-1], edges[i])``; the first and last buckets are open-ended."""

    requests: int = 0
    errors: int = 0
    # requests answered wholly from the prediction cache: no model was called, timed or could fail
    cached: int = 0
    cpu_ms: float = 0.0  # CPU time the model spent on the requests it was measured on
    # requests whose model CPU time was measured: those of models in the gateway's own process (a
    # remote or awaited model's CPU is spent elsewhere, and a metric source has none to give)
    cpu_requests: int = 0
    latency_counts: list[int] = field(default_factory=lambda: _zeros(LATENCY_EDGES_MS))
    score_counts: list[int] = field(default_factory=lambda: _zeros(SCORE_EDGES))
    # scores of labelled predictions, split by their ground-truth label
    positive_label_scores: list[int] = field(default_factory=lambda: _zeros(SCORE_EDGES))
    negative_label_scores: list[int] = field(default_factory=lambda: _zeros(SCORE_EDGES))
    # labels of predictions that carried no score (an output that is not a probability: a class
    # name, three or more classes): counted, so none is lost unseen, but no quality measure reads them
    unscored_labels: int = 0
    # times a gateway's circuit breaker took this variant out, and why (of several gateways' reasons,
    # the least in string order: merging in any order, from rows read in any order, names the same one)
    breaker_trips: int = 0
    breaker_reason: str = ""
    # rows answered from the prediction cache, and rows looked up there in vain
    cache_hits: int = 0
    cache_misses: int = 0
    # distinct sticky keys (users) the router sent here, each counted by a gateway the first time it
    # saw the key at the weight it routes at (gateway/keys.py); and how many gateways counted keys
    # here (each gateway's counts say 1; summed over gateways, as everything else): the sample-ratio
    # check under sticky routing tests the keys' split, a key counted once by each gateway it reached
    keys: int = 0
    key_gateways: int = 0
    # the same counts per segment of the traffic (named by the spec's segment rules); the totals
    # above hold every segment (the judge judges those a candidate may see: ``within``)
    segments: dict[str, VariantTelemetry] = field(default_factory=dict)
    # the candidate's shadow lane, paired with the baseline on the same rows; None without one
    shadow: ShadowTelemetry | None = None

    def observe(self, *, latency_ms: float | None, error: bool = False, cpu_ms: float | None = None) -> None:
        """One request, however many rows it held; ``cpu_ms`` when the model's CPU time was measured.
        ``latency_ms`` None: answered wholly from the prediction cache, so no model was timed or
        could fail (``called``)."""
        self.requests += 1
        if cpu_ms is not None:
            self.cpu_ms += cpu_ms
            self.cpu_requests += 1
        if latency_ms is not None:
            self.latency_counts[bisect_right(LATENCY_EDGES_MS, latency_ms)] += 1
        else:
            self.cached += 1
        if error:
            self.errors += 1

    def observe_score(self, score: float) -> int:
        """One row's prediction score; its bucket, to remember until the label arrives."""
        bucket = score_bucket(score)
        self.score_counts[bucket] += 1
        return bucket

    def observe_label(self, *, bucket: int, label: int) -> None:
        (self.positive_label_scores if label else self.negative_label_scores)[bucket] += 1

    @property
    def called(self) -> int:
        """Requests a model answered or failed, and was timed on: what the latency metric compares
        the models on. Not ``requests``: a variant's cache answers as often as its share of repeated
        inputs, which differs between the variants (the larger share sees more repeats), so counting
        cached answers as fast ones made identical models look apart (docs/gateway.md)."""
        return self.requests - self.cached

    @property
    def cache_hit_rate(self) -> float | None:
        """Share of rows looked up in the prediction cache that were found there."""
        looked_up = self.cache_hits + self.cache_misses
        return self.cache_hits / looked_up if looked_up else None

    @property
    def labels(self) -> int:
        return sum(self.positive_label_scores) + sum(self.negative_label_scores)

    def summary(self, threshold: float = 0.5) -> dict[str, Any]:
        """Requests, errors, labels, and the error rate and accuracy (scores >= ``threshold`` read
        as positive) where there is data for them: what a per-segment table shows.

        >>> counts = VariantTelemetry()
        >>> counts.observe(latency_ms=1.0); counts.observe(latency_ms=1.0, error=True)
        >>> counts.observe_label(bucket=score_bucket(0.9), label=1)
        >>> counts.summary()
        {'requests': 2, 'errors': 1, 'labels': 1, 'error_rate': 0.5, 'accuracy': 1.0}
        """
        cut = score_bucket(threshold)
        labels = self.labels
        correct = sum(self.positive_label_scores[cut:]) + sum(self.negative_label_scores[:cut])
        return {
            "requests": self.requests,
            "errors": self.errors,
            "labels": labels,
            "error_rate": self.errors / self.requests if self.requests else None,
            "accuracy": correct / labels if labels else None,
        }

    def merged(self, other: VariantTelemetry) -> VariantTelemetry:
        return VariantTelemetry(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            cached=self.cached + other.cached,
            cpu_ms=self.cpu_ms + other.cpu_ms,
            cpu_requests=self.cpu_requests + other.cpu_requests,
            latency_counts=_add(self.latency_counts, other.latency_counts),
            score_counts=_add(self.score_counts, other.score_counts),
            positive_label_scores=_add(self.positive_label_scores, other.positive_label_scores),
            negative_label_scores=_add(self.negative_label_scores, other.negative_label_scores),
            unscored_labels=self.unscored_labels + other.unscored_labels,
            breaker_trips=self.breaker_trips + other.breaker_trips,
            breaker_reason=min(filter(None, (self.breaker_reason, other.breaker_reason)), default=""),
            cache_hits=self.cache_hits + other.cache_hits,
            cache_misses=self.cache_misses + other.cache_misses,
            keys=self.keys + other.keys,
            key_gateways=self.key_gateways + other.key_gateways,
            shadow=(self.shadow or ShadowTelemetry()).merged(other.shadow or ShadowTelemetry())
            if self.shadow is not None or other.shadow is not None
            else None,
            segments={
                name: self.segments[name].merged(other.segments[name])
                if name in self.segments and name in other.segments
                else VariantTelemetry.from_json((self.segments.get(name) or other.segments[name]).to_json())
                for name in self.segments.keys() | other.segments.keys()
            },
        )

    def within(self, names: Collection[str]) -> VariantTelemetry | None:
        """The counts of the segments ``names`` alone; None when the segments do not hold every
        request (counts without a per-segment breakdown, as a metric source's). What is not counted
        per segment is kept whole: breaker trips, cache lookups, the gateways that counted keys; the
        shadow lane is its own segments' copies (``ShadowTelemetry.within``).

        >>> counts = VariantTelemetry()
        >>> for segment, error in (("eu", True), ("eu", False), ("other", False)):
        ...     for part in (counts, counts.segment(segment)):
        ...         part.observe(latency_ms=1.0, error=error)
        >>> eu = counts.within(["eu"])
        >>> eu.requests, eu.errors, VariantTelemetry(requests=1).within(["eu"])
        (2, 1, None)
        """
        if sum(part.requests for part in self.segments.values()) != self.requests:
            return None
        parts = [self.segments[name] for name in names if name in self.segments]
        return replace(
            reduce(VariantTelemetry.merged, parts) if parts else VariantTelemetry(),
            breaker_trips=self.breaker_trips,
            breaker_reason=self.breaker_reason,
            cache_hits=self.cache_hits,
            cache_misses=self.cache_misses,
            key_gateways=self.key_gateways,
            shadow=self.shadow.within(names) if self.shadow is not None else None,
        )

    def checked(self) -> VariantTelemetry:
        """Itself, if its histograms are over this version's bucket edges (``ValueError`` if not,
        as ``merged`` would raise)."""
        for counts, edges in (
            (self.latency_counts, LATENCY_EDGES_MS),
            (self.score_counts, SCORE_EDGES),
            (self.positive_label_scores, SCORE_EDGES),
            (self.negative_label_scores, SCORE_EDGES),
        ):
            if len(counts) != len(edges) + 1:
                raise ValueError("histograms over different bucket edges cannot be merged")
        return self

    def segment(self, name: str) -> VariantTelemetry:
        """The counts of one segment, made on first use."""
        counts = self.segments.get(name)
        if counts is None:
            counts = self.segments[name] = VariantTelemetry()
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "cpu_ms": self.cpu_ms,
            "cpu_requests": self.cpu_requests,
            "latency_counts": self.latency_counts,
            "score_counts": self.score_counts,
            "positive_label_scores": self.positive_label_scores,
            "negative_label_scores": self.negative_label_scores,
            "breaker_trips": self.breaker_trips,
            "breaker_reason": self.breaker_reason,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            **({"cached": self.cached} if self.cached else {}),
            **({"unscored_labels": self.unscored_labels} if self.unscored_labels else {}),
            **({"keys": self.keys, "key_gateways": self.key_gateways} if self.keys or self.key_gateways else {}),
            **(
                {"segments": {name: counts.to_json() for name, counts in self.segments.items()}}
                if self.segments
                else {}
            ),
            **({"shadow": self.shadow.to_json()} if self.shadow is not None else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VariantTelemetry:
        # copy the lists: a snapshot must not change with the live counters it came from
        return cls(
            requests=int(data["requests"]),
            errors=int(data["errors"]),
            cached=int(data.get("cached", 0)),  # not counted by earlier versions
            cpu_ms=float(data.get("cpu_ms", 0.0)),
            cpu_requests=int(data.get("cpu_requests", 0)),  # not counted by earlier versions: none measured
            latency_counts=list(data["latency_counts"]),
            score_counts=list(data["score_counts"]),
            positive_label_scores=list(data["positive_label_scores"]),
            negative_label_scores=list(data["negative_label_scores"]),
            unscored_labels=int(data.get("unscored_labels", 0)),
            breaker_trips=int(data.get("breaker_trips", 0)),
            breaker_reason=str(data.get("breaker_reason", "")),
            cache_hits=int(data.get("cache_hits", 0)),
            cache_misses=int(data.get("cache_misses", 0)),
            keys=int(data.get("keys", 0)),  # not counted by earlier versions
            key_gateways=int(data.get("key_gateways", 0)),
            segments={str(name): cls.from_json(counts) for name, counts in data.get("segments", {}).items()},
            shadow=ShadowTelemetry.from_json(data["shadow"]) if data.get("shadow") is not None else None,
        )

    def shadow_lane(self) -> ShadowTelemetry:
        """The shadow lane's counts, made on first use."""
        if self.shadow is None:
            self.shadow = ShadowTelemetry()
        return self.shadow


def latency_counts_from_buckets(buckets: list[tuple[float, float]]) -> list[int]:
    """Our latency histogram from a Prometheus-style one: ``(le_ms, cumulative count)`` pairs, the
    last ``le`` possibly infinite.

    Each Prometheus bucket says only that its values lie in ``(previous le, le]``, so they are all
    put in our bucket holding ``le``: a value is never read as faster than it may have been, and
    resolution is the coarser of the two histograms (Prometheus' default buckets are 2-2.5x apart,
    ours 10%). Values above the last finite ``le`` are known only to exceed it and go in the bucket
    just above it.

    >>> counts = latency_counts_from_buckets([(5.0, 3), (10.0, 3), (float("inf"), 4)])
    >>> sum(counts), counts[bisect_right(LATENCY_EDGES_MS, 5.0)], counts[bisect_right(LATENCY_EDGES_MS, 10.0) + 1]
    (4, 3, 1)
    """
    counts = _zeros(LATENCY_EDGES_MS)
    previous, last_index = 0.0, 0
    for le, cumulative in sorted(buckets):
        in_bucket = round(cumulative - previous)
        if in_bucket < 0:
            raise ValueError(f"histogram buckets must not decrease with le; bucket le={le:g} ms has fewer")
        index = min(last_index + 1, len(LATENCY_EDGES_MS)) if le == float("inf") else bisect_right(LATENCY_EDGES_MS, le)
        counts[index] += in_bucket
        previous, last_index = cumulative, index
    return counts


def _add(left: list[int], right: list[int]) -> list[int]:
    if len(left) != len(right):
        raise ValueError("histograms over different bucket edges cannot be merged")
    return [a + b for a, b in zip(left, right, strict=True)]


@dataclass
class RolloutTelemetry:
    """Both variants' totals for one rollout."""

    baseline: VariantTelemetry = field(default_factory=VariantTelemetry)
    candidate: VariantTelemetry = field(default_factory=VariantTelemetry)

    def of(self, variant: Variant) -> VariantTelemetry:
        return self.baseline if variant is Variant.BASELINE else self.candidate

    def by_segment(self) -> dict[str, RolloutTelemetry]:
        """Both variants' counts in each segment either of them saw, in name order."""
        names = sorted(self.baseline.segments.keys() | self.candidate.segments.keys())
        return {
            name: RolloutTelemetry(
                baseline=self.baseline.segments.get(name) or VariantTelemetry(),
                candidate=self.candidate.segments.get(name) or VariantTelemetry(),
            )
            for name in names
        }
