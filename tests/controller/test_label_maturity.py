"""A quality metric compares labels only once matured (``matureAfter``): the gateway's recorder,
a real SQLite store, the controller and the sequential judge, on one hand-moved clock.

Fraud is confirmed an hour after the prediction (a chargeback), a legitimate payment in 30 s. The
candidate never flags fraud. Counted as they come, both variants' labels are the legitimate ones
only for the first hour, on which the two are equally right: the candidate was promoted at 10%.
Matured, every variant's labels are those of its predictions an hour old, fraud included."""

from __future__ import annotations

import json
import random

import pytest

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.adapters.testing import FakeRegistry
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import start_rollout
from modelcanary.domain.phases import Phase
from modelcanary.domain.telemetry import Variant
from modelcanary.gateway.recorder import Recorder

FRAUD_LABEL_S, LEGIT_LABEL_S = 3_600.0, 30.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _spec(mature_after: str | None) -> str:
    quality = {"kind": "quality", "name": "accuracy", "measure": "accuracy", "margin": 0.02, "minLabels": 100}
    if mature_after is not None:
        quality["matureAfter"] = mature_after
    steps = [
        {"weight": 10, "minRequests": 100, "minDuration": "60s", "maxDuration": "3h"},
        {"weight": 50, "minRequests": 100, "minDuration": "60s", "maxDuration": "3h"},
    ]
    body = {
        "endpoint": "fraud",
        "baseline": "models:/fraud@champion",
        "candidate": "models:/fraud@challenger",
        "traffic": {"steps": steps},
        "analysis": {"metrics": [quality]},
    }
    return json.dumps({"apiVersion": "modelcanary/v1", "kind": "Rollout", "spec": body})


@pytest.mark.parametrize(("mature_after", "phase"), [(None, Phase.PROMOTED), ("1h", Phase.ROLLED_BACK)])
def test_a_candidate_that_misses_the_slow_outcomes_is_caught_only_on_matured_labels(
    store: SqlStore, mature_after: str | None, phase: Phase
) -> None:
    clock = Clock(10_000.0)
    registry = FakeRegistry({"fraud": ["1", "2"]}, {("fraud", "champion"): "1", ("fraud", "challenger"): "2"})
    state = start_rollout(store, registry, _spec(mature_after), source="test", actor="test", now=clock.now)
    controller = Controller(store=store, registry=registry, clock=clock)
    recorder = Recorder(clock=clock)
    controller.tick()
    route = store.routes()["fraud"]
    assert route.label_maturity_s == (3_600.0 if mature_after else 0.0)  # what the gateway is told
    rng = random.Random(1)
    pending: list[tuple[float, str, int]] = []  # (due, prediction id, label)
    while not state.phase.is_terminal() and clock.now < 10_000.0 + 4 * 3_600:
        clock.now += 30.0
        for _ in range(100):
            fraud = rng.random() < 0.1
            variant = Variant.CANDIDATE if rng.random() < state.weight / 100 else Variant.BASELINE
            score = 0.9 if fraud and variant is Variant.BASELINE else 0.1  # the candidate misses every fraud
            (prediction_id,) = recorder.record(
                state.id, variant, latency_ms=5.0, error=False, scores=[score], mature_s=route.label_maturity_s
            )
            pending.append((clock.now + (FRAUD_LABEL_S if fraud else LEGIT_LABEL_S), prediction_id, int(fraud)))
        due = [(prediction_id, label) for at, prediction_id, label in pending if at <= clock.now]
        pending = [each for each in pending if each[0] > clock.now]
        if due:
            recorder.label(due)
        store.write_telemetry("gw-1", recorder.changed())
        controller.tick()
        state, _ = store.get(state.id)
    assert state.phase is phase, state.reason
    if phase is Phase.ROLLED_BACK:
        assert "accuracy" in state.reason and state.step == 0  # at 10%, never promoted a step
        assert clock.now > 10_000.0 + FRAUD_LABEL_S  # not before a fraud label had matured
