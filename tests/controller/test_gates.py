"""Gates in the control loop and in operators' commands, on a real SQLite store with real regopy: a
denial holds the rollout once in its history and audit log and lets it go when the policy does;
``onDeny: rollback`` ends it; a refused command changes nothing. (The registry is the in-memory
double: these tests are about the loop; tests/adapters/test_rego_policy.py uses a real MLflow.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.adapters.testing import FakeRegistry
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import run_command, start_rollout
from modelcanary.domain.errors import PolicyDenied
from modelcanary.domain.phases import Phase
from modelcanary.domain.telemetry import Variant, VariantTelemetry
from modelcanary.engine.decide import Command

FRIDAY = 1_733_486_400.0  # 2024-12-06T12:00:00Z
SATURDAY = FRIDAY + 86_400.0
FREEZE = {"policy": "change-freeze", "params": {"weekdays": ["Saturday", "Sunday"]}}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def spec_text(gates: dict[str, Any]) -> str:
    body = {
        "endpoint": "fraud",
        "baseline": "models:/fraud@champion",
        "candidate": "models:/fraud@challenger",
        "traffic": {"steps": [{"weight": 10}, {"weight": 50}]},
        "analysis": {"metrics": [{"kind": "error_rate"}]},
        "gates": gates,
    }
    return json.dumps({"apiVersion": "modelcanary/v1", "kind": "Rollout", "spec": body})


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry({"fraud": ["1", "2"]}, {("fraud", "champion"): "1", ("fraud", "challenger"): "2"})


def test_a_step_gate_denial_holds_once_then_lets_go_when_the_policy_allows(
    store: SqlStore, registry: FakeRegistry
) -> None:
    clock = Clock(SATURDAY)
    state = start_rollout(store, registry, spec_text({"step": [FREEZE]}), source="t", actor="ana", now=clock.now)
    controller = Controller(store=store, registry=registry, clock=clock)

    (held,) = controller.tick()
    assert (held.phase, held.weight) == (Phase.PENDING, 0.0)
    assert held.reason == "held at the step gate: change-freeze: no changes on Saturday (UTC)"
    assert store.routes() == {}  # no traffic moved
    clock.now += 600
    assert controller.tick() == []  # the same denial: nothing new recorded
    (entry,) = store.history(state.id)
    assert entry.gate is not None and entry.gate["denials"][0]["policy"] == "change-freeze"
    audited = [e for e in store.audit_events(state.id) if e["action"] == "rollout.pending"]
    assert [e["detail"]["reason"] for e in audited] == [held.reason]
    assert audited[0]["detail"]["gate"]["denials"] == [
        {"policy": "change-freeze", "message": "no changes on Saturday (UTC)"}
    ]

    clock.now = SATURDAY + 2 * 86_400.0  # Monday
    (entered,) = controller.tick()
    assert (entered.phase, entered.step, entered.weight) == (Phase.CANARY, 0, 10.0)
    last = store.history(state.id)[-1]
    assert last.gate is not None and last.gate["denials"] == [] and last.gate["policies"] == ["change-freeze"]


def test_a_misspelled_freeze_holds_the_rollout_naming_the_spelling_and_never_reads_as_no_freeze(
    store: SqlStore, registry: FakeRegistry
) -> None:
    clock = Clock(FRIDAY)  # a day the freeze means to leave free
    misspelled = {"policy": "change-freeze", "params": {"weekdays": ["saturday", "Sun"]}}
    state = start_rollout(store, registry, spec_text({"step": [misspelled]}), source="t", actor="ana", now=clock.now)
    controller = Controller(store=store, registry=registry, clock=clock)

    (held,) = controller.tick()
    assert (held.phase, held.weight) == (Phase.PENDING, 0.0)
    assert held.reason == (
        'held at the step gate: change-freeze: change-freeze weekdays: "Sun" is not a weekday; write one of'
        " Sunday, Monday, Tuesday, Wednesday, Thursday, Friday, Saturday (any case)"
    )
    assert store.routes() == {}
    clock.now = SATURDAY  # "saturday" is read, in any case
    (again,) = controller.tick()
    assert again.id == state.id and again.phase is Phase.PENDING
    assert "change-freeze: no changes on Saturday (UTC)" in again.reason and '"Sun" is not a weekday' in again.reason


def test_on_deny_rollback_ends_a_rollout_the_step_gate_refuses(store: SqlStore, registry: FakeRegistry) -> None:
    clock = Clock(SATURDAY)
    text = spec_text({"step": [FREEZE], "onDeny": "rollback"})
    state = start_rollout(store, registry, text, source="t", actor="ana", now=clock.now)
    (ended,) = Controller(store=store, registry=registry, clock=clock).tick()
    assert ended.id == state.id and ended.phase is Phase.ABORTED  # it never served, so nothing to roll back
    assert ended.reason == "aborted at the step gate: change-freeze: no changes on Saturday (UTC)"


def test_a_promote_command_in_a_freeze_is_refused_and_audited(store: SqlStore, registry: FakeRegistry) -> None:
    clock = Clock(FRIDAY)
    state = start_rollout(store, registry, spec_text({"promote": [FREEZE]}), source="t", actor="ana", now=clock.now)
    Controller(store=store, registry=registry, clock=clock).tick()
    with pytest.raises(PolicyDenied, match="change-freeze: no changes on Saturday"):
        run_command(store, state.id, Command.PROMOTE, actor="token:bo", now=SATURDAY)
    assert store.get(state.id)[0].phase is Phase.CANARY
    refused = store.audit_events(state.id)[-1]
    assert (refused["action"], refused["actor"]) == ("rollout.command_refused", "token:bo")
    assert refused["detail"]["denials"] == [["change-freeze", "no changes on Saturday (UTC)"]]

    promoted = run_command(store, state.id, Command.PROMOTE, actor="token:bo", now=FRIDAY + 3600)
    assert promoted.phase is Phase.PROMOTED
    assert [approval.actor for approval in promoted.approvals] == ["token:bo"]  # promoting is approving


def telemetry(store: SqlStore, rollout_id: str, *, baseline: int, candidate: int, errors: int = 0) -> None:
    counts = {Variant.BASELINE: VariantTelemetry(), Variant.CANDIDATE: VariantTelemetry()}
    for index in range(baseline):  # the baseline fails 1% of requests
        counts[Variant.BASELINE].observe(latency_ms=5.0, error=index % 100 == 0)
    for index in range(candidate):
        counts[Variant.CANDIDATE].observe(latency_ms=5.0, error=index < errors)
    store.write_telemetry("gw", [(rollout_id, variant, value) for variant, value in counts.items()])


APPROVAL_STEPS = [
    {"weight": 10, "minRequests": 50, "minDuration": "60s"},
    {"approval": {"role": "approver", "timeout": "1h"}},
    {"weight": 50},
]


def awaiting_approval(store: SqlStore, registry: FakeRegistry, clock: Clock) -> tuple[Controller, str]:
    text = json.loads(spec_text({}))
    text["spec"]["traffic"]["steps"] = APPROVAL_STEPS
    text["spec"]["analysis"]["metrics"] = [{"kind": "error_rate", "margin": 0.05, "minRequests": 50}]
    state = start_rollout(store, registry, json.dumps(text), source="t", actor="ana", now=clock.now)
    controller = Controller(store=store, registry=registry, clock=clock)
    controller.tick()
    # at 10%, the candidate gets a ninth of the baseline's requests (else the judge holds on a sample-ratio mismatch)
    telemetry(store, state.id, baseline=180, candidate=20)  # a first look with baseline data
    clock.now += 1
    controller.tick()
    telemetry(store, state.id, baseline=9000, candidate=1000)
    clock.now += 120
    (waiting,) = controller.tick()
    assert (waiting.phase, waiting.step, waiting.weight) == (Phase.AWAITING_APPROVAL, 1, 10.0)
    assert store.routes()["fraud"].weight == 10.0
    return controller, state.id


def test_the_loop_keeps_judging_a_rollout_awaiting_approval_and_rolls_it_back_on_a_failure(
    store: SqlStore, registry: FakeRegistry
) -> None:
    clock = Clock(FRIDAY)
    controller, rollout_id = awaiting_approval(store, registry, clock)
    changed: list[Any] = []
    for look in range(1, 6):  # the sequential judge gathers its evidence over a few looks
        telemetry(store, rollout_id, baseline=9000 + 4500 * look, candidate=1000 + 500 * look, errors=200 * look)
        clock.now += 30
        changed += controller.tick()
    (failed,) = changed
    assert failed.phase is Phase.ROLLED_BACK and "error-rate failed" in failed.reason
    assert store.routes()["fraud"].candidate is None


def test_an_approval_through_a_command_lets_the_rollout_into_its_next_step(
    store: SqlStore, registry: FakeRegistry
) -> None:
    clock = Clock(FRIDAY)
    _, rollout_id = awaiting_approval(store, registry, clock)
    approved = run_command(store, rollout_id, Command.APPROVE, actor="token:bo", now=clock.now + 5)
    assert (approved.phase, approved.step, approved.weight) == (Phase.CANARY, 2, 50.0)
    assert store.routes()["fraud"].weight == 50.0
    assert store.history(rollout_id)[-1].actor == "token:bo"
