"""What the gateway serves: each endpoint's route with its models loaded, and where routes come from."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelcanary.domain.state import ModelVersion, Route
from modelcanary.domain.telemetry import Variant
from modelcanary.gateway.faults import Guard
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
    segmenter: Segmenter = field(default_factory=Segmenter)  # its segment rules, compiled
    guard: Guard = field(default_factory=lambda: Guard(None))  # kept across refreshes of the same rollout

    def version(self, variant: Variant) -> ModelVersion:
        if variant is Variant.CANDIDATE and self.route.candidate is not None:
            return self.route.candidate
        return self.route.baseline


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
