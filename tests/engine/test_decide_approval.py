"""Approval steps: the rollout waits at the weight it reached for an approver, still protected by
its judge, until an approval or the step's timeout; and ``requireApprover`` keeps an unapproved
rollout from promoting."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelcanary.domain.errors import Conflict, SpecError
from modelcanary.domain.judgement import Judgement, MetricJudgement, Verdict
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import RolloutSpec, load_spec
from modelcanary.domain.state import ModelVersion, RolloutState
from modelcanary.engine.decide import Command, apply_command, decide, new_state, required_role

QUICK = {"minRequests": 0, "minDuration": 0}


def make_spec(steps: list[dict[str, Any]], shadow: dict[str, Any] | None = None, **gates: Any) -> RolloutSpec:
    body = {
        "endpoint": "fraud",
        "baseline": "models:/fraud/1",
        "candidate": "models:/fraud/2",
        "traffic": {"steps": steps, **({"shadow": shadow} if shadow else {})},
        "analysis": {"metrics": [{"kind": "error_rate"}]},
        "gates": gates,
    }
    return load_spec(json.dumps({"apiVersion": "modelcanary/v1", "kind": "Rollout", "spec": body}))


def judged(verdict: Verdict) -> Judgement:
    metric = MetricJudgement(
        name="errors",
        kind="error_rate",
        verdict=verdict,
        baseline=0.0,
        candidate=0.0,
        limit=0.01,
        baseline_samples=1,
        candidate_samples=1,
        reason=verdict.value,
    )
    return Judgement(judge="test", metrics=(metric,))


def at_first_step(spec: RolloutSpec) -> RolloutState:
    state = new_state(
        spec,
        rollout_id="r",
        baseline=ModelVersion(name="fraud", version="1"),
        candidate=ModelVersion(name="fraud", version="2"),
        now=0.0,
    )
    return decide(state, spec, judgement=None, candidate_requests=0, now=0.0).state


APPROVAL = {"approval": {"role": "approver", "timeout": "1h", "onTimeout": "rollback"}}


def awaiting(spec: RolloutSpec) -> RolloutState:
    waiting = decide(at_first_step(spec), spec, judgement=judged(Verdict.PASS), candidate_requests=10, now=5.0)
    assert waiting.transition is not None and waiting.route is None  # the weight does not move
    return waiting.state


def test_a_passed_step_before_an_approval_waits_at_its_weight_for_an_approver() -> None:
    spec = make_spec([{"weight": 5, **QUICK}, APPROVAL, {"weight": 50}])
    state = awaiting(spec)
    assert (state.phase, state.step, state.weight, state.step_started_at) == (Phase.AWAITING_APPROVAL, 1, 5.0, 5.0)
    assert state.reason == "step 2 of 3: awaiting approval by approver for at most 3600s (candidate stays at 5%)"
    assert required_role(state, spec, Command.APPROVE) == "approver"
    assert decide(state, spec, judgement=judged(Verdict.PASS), candidate_requests=50, now=60.0).transition is None

    approved = apply_command(state, spec, Command.APPROVE, actor="token:bo", now=100.0, candidate_requests=70)
    assert (approved.state.phase, approved.state.step, approved.state.weight) == (Phase.CANARY, 2, 50.0)
    assert approved.state.step_start_candidate_requests == 70
    assert approved.transition is not None and approved.transition.actor == "token:bo"
    assert approved.state.reason == "approved by token:bo: step 3 of 3: candidate at 50%"
    assert [(a.actor, a.step) for a in approved.state.approvals] == [("token:bo", 1)]
    assert approved.route is not None and approved.route.weight == 50.0


def test_a_failing_metric_rolls_back_a_rollout_waiting_for_approval() -> None:
    spec = make_spec([{"weight": 5, **QUICK}, APPROVAL, {"weight": 50}])
    failed = decide(awaiting(spec), spec, judgement=judged(Verdict.FAIL), candidate_requests=50, now=60.0)
    assert failed.state.phase is Phase.ROLLED_BACK and failed.route is not None and failed.route.weight == 0.0


@pytest.mark.parametrize(
    ("on_timeout", "phase", "paused", "step"),
    [
        ("rollback", Phase.ROLLED_BACK, False, 1),
        ("pause", Phase.AWAITING_APPROVAL, True, 1),
        ("promote", Phase.CANARY, False, 2),
    ],
)
def test_an_approval_timeout_does_what_the_step_says(on_timeout: str, phase: Phase, paused: bool, step: int) -> None:
    approval = {"approval": {"timeout": "1h", "onTimeout": on_timeout}}
    spec = make_spec([{"weight": 5, **QUICK}, approval, {"weight": 50}])
    state = awaiting(spec)
    assert decide(state, spec, judgement=judged(Verdict.PASS), candidate_requests=50, now=3604.0).transition is None
    timed_out = decide(state, spec, judgement=judged(Verdict.PASS), candidate_requests=50, now=3605.0)
    assert (timed_out.state.phase, timed_out.state.paused, timed_out.state.step) == (phase, paused, step)
    assert "no approval within 3600s at step 2" in timed_out.state.reason


def test_an_approval_as_the_last_step_promotes_when_approved() -> None:
    spec = make_spec([{"weight": 5, **QUICK}, {"approval": {"role": "admin"}}])
    state = awaiting(spec)
    assert required_role(state, spec, Command.APPROVE) == "admin"
    promoted = apply_command(state, spec, Command.APPROVE, actor="token:root", now=10.0)
    assert promoted.state.phase is Phase.PROMOTED and promoted.state.reason == "approved by token:root: promoted"


def test_a_promote_needs_the_highest_role_of_the_approval_steps_ahead() -> None:
    spec = make_spec([{"weight": 5, **QUICK}, {"approval": {"role": "admin"}}, {"weight": 50}])
    state = at_first_step(spec)
    assert required_role(state, spec, Command.PROMOTE) == "admin"  # the admin's step is ahead
    assert required_role(state, spec, Command.APPROVE) is None  # nothing awaits an approval
    assert required_role(state, spec, Command.PAUSE) is None
    past = apply_command(awaiting(spec), spec, Command.APPROVE, actor="token:root", now=10.0).state
    assert past.step == 2 and required_role(past, spec, Command.PROMOTE) is None  # none left


def test_a_promote_in_the_shadow_phase_needs_the_roles_of_every_approval_step() -> None:
    """In its shadow phase a rollout is before its first step (step -1): every approval step is
    still ahead, not only the last one (an approver promoted past an admin's step there)."""
    spec = make_spec(
        [{"weight": 5, **QUICK}, {"approval": {"role": "admin"}}, {"weight": 50}], shadow={"duration": "1h"}
    )
    state = at_first_step(spec)
    assert (state.phase, state.step) == (Phase.SHADOW, -1)
    assert required_role(state, spec, Command.PROMOTE) == "admin"
    plain = make_spec([{"weight": 5, **QUICK}, {"approval": {}}, {"weight": 50}])
    assert required_role(at_first_step(plain), plain, Command.PROMOTE) == "approver"


def test_a_paused_rollout_is_not_approved_until_it_is_resumed() -> None:
    spec = make_spec([{"weight": 5, **QUICK}, {"approval": {}}, {"weight": 50}])
    paused = apply_command(awaiting(spec), spec, Command.PAUSE, actor="token:al", now=10.0).state
    with pytest.raises(Conflict, match="is paused; resume it, then approve"):
        apply_command(paused, spec, Command.APPROVE, actor="token:bo", now=11.0)
    resumed = apply_command(paused, spec, Command.RESUME, actor="token:al", now=12.0).state
    approved = apply_command(resumed, spec, Command.APPROVE, actor="token:bo", now=13.0).state
    assert (approved.phase, approved.weight, approved.paused) == (Phase.CANARY, 50.0, False)


def test_require_approver_turns_an_unapproved_promotion_into_a_wait() -> None:
    spec = make_spec([{"weight": 5, **QUICK}], requireApprover=True)
    state = decide(at_first_step(spec), spec, judgement=judged(Verdict.PASS), candidate_requests=10, now=5.0).state
    assert state.phase is Phase.AWAITING_APPROVAL
    assert "promotion needs an approver" in state.reason
    promoted = apply_command(state, spec, Command.APPROVE, actor="token:bo", now=6.0)
    assert promoted.state.phase is Phase.PROMOTED

    # an approval step that times out "promote" without an approver cannot promote either
    spec = make_spec(
        [{"weight": 5, **QUICK}, {"approval": {"timeout": 10, "onTimeout": "promote"}}], requireApprover=True
    )
    timed_out = decide(awaiting(spec), spec, judgement=judged(Verdict.PASS), candidate_requests=10, now=16.0)
    assert timed_out.state.phase is Phase.ROLLED_BACK and "needs an approver" in timed_out.state.reason


def test_approve_fits_only_a_rollout_awaiting_approval() -> None:
    spec = make_spec([{"weight": 5, **QUICK}, APPROVAL, {"weight": 50}])
    with pytest.raises(Conflict, match="not awaiting approval"):
        apply_command(at_first_step(spec), spec, Command.APPROVE, actor="token:bo", now=1.0)


def test_the_step_grammar_names_each_bad_step_at_its_line() -> None:
    text = """\
apiVersion: modelcanary/v1
kind: Rollout
spec:
  endpoint: fraud
  baseline: models:/fraud/1
  candidate: models:/fraud/2
  traffic:
    steps:
      - weight: 5
      - approval: {role: boss, timeout: soon, onTimeout: shrug}
      - {weight: 50, approval: {}}
  analysis: {metrics: [{kind: error_rate}]}
"""
    with pytest.raises(SpecError) as caught:
        load_spec(text)
    assert [where for where, _ in caught.value.problems] == [
        "spec.traffic.steps[1].approval.role (line 10)",
        "spec.traffic.steps[1].approval.timeout (line 10)",
        "spec.traffic.steps[1].approval.onTimeout (line 10)",
        "spec.traffic.steps[2].weight (line 11)",
    ]
    first = text.replace("      - weight: 5\n", "").replace("role: boss, timeout: soon, onTimeout: shrug", "")
    first = first.replace("      - {weight: 50, approval: {}}\n", "      - {weight: 50}\n")
    problem = r"spec.traffic.steps\[0\] \(line 9\): Value error, the first step must be a weight step"
    with pytest.raises(SpecError, match=problem):  # at the step, not at spec.traffic (line 7)
        load_spec(first)


def test_a_pause_for_a_human_is_notified_with_the_operators_reason() -> None:
    """Webhooks fire on a pause and a resume too, and carry the reason the history records."""
    spec = make_spec([{"weight": 5, **QUICK}, {"approval": {"timeout": "1h", "onTimeout": "pause"}}, {"weight": 50}])
    hooked = load_spec(spec.model_dump_json(by_alias=True).replace('"notify":[]', '"notify":[{"url":"http://hook"}]'))
    state = awaiting(hooked)
    paused = decide(state, hooked, judgement=judged(Verdict.PASS), candidate_requests=50, now=3605.0)
    assert paused.state.paused and [a.kind.value for a in paused.actions] == ["notify"]
    assert "paused for a human: no approval within 3600s" in paused.actions[0].payload["body"]
    resumed = apply_command(paused.state, hooked, Command.RESUME, actor="token:al", now=3700.0, reason="on call now")
    assert resumed.state.reason == "resumed by token:al: on call now"
    assert json.loads(resumed.actions[0].payload["body"])["reason"] == "resumed by token:al: on call now"
    assert apply_command(state, spec, Command.PAUSE, actor="token:al", now=10.0).actions == ()  # no notify target
