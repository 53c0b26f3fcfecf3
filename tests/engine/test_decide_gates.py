"""Gates as an input of the pure decision: it asks for a gate's answer, acts on the answer, and the
answer saved with the transition replays the same decision."""

from __future__ import annotations

import json

from modelcanary.domain.gates import Denial, Gate, GateDecision
from modelcanary.domain.judgement import Judgement, MetricJudgement, Verdict
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import RolloutSpec, load_spec
from modelcanary.domain.state import ModelVersion, Outcome, RolloutState
from modelcanary.engine.decide import decide, new_state

SPEC = load_spec(
    json.dumps(
        {
            "apiVersion": "modelcanary/v1",
            "kind": "Rollout",
            "spec": {
                "endpoint": "fraud",
                "baseline": "models:/fraud/1",
                "candidate": "models:/fraud/2",
                "traffic": {"steps": [{"weight": 10, "minRequests": 0, "minDuration": 0}, {"weight": 50}]},
                "analysis": {"metrics": [{"kind": "error_rate"}]},
                "gates": {"step": ["change-freeze"], "promote": ["require-approver"]},
            },
        }
    )
)
PASS = Judgement(
    judge="test",
    metrics=(
        MetricJudgement(
            name="e",
            kind="error_rate",
            verdict=Verdict.PASS,
            baseline=0.0,
            candidate=0.0,
            limit=0.01,
            baseline_samples=1,
            candidate_samples=1,
            reason="ok",
        ),
    ),
)
DENIED = GateDecision(
    gate=Gate.STEP, policies=("change-freeze",), denials=(Denial(policy="change-freeze", message="x"),)
)
ALLOWED = GateDecision(gate=Gate.STEP, policies=("change-freeze",))


def started(spec: RolloutSpec = SPEC) -> tuple[RolloutState, Outcome]:
    state = new_state(
        spec,
        rollout_id="r",
        baseline=ModelVersion(name="fraud", version="1"),
        candidate=ModelVersion(name="fraud", version="2"),
        now=0.0,
    )
    return state, decide(state, spec, judgement=None, candidate_requests=0, now=1.0, gates={Gate.STEP: ALLOWED})


def test_a_decision_crossing_a_gate_asks_for_it_and_changes_nothing() -> None:
    state, _ = started()
    asked = decide(state, SPEC, judgement=None, candidate_requests=0, now=1.0)
    assert asked.asks is Gate.STEP and asked.transition is None and asked.state == state


def test_an_answer_is_saved_with_the_transition_and_replays_the_same_decision() -> None:
    _, entered = started()
    canary = entered.state
    asked = decide(canary, SPEC, judgement=PASS, candidate_requests=5, now=2.0)
    assert asked.asks is Gate.STEP
    held = decide(canary, SPEC, judgement=PASS, candidate_requests=5, now=2.0, gates={Gate.STEP: DENIED})
    assert held.transition is not None and held.state.phase is Phase.CANARY and held.state.weight == 10.0
    assert held.state.gate_hold == "step gate: change-freeze: x"
    saved = GateDecision.model_validate(held.transition.gate)
    assert decide(canary, SPEC, judgement=PASS, candidate_requests=5, now=2.0, gates={Gate.STEP: saved}) == held
    # held for the same reasons: no new transition; a pass then moves on
    assert (
        decide(held.state, SPEC, judgement=PASS, candidate_requests=9, now=3.0, gates={Gate.STEP: DENIED}).transition
        is None
    )
    moved = decide(held.state, SPEC, judgement=PASS, candidate_requests=9, now=3.0, gates={Gate.STEP: ALLOWED})
    assert (moved.state.step, moved.state.weight, moved.state.gate_hold) == (1, 50.0, "")


def test_a_hold_at_a_gate_is_notified_once_per_reason() -> None:
    """A gate that holds the rollout waits for someone (a freeze to end, an approver): recorded,
    audited, and sent to the webhooks, once for each new set of reasons (it was recorded alone)."""
    document = json.loads(SPEC.model_dump_json(by_alias=True, exclude_none=True))
    document["spec"]["notify"] = [{"url": "http://hooks.example/x"}]
    spec = load_spec(json.dumps(document))
    canary = started(spec)[1].state
    held = decide(canary, spec, judgement=PASS, candidate_requests=5, now=2.0, gates={Gate.STEP: DENIED})
    assert [action.kind.value for action in held.actions] == ["notify"]
    assert "held at the step gate: change-freeze: x" in held.actions[0].payload["body"]
    again = decide(held.state, spec, judgement=PASS, candidate_requests=9, now=3.0, gates={Gate.STEP: DENIED})
    assert again.transition is None and again.actions == ()
    other = GateDecision(
        gate=Gate.STEP, policies=("change-freeze",), denials=(Denial(policy="change-freeze", message="y"),)
    )
    changed = decide(held.state, spec, judgement=PASS, candidate_requests=9, now=3.0, gates={Gate.STEP: other})
    assert changed.transition is not None and [action.kind.value for action in changed.actions] == ["notify"]
