"""The engine's decisions through the controller on a real SQLite store (the registry is the
in-memory double): a rollout limited to some segments is judged on the split of the eligible
traffic, and a rollout aborted in its shadow phase takes its shadow route down."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.adapters.testing import FakeRegistry
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import start_rollout
from modelcanary.domain.phases import Phase
from modelcanary.domain.state import ModelVersion, Route
from modelcanary.domain.telemetry import Variant, VariantTelemetry

SATURDAY = 1_733_572_800.0  # 2024-12-07T12:00:00Z
FREEZE = {"policy": "change-freeze", "params": {"weekdays": ["Saturday", "Sunday"]}}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry({"fraud": ["1", "2"]}, {("fraud", "champion"): "1", ("fraud", "challenger"): "2"})


def spec_text(**extra: Any) -> str:
    body = {
        "endpoint": "fraud",
        "baseline": "models:/fraud@champion",
        "candidate": "models:/fraud@challenger",
        "traffic": {"steps": [{"weight": 10, "minDuration": 30}, {"weight": 50}]},
        "analysis": {"metrics": [{"kind": "error_rate"}]},
    }
    for key, value in extra.items():
        target = body["traffic"] if key in ("segments", "candidateSegments", "shadow") else body
        assert isinstance(target, dict)
        target[key] = value
    return json.dumps({"apiVersion": "modelcanary/v1", "kind": "Rollout", "spec": body})


def test_a_candidate_limited_to_half_the_traffic_advances_on_the_right_split(
    store: SqlStore, registry: FakeRegistry
) -> None:
    """At 10% with half the traffic in the eligible segment, the candidate serves 5% of all
    requests: the right split, so the step passes (judged on all requests, it held on a
    sample-ratio mismatch until its maxDuration rolled it back)."""
    clock = Clock(SATURDAY)
    text = spec_text(segments=[{"name": "eu", "header": "x-region", "in": ["eu-west"]}], candidateSegments=["eu"])
    state = start_rollout(store, registry, text, source="t", actor="ana", now=clock.now)
    controller = Controller(store=store, registry=registry, clock=clock)
    controller.tick()
    counts = {Variant.BASELINE: VariantTelemetry(), Variant.CANDIDATE: VariantTelemetry()}
    for _ in range(30):
        clock.now += 10
        # each 10 s, as a gateway counts them: 500 eligible requests split 10/90, 500 others to the baseline
        for variant, segment, n in (
            (Variant.CANDIDATE, "eu", 50),
            (Variant.BASELINE, "eu", 450),
            (Variant.BASELINE, "other", 500),
        ):
            for part in (counts[variant], counts[variant].segment(segment)):
                for _ in range(n):
                    part.observe(latency_ms=5.0)
        store.write_telemetry("gw", [(state.id, variant, value) for variant, value in counts.items()])
        controller.tick()
        if store.get(state.id)[0].step == 1:
            break
    ended = store.get(state.id)[0]
    assert (ended.phase, ended.step, ended.weight) == (Phase.CANARY, 1, 50.0), ended.reason
    assert all(entry.judgement is None or not entry.judgement["hold"] for entry in store.history(state.id))


def test_a_shadow_aborted_at_the_step_gate_takes_its_route_down(store: SqlStore, registry: FakeRegistry) -> None:
    clock = Clock(SATURDAY)
    text = spec_text(shadow={"duration": "10s"}, gates={"step": [FREEZE], "onDeny": "rollback"})
    state = start_rollout(store, registry, text, source="t", actor="ana", now=clock.now)
    controller = Controller(store=store, registry=registry, clock=clock)
    controller.tick()
    shadowing = store.routes()["fraud"]
    assert store.get(state.id)[0].phase is Phase.SHADOW and shadowing.shadow is not None
    clock.now += 11
    (ended,) = controller.tick()
    assert ended.phase is Phase.ABORTED and ended.reason.startswith("aborted at the step gate: change-freeze")
    assert store.routes()["fraud"] == Route(endpoint="fraud", baseline=ModelVersion(name="fraud", version="1"))


def test_a_hold_at_a_steps_max_duration_is_recorded_audited_and_notified_once(
    store: SqlStore, registry: FakeRegistry
) -> None:
    """onTimeout: hold at maxDuration left no trace: the reason still read "step 1 of 2: candidate at
    10%", with no transition, no audit event and no notification. Now the hold is recorded once
    (not at every tick after it), and the rollout still moves on when the evidence comes."""
    clock = Clock(SATURDAY)
    text = spec_text(notify=[{"url": "http://hooks.example/x"}])
    text = text.replace('"steps": [{"weight": 10, "minDuration": 30}', '"steps": [{"weight": 10, "maxDuration": 300}')
    text = text.replace('"kind": "error_rate"}', '"kind": "error_rate", "minRequests": 1000}')
    text = text.replace('"traffic": {', '"traffic": {"onTimeout": "hold", ')
    state = start_rollout(store, registry, text, source="t", actor="ana", now=clock.now)
    controller = Controller(store=store, registry=registry, clock=clock)
    controller.decide()  # decide alone: the webhooks stay pending, to be counted
    counts = {Variant.BASELINE: VariantTelemetry(), Variant.CANDIDATE: VariantTelemetry()}

    def look(candidate: int, baseline: int) -> None:
        clock.now += 10
        for variant, n in ((Variant.CANDIDATE, candidate), (Variant.BASELINE, baseline)):
            for _ in range(n):
                counts[variant].observe(latency_ms=5.0)
        store.write_telemetry("gw", [(state.id, variant, value) for variant, value in counts.items()])
        controller.decide()

    for _ in range(60):  # 600 s, twice the maxDuration, too few requests for the metric's 1000
        look(10, 90)
    held = store.get(state.id)[0]
    assert (held.phase, held.step, held.weight, held.paused, held.timeout_hold) == (Phase.CANARY, 0, 10.0, False, True)
    assert held.reason.startswith("held: step 1 reached its maxDuration of 300s without a pass (300 of 100")
    holds = [entry for entry in store.history(state.id) if entry.reason.startswith("held: ")]
    assert [(entry.at, entry.reason) for entry in holds] == [(SATURDAY + 300, held.reason)]
    events = [
        event["detail"]["reason"] for event in store.audit_events(state.id) if event["action"] == "rollout.canary"
    ]
    assert events == ["step 1 of 2: candidate at 10%", held.reason]
    notices = [json.loads(action.payload["body"]) for _, action in store.pending_actions()]
    assert [notice["reason"] for notice in notices] == ["step 1 of 2: candidate at 10%", held.reason]
    for _ in range(30):  # then the evidence: enough requests for a pass, at the weight's split
        look(100, 900)
        if store.get(state.id)[0].step == 1:
            break
    moved = store.get(state.id)[0]
    assert (moved.phase, moved.step, moved.weight, moved.timeout_hold) == (Phase.CANARY, 1, 50.0, False), moved.reason
