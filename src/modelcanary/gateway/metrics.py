"""The gateway's Prometheus series, served at ``/metrics`` in the text exposition format.

Label children are bound once per (endpoint, variant, lane), when a routing table is applied, and
kept on the endpoint's ``Serving``: a request increments bound children (about 1.2 µs) instead of
looking them up with ``.labels()`` (about 3 µs; see MEASUREMENTS.md). The set of children is bounded
by the endpoints served, never by what requests carry. prometheus_client is imported here only,
when a gateway is built, so ``import modelcanary`` stays light.

Every name below is what ``deploy/grafana/modelcanary.json`` charts; a test checks that each name
the dashboard uses is exported by a live gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelcanary.domain.telemetry import Variant

PREFIX = "modelcanary"
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
LIVE, SHADOW = "live", "shadow"


@dataclass(frozen=True, slots=True)
class Series:
    """One (endpoint, variant, lane)'s bound children."""

    requests: Any
    errors: Any
    latency: Any
    scores: Any
    positive_labels: Any
    negative_labels: Any
    cache_hits: Any
    cache_misses: Any

    def observe(self, latency_s: float, scores: Sequence[float | None]) -> None:
        self.requests.inc()
        self.latency.observe(latency_s)
        observe = self.scores.observe
        for score in scores:
            if score is not None:
                observe(score)

    def failed(self, latency_s: float) -> None:
        self.requests.inc()
        self.errors.inc()
        self.latency.observe(latency_s)

    def label(self, label: int) -> None:
        (self.positive_labels if label else self.negative_labels).inc()


@dataclass(frozen=True, slots=True)
class EndpointSeries:
    """One endpoint's children: its live lane per variant, and its candidate's weight and breaker."""

    baseline: Series
    candidate: Series
    weight: Any
    shadow: Series  # the candidate's shadow lane
    shed: Any
    breaker_open: Any
    breaker_trips: Any
    abandoned: Any

    def of(self, variant: Variant) -> Series:
        return self.candidate if variant is Variant.CANDIDATE else self.baseline


class Metrics:
    """A registry of its own per gateway (two gateways in one process do not mix their counts)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        lane = ["endpoint", "variant", "lane"]
        registry = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "Prediction requests served", lane, registry=registry)
        self.errors = Counter(f"{PREFIX}_errors", "Prediction requests whose model failed", lane, registry=registry)
        self.latency = Histogram(
            f"{PREFIX}_predict_latency_seconds",
            "Time the variant's model took to answer (or to fail)",
            lane,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.scores = Histogram(
            f"{PREFIX}_prediction_score",
            "Positive-class score of each predicted row",
            lane,
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self.labels = Counter(
            f"{PREFIX}_labels", "Ground-truth labels joined to predictions", [*lane, "label"], registry=registry
        )
        self.weight = Gauge(
            f"{PREFIX}_candidate_weight_percent",
            "Share of eligible traffic routed to the candidate",
            ["endpoint"],
            registry=registry,
        )
        self.breaker_open = Gauge(
            f"{PREFIX}_circuit_breaker_open",
            "1 while this gateway's breaker keeps the candidate out",
            ["endpoint"],
            registry=registry,
        )
        self.breaker_trips = Counter(
            f"{PREFIX}_circuit_breaker_trips",
            "Times this gateway's breaker took a candidate out",
            ["endpoint"],
            registry=registry,
        )
        self.abandoned = Counter(
            f"{PREFIX}_candidate_abandoned",
            "Candidate calls abandoned at their deadline",
            ["endpoint"],
            registry=registry,
        )
        self.cache_hits = Counter(
            f"{PREFIX}_cache_hits", "Rows answered from the prediction cache", lane, registry=registry
        )
        self.cache_misses = Counter(
            f"{PREFIX}_cache_misses", "Rows looked up in the prediction cache and not found", lane, registry=registry
        )
        self.shed = Counter(
            f"{PREFIX}_shadow_shed",
            "Request copies the shadow lane dropped because its queue was full",
            ["endpoint"],
            registry=registry,
        )
        self._bound: dict[str, EndpointSeries] = {}

    def _lane(self, endpoint: str, variant: Variant, lane: str) -> Series:
        values = (endpoint, variant.value, lane)
        return Series(
            requests=self.requests.labels(*values),
            errors=self.errors.labels(*values),
            latency=self.latency.labels(*values),
            scores=self.scores.labels(*values),
            positive_labels=self.labels.labels(*values, "1"),
            negative_labels=self.labels.labels(*values, "0"),
            cache_hits=self.cache_hits.labels(*values),
            cache_misses=self.cache_misses.labels(*values),
        )

    def endpoint(self, endpoint: str) -> EndpointSeries:
        """The endpoint's children, bound on first use and kept."""
        bound = self._bound.get(endpoint)
        if bound is None:
            bound = self._bound[endpoint] = EndpointSeries(
                baseline=self._lane(endpoint, Variant.BASELINE, LIVE),
                candidate=self._lane(endpoint, Variant.CANDIDATE, LIVE),
                shadow=self._lane(endpoint, Variant.CANDIDATE, SHADOW),
                shed=self.shed.labels(endpoint),
                weight=self.weight.labels(endpoint),
                breaker_open=self.breaker_open.labels(endpoint),
                breaker_trips=self.breaker_trips.labels(endpoint),
                abandoned=self.abandoned.labels(endpoint),
            )
        return bound

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every series, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
