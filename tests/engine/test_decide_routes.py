"""Every decision that ends a rollout publishes the route it leaves the endpoint on: the candidate
alone when promoted, the baseline alone otherwise, so no gateway keeps serving or shadowing the
candidate of an ended rollout. Checked on each path by hand, and over random ticks, commands and
gate answers."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from modelcanary.domain.errors import Conflict, PolicyDenied
from modelcanary.domain.gates import Denial, Gate, GateDecision
from modelcanary.domain.judgement import Judgement, MetricJudgement, Verdict
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import RolloutSpec, load_spec
from modelcanary.domain.state import ModelVersion, Outcome, RolloutState, Route
from modelcanary.engine.decide import Command, apply_command, decide, new_state

BASELINE = ModelVersion(name="fraud", version="1")
CANDIDATE = ModelVersion(name="fraud", version="2")
T0 = 1_000.0


def make_spec(
    *,
    shadow: bool = True,
    on_deny: str = "rollback",
    on_timeout: str = "rollback",
    require_approver: bool = False,
    last_approval: bool = False,
) -> RolloutSpec:
    approval = {"approval": {"timeout": "50s", "onTimeout": on_timeout}}
    body: dict[str, Any] = {
        "endpoint": "fraud",
        "baseline": "models:/fraud/1",
        "candidate": "models:/fraud/2",
        "traffic": {
            **({"shadow": {"duration": "10s"}} if shadow else {}),
            "steps": [
                {"weight": 10, "minRequests": 0, "minDuration": 0, "maxDuration": 100},
                approval,
                {"weight": 50, "minRequests": 0, "minDuration": 0, "maxDuration": 100},
                *([approval] if last_approval else []),
            ],
        },
        "analysis": {"metrics": [{"kind": "error_rate"}]},
        "gates": {"step": ["p"], "promote": ["q"], "onDeny": on_deny, "requireApprover": require_approver},
    }
    return load_spec(json.dumps({"apiVersion": "modelcanary/v1", "kind": "Rollout", "spec": body}))


def judged(verdict: Verdict) -> Judgement:
    metric = MetricJudgement(
        name="error-rate",
        kind="error_rate",
        verdict=verdict,
        baseline=0.0,
        candidate=0.0,
        limit=0.01,
        baseline_samples=100,
        candidate_samples=100,
        reason=verdict.value,
    )
    return Judgement(judge="test", metrics=(metric,))


def answers(allowed: bool) -> dict[Gate, GateDecision]:
    denials = () if allowed else (Denial(policy="p", message="no"),)
    return {gate: GateDecision(gate=gate, policies=("p",), denials=denials) for gate in (Gate.STEP, Gate.PROMOTE)}


def pending(spec: RolloutSpec) -> RolloutState:
    return new_state(spec, rollout_id="r", baseline=BASELINE, candidate=CANDIDATE, now=T0)


def assert_ends_on_its_route(outcome: Outcome) -> None:
    """An outcome that ends the rollout publishes the endpoint's route with no candidate in it."""
    state = outcome.state
    expected = CANDIDATE if state.phase is Phase.PROMOTED else BASELINE
    assert outcome.route == Route(endpoint="fraud", baseline=expected), (state.phase, state.reason)


def test_a_step_gate_denial_that_aborts_a_shadow_takes_the_shadow_route_down() -> None:
    spec = make_spec()
    shadowing = decide(pending(spec), spec, judgement=None, candidate_requests=0, now=T0 + 1)
    assert shadowing.state.phase is Phase.SHADOW and shadowing.route is not None and shadowing.route.shadow
    ended = decide(shadowing.state, spec, judgement=None, candidate_requests=0, now=T0 + 12, gates=answers(False))
    assert ended.state.phase is Phase.ABORTED and ended.state.reason.startswith("aborted at the step gate")
    assert_ends_on_its_route(ended)


def test_a_step_gate_denial_that_aborts_a_pending_rollout_leaves_the_endpoint_on_the_baseline() -> None:
    spec = make_spec(shadow=False)
    ended = decide(pending(spec), spec, judgement=None, candidate_requests=0, now=T0 + 1, gates=answers(False))
    assert ended.state.phase is Phase.ABORTED
    assert_ends_on_its_route(ended)


moves = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.sampled_from(list(Verdict)), st.booleans(), st.floats(0, 120)),
        st.tuples(st.just("command"), st.sampled_from(list(Command)), st.booleans(), st.floats(0, 120)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    moves,
    st.sampled_from(["rollback", "hold"]),
    st.sampled_from(["rollback", "pause", "promote"]),
    st.booleans(),
    st.booleans(),
)
def test_every_way_a_rollout_ends_publishes_its_route(
    sequence: list[tuple[str, Any, bool, float]],
    on_deny: str,
    on_timeout: str,
    require_approver: bool,
    last_approval: bool,
) -> None:
    spec = make_spec(
        on_deny=on_deny, on_timeout=on_timeout, require_approver=require_approver, last_approval=last_approval
    )
    state, now = pending(spec), T0
    for kind, what, allowed, later in sequence:
        now += later
        try:
            if kind == "tick":
                outcome = decide(
                    state, spec, judgement=judged(what), candidate_requests=0, now=now, gates=answers(allowed)
                )
            else:
                outcome = apply_command(state, spec, what, actor="op", now=now, gates=answers(allowed))
        except (Conflict, PolicyDenied):
            continue
        if outcome.state.phase.is_terminal() and not state.phase.is_terminal():
            assert_ends_on_its_route(outcome)
        state = outcome.state
