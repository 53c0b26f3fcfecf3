"""The controller with a metric source (a scripted double here; tests/adapters/test_prometheus_source.py
runs a real Prometheus): reads go to the store under the source's name, and a failed read holds
the rollout where the same data, read fine, would have promoted it; a source that raises holds its
rollout alone; a leader that stalls in a read past its lease writes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.adapters.testing import FakeMetrics, FakeRegistry
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import start_rollout
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import Source
from modelcanary.domain.telemetry import RolloutTelemetry, Variant, VariantTelemetry
from modelcanary.judges.sample_ratio import SRM_SETTLE_S
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
    controller.tick()  # a first look, for the judge's baseline (it bets on none of its counts)
    clock.now += SRM_SETTLE_S  # the first look the judge bets on: none in the 5 s after its first
    controller.tick()  # the evidence passes, but the step's minDuration has not run out
    assert store.get(state.id)[0].phase is Phase.CANARY
    clock.now += 100
    controller.tick()  # the same numbers again, or a failed read of them

    after, _ = store.get(state.id)
    assert after.phase is expected, after.reason
    assert source.reads == [(T0, T0 + 1), (T0, T0 + 6), (T0, T0 + 106)]  # always since the rollout began
    # the store holds the last good read, under the source's name, for the report and the API
    assert [(v, t.requests) for v, t in store.read_telemetry(state.id)] == [
        (Variant.BASELINE, 20_000),
        (Variant.CANDIDATE, 20_000),
    ]
    if last is None:
        assert "connection refused" in controller.measurement_errors[state.id]
    else:
        assert controller.measurement_errors == {}


class Raising:
    """A source breaking its contract (``measure`` never raises), as a bug in one would."""

    def measure(self, source: Source, *, since: float, until: float) -> Measurement:
        raise ZeroDivisionError("float division by zero")


def test_a_source_that_raises_holds_its_rollout_and_the_others_are_decided(store: SqlStore) -> None:
    clock, fakes = Clock(), FakeRegistry({"fraud": ["1", "2"], "churn": ["1", "2"]})
    sourced = start_rollout(store, fakes, SPEC, source="spec", actor="t", now=T0)
    controller = Controller(store=store, registry=FakeRegistry({}), clock=clock, sources=lambda name: Raising())
    controller.tick()  # pending -> canary: nothing read yet
    plain: Any = json.loads(SPEC)
    plain["spec"].pop("source")
    plain["spec"]["endpoint"] = "churn"
    plain["spec"]["baseline"], plain["spec"]["candidate"] = "models:/churn/1", "models:/churn/2"
    other = start_rollout(store, fakes, json.dumps(plain), source="spec", actor="t", now=T0)
    clock.now += 1

    assert [state.id for state in controller.tick()] == [other.id]  # entered its first step
    assert controller.measurement_errors == {sourced.id: "prometheus: ZeroDivisionError: float division by zero"}
    assert store.get(sourced.id)[0].phase is Phase.CANARY
    assert store.read_telemetry(sourced.id) == []


def test_a_leader_that_stalls_in_a_read_past_its_lease_writes_nothing(store: SqlStore) -> None:
    """a reads a source, freezes past its lease while b takes over and writes a newer read; when a
    wakes up its older read must not overwrite b's, and a acts on nothing more."""
    clock = Clock()
    state = start_rollout(store, FakeRegistry({"fraud": ["1", "2"]}), SPEC, source="spec", actor="t", now=T0)
    newer = FakeMetrics([read(2_000)])
    second = Controller(
        store=store, registry=FakeRegistry({}), clock=clock, holder="b", lease_ttl_s=5, sources=lambda name: newer
    )

    class Stalling:
        def measure(self, source: Source, *, since: float, until: float) -> Measurement:
            clock.now += 10  # past a's lease
            second.tick()
            return read(1_000)  # what a read before it froze

    first = Controller(
        store=store, registry=FakeRegistry({}), clock=clock, holder="a", lease_ttl_s=5, sources=lambda name: Stalling()
    )
    first.tick()  # pending -> canary: nothing read yet
    clock.now += 1

    assert first.tick() == []
    assert first.fence is None and second.fence is not None
    assert [(v, t.requests) for v, t in store.read_telemetry(state.id)] == [
        (Variant.BASELINE, 2_000),
        (Variant.CANDIDATE, 2_000),
    ]
