"""The controller with a metric source (a scripted double here; tests/adapters/test_prometheus_source.py
runs a real Prometheus): reads go to the store under the source's name, and a failed read holds
the rollout where the same data, read fine, would have promoted it."""

from __future__ import annotations

import json

import pytest

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.adapters.testing import FakeMetrics, FakeRegistry
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import start_rollout
from modelcanary.domain.phases import Phase
from modelcanary.domain.telemetry import RolloutTelemetry, Variant, VariantTelemetry
from modelcanary.ports import Measurement

T0 = 10_000.0
QUERIES = {"requests": "sum(requests_total)", "errors": "sum(errors_total)"}
SPEC = json.dumps(
    {
        "apiVersion": "modelcanary/v1",
        "kind": "Rollout",
        "spec": {
            "endpoint": "fraud",
            "baseline": "models:/fraud/1",
            "candidate": "models:/fraud/2",
            "traffic": {"steps": [{"weight": 50, "minRequests": 100, "minDuration": "60s"}]},
            "analysis": {"metrics": [{"kind": "error_rate", "margin": 0.02}]},
            "source": {
                "prometheus": {"url": "http://prom:9090", "interval": 0, "baseline": QUERIES, "candidate": QUERIES}
            },
        },
    }
)


def read(requests: int) -> Measurement:
    """Both variants at ``requests`` requests, 1% of them failed."""
    each = VariantTelemetry(requests=requests, errors=requests // 100)
    return Measurement(telemetry=RolloutTelemetry(baseline=each, candidate=each))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("last", "expected"), [(read(20_000), Phase.PROMOTED), (None, Phase.CANARY)])
def test_a_failed_read_holds_what_the_same_data_read_fine_promotes(
    store: SqlStore, last: Measurement | None, expected: Phase
) -> None:
    failed = Measurement(telemetry=None, error="prometheus http://prom:9090: connection refused")
    source = FakeMetrics([read(1_000), read(20_000), last or failed])
    clock = Clock()
    state = start_rollout(store, FakeRegistry({"fraud": ["1", "2"]}), SPEC, source="spec", actor="t", now=T0)
    controller = Controller(store=store, registry=FakeRegistry({}), clock=clock, sources=lambda name: source)

    controller.tick()  # pending -> canary: nothing read yet
    assert source.reads == []
    clock.now += 1
    controller.tick()  # a first look, for the judge's baseline
    clock.now += 1
    controller.tick()  # the evidence passes, but the step's minDuration has not run out
    assert store.get(state.id)[0].phase is Phase.CANARY
    clock.now += 100
    controller.tick()  # the same numbers again, or a failed read of them

    after, _ = store.get(state.id)
    assert after.phase is expected, after.reason
    assert source.reads == [(T0, T0 + 1), (T0, T0 + 2), (T0, T0 + 102)]  # always since the rollout began
    # the store holds the last good read, under the source's name, for the report and the API
    assert [(v, t.requests) for v, t in store.read_telemetry(state.id)] == [
        (Variant.BASELINE, 20_000),
        (Variant.CANDIDATE, 20_000),
    ]
    if last is None:
        assert "connection refused" in controller.measurement_errors[state.id]
    else:
        assert controller.measurement_errors == {}
