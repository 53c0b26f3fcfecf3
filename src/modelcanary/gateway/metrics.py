"""The gateway's Prometheus series, served at ``/metrics`` in the text exposition format.

The series of one (endpoint, variant, lane) are bound once, when a routing table is applied, and
kept on the endpoint's ``Serving``: a request adds to plain counters and histogram buckets of its
bound series (no ``.labels()`` lookup, no lock: everything runs on the event loop thread), and a
scrape turns them into metric families through a prometheus_client collector. The set of series is
bounded by the endpoints served, never by what requests carry. prometheus_client is imported only
at a scrape, so ``import modelcanary`` stays light.

Every name below is what ``deploy/grafana/modelcanary.json`` charts; a test checks that each name
the dashboard uses is exported by a live gateway.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from modelcanary.domain.telemetry import Variant

PREFIX = "modelcanary"
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
LIVE, SHADOW = "live", "shadow"


class Count:
    """A counter or a gauge: a plain number, changed on the event loop thread only."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value


class Buckets:
    """A histogram over fixed upper bounds (Prometheus' ``le``), plus the sum of what it saw.

    >>> latency = Buckets((0.1, 1.0))
    >>> latency.observe(0.1); latency.observe(0.5); latency.observe(7.0)
    >>> latency.counts, latency.sum
    ([1, 1, 1], 7.6)
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        if value != value:  # NaN: in no bucket (bisect put it in the lowest) and not in the sum, for good
            return
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        total, out = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, float(total)))
        return out


@dataclass(frozen=True, slots=True)
class Series:
    """One (endpoint, variant, lane)'s bound children."""

    endpoint: str
    requests: Count
    errors: Count
    latency: Buckets
    scores: Buckets
    positive_labels: Count
    negative_labels: Count
    cache_hits: Count
    cache_misses: Count

    def observe(self, latency_ms: float | None, scores: Sequence[float | None]) -> None:
        """One request answered; ``latency_ms`` None when no model answered it (all from the cache)."""
        self.requests.inc()
        if latency_ms is not None:
            self.latency.observe(latency_ms / 1e3)
        observe = self.scores.observe
        for score in scores:
            if score is not None:
                observe(score)

    def failed(self, latency_ms: float) -> None:
        self.requests.inc()
        self.errors.inc()
        self.latency.observe(latency_ms / 1e3)

    def label(self, label: int) -> None:
        (self.positive_labels if label else self.negative_labels).inc()


@dataclass(frozen=True, slots=True)
class EndpointSeries:
    """One endpoint's children: its live lane per variant, and its candidate's weight and breaker."""

    baseline: Series
    candidate: Series
    shadow: Series  # the candidate's shadow lane
    shed: Count
    weight: Count
    breaker_open: Count
    breaker_trips: Count
    abandoned: Count

    def of(self, variant: Variant) -> Series:
        return self.candidate if variant is Variant.CANDIDATE else self.baseline


_LANE = ("endpoint", "variant", "lane")
RELAY_OUTCOMES = ("sent", "joined", "unmatched", "expired")
# (name, help, kind) of every family; kind: counter or gauge per endpoint, or per lane
_PER_LANE = (
    ("requests", "Prediction requests served", "counter"),
    ("errors", "Prediction requests whose model failed", "counter"),
    ("predict_latency_seconds", "Time the variant's model took to answer (or to fail)", "histogram"),
    ("prediction_score", "Positive-class score of each predicted row", "histogram"),
    ("cache_hits", "Rows answered from the prediction cache", "counter"),
    ("cache_misses", "Rows looked up in the prediction cache and not found", "counter"),
)
_PER_ENDPOINT = (
    ("candidate_weight_percent", "Share of eligible traffic routed to the candidate", "gauge", "weight"),
    ("circuit_breaker_open", "1 while this gateway's breaker keeps the candidate out", "gauge", "breaker_open"),
    ("circuit_breaker_trips", "Times this gateway's breaker took a candidate out", "counter", "breaker_trips"),
    ("candidate_abandoned", "Candidate calls abandoned at their deadline", "counter", "abandoned"),
    ("shadow_shed", "Request copies the shadow lane dropped because its queue was full", "counter", "shed"),
)
# the recorder's counts of what it could not keep or took over, each its attribute's name
_RECORDER_COUNTS = (
    (
        "forgotten_predictions",
        "Predictions this gateway stopped holding before their label came (it holds a bounded number)",
    ),
    (
        "labels_without_rollout",
        "Labels of predictions served with no rollout on their endpoint: in no rollout's telemetry",
    ),
    (
        "adopted_predictions",
        "Predictions and waiting labels this gateway took over from stopped gateways, to join their labels",
    ),
    (
        "labels_counted_unripe",
        "Labels counted before their prediction was matureAfter old: more were waiting than this gateway holds",
    ),
)
_FIELDS = {
    "requests": "requests",
    "errors": "errors",
    "predict_latency_seconds": "latency",
    "prediction_score": "scores",
    "cache_hits": "cache_hits",
    "cache_misses": "cache_misses",
}


def _lane(endpoint: str) -> Series:
    return Series(
        endpoint=endpoint,
        requests=Count(),
        errors=Count(),
        latency=Buckets(LATENCY_BUCKETS_S),
        scores=Buckets(SCORE_BUCKETS),
        positive_labels=Count(),
        negative_labels=Count(),
        cache_hits=Count(),
        cache_misses=Count(),
    )


class Metrics:
    """One gateway's series, and the prometheus_client collector that exposes them. A registry of
    its own per gateway: two gateways in one process do not mix their counts."""

    def __init__(self, recorder: Any = None) -> None:
        self._bound: dict[str, EndpointSeries] = {}
        self._registry: Any = None
        # labels for another gateway's predictions, by what became of them (see ``Gateway.feedback``)
        self.relayed_labels = {outcome: Count() for outcome in RELAY_OUTCOMES}
        self._recorder = recorder  # its counts of predictions and labels it could not keep

    def endpoint(self, endpoint: str) -> EndpointSeries:
        """The endpoint's series, made on first use and kept."""
        bound = self._bound.get(endpoint)
        if bound is None:
            bound = self._bound[endpoint] = EndpointSeries(
                baseline=_lane(endpoint),
                candidate=_lane(endpoint),
                shadow=_lane(endpoint),
                shed=Count(),
                weight=Count(),
                breaker_open=Count(),
                breaker_trips=Count(),
                abandoned=Count(),
            )
        return bound

    def _lanes(self) -> Iterator[tuple[tuple[str, str, str], Series]]:
        for endpoint, bound in self._bound.items():
            yield (endpoint, Variant.BASELINE.value, LIVE), bound.baseline
            yield (endpoint, Variant.CANDIDATE.value, LIVE), bound.candidate
            yield (endpoint, Variant.CANDIDATE.value, SHADOW), bound.shadow

    def collect(self) -> Iterator[Any]:
        """The metric families, for prometheus_client (called at a scrape, on the loop thread)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        for name, text, kind in _PER_LANE:
            field = _FIELDS[name]
            if kind == "histogram":
                histogram = HistogramMetricFamily(f"{PREFIX}_{name}", text, labels=_LANE)
                for values, series in self._lanes():
                    buckets: Buckets = getattr(series, field)
                    histogram.add_metric(list(values), buckets.cumulative(), buckets.sum)
                yield histogram
            else:
                counter = CounterMetricFamily(f"{PREFIX}_{name}", text, labels=_LANE)
                for values, series in self._lanes():
                    counter.add_metric(list(values), getattr(series, field).value)
                yield counter
        labels = CounterMetricFamily(
            f"{PREFIX}_labels", "Ground-truth labels joined to predictions", labels=(*_LANE, "label")
        )
        for values, series in self._lanes():
            labels.add_metric([*values, "1"], series.positive_labels.value)
            labels.add_metric([*values, "0"], series.negative_labels.value)
        yield labels
        for name, text, kind, field in _PER_ENDPOINT:
            family = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(
                f"{PREFIX}_{name}", text, labels=("endpoint",)
            )
            for endpoint, bound in self._bound.items():
                family.add_metric([endpoint], getattr(bound, field).value)
            yield family
        relayed = CounterMetricFamily(
            f"{PREFIX}_relayed_labels",
            "Labels for another gateway's predictions: sent on through the store by this gateway, or "
            "taken by it for its own and joined, unmatched (prediction forgotten or labelled), or expired untaken",
            labels=("outcome",),
        )
        for outcome, count in self.relayed_labels.items():
            relayed.add_metric([outcome], count.value)
        yield relayed
        if self._recorder is not None:
            for name, text in _RECORDER_COUNTS:
                yield CounterMetricFamily(f"{PREFIX}_{name}", text, value=getattr(self._recorder, name))

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every series, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self._registry is None:
            self._registry = CollectorRegistry()
            self._registry.register(self)
        return generate_latest(self._registry), CONTENT_TYPE_LATEST
