"""What the gateway serves: each endpoint's route with its models loaded, and where routes come from."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from modelcanary.adapters.backends.batching import BatchingModel, BatchSettings
from modelcanary.domain.state import ModelVersion, Route
from modelcanary.domain.telemetry import Variant
from modelcanary.domain.traffic import Batching
from modelcanary.gateway.cache import PredictionCache, cache_for
from modelcanary.gateway.calls import M, with_params
from modelcanary.gateway.faults import Guard
from modelcanary.gateway.keys import SeenKeys
from modelcanary.gateway.metrics import EndpointSeries
from modelcanary.gateway.segments import Segmenter
from modelcanary.ports import Model, RouteSource


@dataclass(frozen=True, slots=True)
class Serving:
    """One endpoint's route with its models loaded: what a request needs, swapped in whole."""

    route: Route
    baseline: Model
    candidate: Model | None
    series: EndpointSeries  # its Prometheus children, bound once
    baseline_cache: PredictionCache | None = None
    candidate_cache: PredictionCache | None = None
    segmenter: Segmenter = field(default_factory=Segmenter)  # its segment rules, compiled
    guard: Guard = field(default_factory=lambda: Guard(None))  # kept across refreshes of the same rollout
    keys: SeenKeys = field(default_factory=SeenKeys)  # kept across refreshes of the same rollout and weight
    params: Any = None  # one request's inference parameters as it sent them (``with_params``)

    @classmethod
    def build(
        cls, route: Route, baseline: Model, candidate: Model | None, *, series: EndpointSeries, old: Serving | None
    ) -> Serving:
        """The serving of a new route; what the old one (same endpoint) had that still fits is kept:
        the breaker's count for the same rollout, the keys seen at the same rollout and weight, the
        caches and batching queues of the same models."""
        same = old is not None and (old.route.rollout_id, old.route.breaker) == (route.rollout_id, route.breaker)
        # at a new weight every key counts again, for the variant it goes to now
        same_split = old is not None and (old.route.rollout_id, old.route.weight) == (route.rollout_id, route.weight)
        return cls(
            route=route,
            baseline=batched(route.batching, Variant.BASELINE, baseline, old.baseline if old else None),
            candidate=batched(route.batching, Variant.CANDIDATE, candidate, old.candidate if old else None),
            series=series,
            segmenter=Segmenter.for_route(route, baseline.columns),
            guard=old.guard if same and old is not None else Guard(route.breaker),
            keys=old.keys if same_split and old is not None else SeenKeys(),
            baseline_cache=cache_for(
                route.cache, Variant.BASELINE, route.baseline, old.baseline_cache if old else None
            ),
            candidate_cache=cache_for(
                route.cache, Variant.CANDIDATE, route.candidate, old.candidate_cache if old else None
            ),
        )

    def with_params(self, params: Any) -> Serving:
        """This serving for one request with inference parameters: each model that reads them
        bound to them (``calls.with_params``), out of its batching queue and its cache (a cached
        answer was given for other parameters, or none); the shadow lane binds the candidate it
        runs a copy on to ``params`` too. Itself when neither model reads them."""
        baseline, candidate = with_params(self.baseline, params), with_params(self.candidate, params)
        if baseline is self.baseline and candidate is self.candidate:
            return self
        return replace(
            self,
            baseline=baseline,
            candidate=candidate,
            baseline_cache=self.baseline_cache if baseline is self.baseline else None,
            candidate_cache=self.candidate_cache if candidate is self.candidate else None,
            params=params,
        )

    def version(self, variant: Variant) -> ModelVersion:
        if variant is Variant.CANDIDATE and self.route.candidate is not None:
            return self.route.candidate
        return self.route.baseline

    def versions(self) -> list[str]:
        """The registry versions this endpoint serves: the baseline's, and the candidate's while it serves."""
        route = self.route
        served = [route.baseline] + ([route.candidate] if self.candidate is not None and route.candidate else [])
        return [version.version for version in served if version.version]


def batched(settings: Batching | None, variant: Variant, model: M, previous: Model | None) -> M | BatchingModel:
    """A variant's model under a route's batching: in a batching queue if the route asks for one
    and the model runs in this process (one the gateway already batches, or awaits, is left as
    it is); the queue it had if the model and the settings are the same."""
    if settings is None or model is None or variant.value not in settings.variants:
        return model
    if getattr(model, "apredict", None) is not None:
        return model
    wanted = BatchSettings(max_batch_size=settings.max_batch_size, max_wait_us=settings.max_wait_us)
    if isinstance(previous, BatchingModel) and previous.model is model and previous.settings == wanted:
        return previous
    return BatchingModel(model, wanted)


class StaticRoutes:
    """A ``RouteSource`` for endpoints named on the command line, each serving one model with no
    rollout, with a store's routes (when there is a store) taking precedence endpoint by endpoint:
    a rollout started on a static endpoint takes it over, and gives it back when it ends."""

    def __init__(self, routes: dict[str, Route], store: RouteSource | None = None) -> None:
        self._static = routes
        self._store = store

    def routes_version(self) -> int:
        return self._store.routes_version() if self._store is not None else 0

    def routes(self) -> dict[str, Route]:
        return {**self._static, **(self._store.routes() if self._store is not None else {})}
