"""The transition function: state + judgement + clock + spec -> outcome. Pure, so any decision can be
replayed from what the store holds, and every side effect is described, never performed, here.

>>> from modelcanary.domain.spec import load_spec
>>> from modelcanary.domain.state import ModelVersion
>>> spec = load_spec('''
... apiVersion: modelcanary/v1
... kind: Rollout
... spec:
...   endpoint: fraud
...   baseline: models:/fraud@champion
...   candidate: models:/fraud/2
...   traffic: {steps: [{weight: 5}]}
...   analysis: {metrics: [{kind: error_rate}]}
... ''')
>>> state = new_state(spec, rollout_id="r1", baseline=ModelVersion(name="fraud", version="1"),
...                   candidate=ModelVersion(name="fraud", version="2"), now=0.0)
>>> out = decide(state, spec, judgement=None, candidate_requests=0, now=1.0)
>>> out.state.phase.value, out.state.weight, out.route.weight
('canary', 5.0, 5.0)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from modelcanary.domain.errors import Conflict, PolicyDenied
from modelcanary.domain.gates import Gate, GateDecision
from modelcanary.domain.judgement import Judgement, Verdict
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import RolloutSpec
from modelcanary.domain.state import (
    ApprovalRecord,
    ModelVersion,
    Outcome,
    RolloutState,
    Route,
)
from modelcanary.domain.traffic import ApprovalStep, Step
from modelcanary.engine.outcomes import CONTROLLER, change, notified, promote, roll_back, route_of


class Command(enum.StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    PROMOTE = "promote"  # promote now, whatever step the rollout is at
    APPROVE = "approve"  # let a rollout awaiting approval go on to its next step

    @property
    def participle(self) -> str:
        return self.value.removesuffix("e") + "ed"


def new_state(
    spec: RolloutSpec, *, rollout_id: str, baseline: ModelVersion, candidate: ModelVersion, now: float
) -> RolloutState:
    return RolloutState(
        id=rollout_id,
        name=spec.name,
        endpoint=spec.spec.endpoint,
        phase=Phase.PENDING,
        baseline=baseline,
        candidate=candidate,
        reason="waiting for the controller",
        created_at=now,
        updated_at=now,
    )


def decide(
    state: RolloutState,
    spec: RolloutSpec,
    *,
    judgement: Judgement | None,
    candidate_requests: int,
    now: float,
    gates: Mapping[Gate, GateDecision] | None = None,
) -> Outcome:
    """One controller tick. ``candidate_requests`` is the candidate's cumulative request count.

    ``gates`` holds the answers of the policy gates evaluated for this tick. A decision that would
    cross a gate whose policies have not answered changes nothing and ``asks`` for that gate: the
    caller evaluates its policies and decides again with the answer, which is saved with the
    transition, so the decision replays from the store alone."""
    outcome = _decide(state, spec, judgement=judgement, candidate_requests=candidate_requests, now=now, gates=gates)
    return notified(state, spec, outcome)


def _decide(
    state: RolloutState,
    spec: RolloutSpec,
    *,
    judgement: Judgement | None,
    candidate_requests: int,
    now: float,
    gates: Mapping[Gate, GateDecision] | None = None,
) -> Outcome:
    answers = gates or {}
    shadow = spec.spec.traffic.shadow
    if state.phase is Phase.PENDING and not state.paused:
        if shadow is not None and shadow.duration > 0:
            return _enter_shadow(state, spec, now=now)  # serves no one: no step gate to cross yet
        return _go_to(state, spec, 0, now=now, candidate_requests=candidate_requests, judgement=None, gates=answers)
    if state.phase is Phase.SHADOW:
        failing = judgement.failing() if judgement is not None else ()
        if failing:  # the candidate failed on its shadow predictions: it never serves anyone
            why = "; ".join(f"{metric.name} failed: {metric.reason}" for metric in failing)
            return roll_back(state, spec, now=now, reason=f"in shadow: {why}", judgement=judgement)
        # the shadow phase ends when its time is up (a pause stops its clock: resuming restarts it)
        started = state.step_started_at if state.step_started_at is not None else now
        if not state.paused and shadow is not None and now - started >= shadow.duration:
            return _go_to(state, spec, 0, now=now, candidate_requests=candidate_requests, judgement=None, gates=answers)
        return Outcome(state=state)
    if state.phase not in (Phase.CANARY, Phase.AWAITING_APPROVAL) or judgement is None:
        return Outcome(state=state)
    failing = judgement.failing()
    if failing:  # a pause, an approval or a gate stops the rollout advancing, never its protection
        why = "; ".join(f"{metric.name} failed: {metric.reason}" for metric in failing)
        return roll_back(state, spec, now=now, reason=why, judgement=judgement)
    if state.paused:
        return Outcome(state=state)
    step = spec.spec.traffic.steps[state.step]
    elapsed = 0.0 if state.step_started_at is None else now - state.step_started_at
    if state.phase is Phase.AWAITING_APPROVAL:
        approval = step.approval if isinstance(step, ApprovalStep) else None
        if approval is None or approval.timeout is None or elapsed < approval.timeout:
            return Outcome(state=state)
        why = f"no approval within {approval.timeout:g}s at step {state.step + 1}"
        if approval.on_timeout == "rollback":
            return roll_back(state, spec, now=now, reason=why, judgement=judgement)
        if approval.on_timeout == "pause":
            return change(state, now=now, reason=f"paused for a human: {why}", actor=CONTROLLER, paused=True)
        return _go_on(
            state, spec, now=now, candidate_requests=candidate_requests, judgement=judgement, gates=answers, note=why
        )
    assert isinstance(step, Step)
    served = candidate_requests - state.step_start_candidate_requests
    if judgement.verdict is Verdict.PASS and elapsed >= step.min_duration and served >= step.min_requests:
        return _go_on(state, spec, now=now, candidate_requests=candidate_requests, judgement=judgement, gates=answers)
    if elapsed >= step.max_duration:
        why = (
            f"step {state.step + 1} reached its maxDuration of {step.max_duration:g}s without a pass "
            f"({served} of {step.min_requests} candidate requests; {judgement.summary()})"
        )
        if spec.spec.traffic.on_timeout == "rollback":
            return roll_back(state, spec, now=now, reason=why, judgement=judgement)
        if spec.spec.traffic.on_timeout == "hold":
            if state.timeout_hold:
                return Outcome(state=state)  # recorded when the hold began: nothing new to record
            # judged on at this weight: a pass still moves it on, a failure still rolls it back
            reason = f"held: {why}; judging on at {state.weight:g}% until a pass, a failure or an operator decides"
            return change(state, now=now, reason=reason, actor=CONTROLLER, judgement=judgement, timeout_hold=True)
        return change(
            state, now=now, reason=f"paused for a human: {why}", actor=CONTROLLER, judgement=judgement, paused=True
        )
    return Outcome(state=state)


def apply_command(
    state: RolloutState,
    spec: RolloutSpec,
    command: Command,
    *,
    actor: str,
    now: float,
    candidate_requests: int = 0,
    gates: Mapping[Gate, GateDecision] | None = None,
    reason: str | None = None,
) -> Outcome:
    """An operator's pause, resume, abort, promote or approve (see ``_apply``); the operator's
    ``reason``, if any, is added to the transition's, before the notifications are made of it, so
    a webhook says what the history and the audit log say."""
    outcome = _apply(state, spec, command, actor=actor, now=now, candidate_requests=candidate_requests, gates=gates)
    if reason and outcome.transition is not None:
        because = f"{outcome.transition.reason}: {reason}"
        outcome = outcome.model_copy(
            update={
                "state": outcome.state.model_copy(update={"reason": because}),
                "transition": outcome.transition.model_copy(update={"reason": because}),
            }
        )
    return notified(state, spec, outcome)


def _apply(
    state: RolloutState,
    spec: RolloutSpec,
    command: Command,
    *,
    actor: str,
    now: float,
    candidate_requests: int,
    gates: Mapping[Gate, GateDecision] | None,
) -> Outcome:
    """An operator's pause, resume, abort, promote or approve. Raises ``Conflict`` when the rollout
    has ended or the command does not fit its phase, and ``PolicyDenied`` when a gate's policies
    refuse a promote or an approve (a command is refused, not held). ``candidate_requests``
    (cumulative) starts the count of the step an approval lets the rollout into; ``gates`` as for
    ``decide``."""
    answers = gates or {}
    refuse_ended(state, command)
    if command is Command.PROMOTE:
        if state.phase is Phase.PENDING:
            raise Conflict(f"rollout {state.id} has not started yet; it cannot be promoted")
        approved = _approved(state, actor=actor, now=now)
        checked = _gate(approved, spec, Gate.PROMOTE, answers, now=now, judgement=None, command=True)
        if isinstance(checked, Outcome):
            return checked
        return promote(approved, spec, now=now, reason=f"promoted by {actor}", actor=actor, gate=checked)
    if command is Command.APPROVE:
        if state.phase is not Phase.AWAITING_APPROVAL:
            raise Conflict(f"rollout {state.id} is {state.phase.value}, not awaiting approval")
        if state.paused:  # approving moves the weight on, which a pause promises not to do
            raise Conflict(f"rollout {state.id} is paused; resume it, then approve")
        return _go_on(
            _approved(state, actor=actor, now=now),
            spec,
            now=now,
            candidate_requests=candidate_requests,
            judgement=None,
            gates=answers,
            actor=actor,
            note=f"approved by {actor}",
        )
    if command is Command.ABORT:
        return aborted(state, actor=actor, now=now)
    if command is Command.PAUSE:
        if state.paused:
            raise Conflict(f"rollout {state.id} is already paused")
        return change(state, now=now, reason=f"paused by {actor}", actor=actor, paused=True)
    if not state.paused:
        raise Conflict(f"rollout {state.id} is not paused")
    # Resuming restarts the step's clock, so a step that timed out gets a fresh maxDuration.
    return change(state, now=now, reason=f"resumed by {actor}", actor=actor, paused=False, step_started_at=now)


def required_role(state: RolloutState, spec: RolloutSpec, command: Command) -> str | None:
    """The role ``command`` needs on this rollout now, beyond the command's own (None: nothing
    more): an approve, the role of the approval step it awaits; a promote, which skips every
    approval step still ahead, the highest of theirs. ``run_command`` checks it against the
    caller's, on the state it saves."""
    if state.phase.is_terminal():
        return None
    steps = spec.spec.traffic.steps
    if command is Command.APPROVE:
        if state.phase is not Phase.AWAITING_APPROVAL:
            return None
        step = steps[state.step]
        return step.approval.role if isinstance(step, ApprovalStep) else "approver"
    if command is Command.PROMOTE:
        # in the shadow phase (step -1) every step is still ahead
        ahead = {step.approval.role for step in steps[max(state.step, 0) :] if isinstance(step, ApprovalStep)}
        return "admin" if "admin" in ahead else "approver" if ahead else None
    return None


def refuse_ended(state: RolloutState, command: Command) -> None:
    """``Conflict`` if the rollout has ended: no command applies to it."""
    if state.phase.is_terminal():
        raise Conflict(f"rollout {state.id} has ended ({state.phase.value}); it cannot be {command.participle}")


def aborted(state: RolloutState, *, actor: str, now: float, reason: str | None = None) -> Outcome:
    """An operator's abort: the candidate out at once. It reads nothing of the spec, so a rollout
    whose saved spec this version cannot read can still be aborted (with no notification: their
    targets are in that spec). ``reason``, the operator's, is added to the transition's."""
    because = f"aborted by {actor}" + (f": {reason}" if reason else "")
    route = Route(endpoint=state.endpoint, baseline=state.baseline)
    return change(state, now=now, reason=because, actor=actor, phase=Phase.ABORTED, weight=0.0, route=route)


def _approved(state: RolloutState, *, actor: str, now: float) -> RolloutState:
    record = ApprovalRecord(actor=actor, at=now, step=state.step)
    return state.model_copy(update={"approvals": (*state.approvals, record)})


def _go_on(
    state: RolloutState,
    spec: RolloutSpec,
    *,
    now: float,
    candidate_requests: int,
    judgement: Judgement | None,
    gates: Mapping[Gate, GateDecision],
    actor: str = CONTROLLER,
    note: str = "",
) -> Outcome:
    """Past the current step: into the next one, or, after the last, to promotion."""
    steps = spec.spec.traffic.steps
    if state.step + 1 < len(steps):
        return _go_to(
            state,
            spec,
            state.step + 1,
            now=now,
            candidate_requests=candidate_requests,
            judgement=judgement,
            gates=gates,
            actor=actor,
            note=note,
        )
    command = actor != CONTROLLER
    if spec.spec.gates.require_approver and not state.approvals:
        why = "promotion needs an approver (gates.requireApprover)"
        if state.phase is Phase.AWAITING_APPROVAL:  # an approval step timed out with onTimeout: promote
            return roll_back(state, spec, now=now, reason=f"{note}; {why}", judgement=judgement)
        return change(
            state,
            now=now,
            reason=f"every step passed; awaiting approval: {why}",
            actor=actor,
            judgement=judgement,
            phase=Phase.AWAITING_APPROVAL,
            step_started_at=now,
        )
    checked = _gate(state, spec, Gate.PROMOTE, gates, now=now, judgement=judgement, command=command)
    if isinstance(checked, Outcome):
        return checked
    reason = f"{note}: promoted" if note else "promoted: every step passed"
    return promote(state, spec, now=now, judgement=judgement, reason=reason, actor=actor, gate=checked)


def _go_to(
    state: RolloutState,
    spec: RolloutSpec,
    index: int,
    *,
    now: float,
    candidate_requests: int,
    judgement: Judgement | None,
    gates: Mapping[Gate, GateDecision],
    actor: str = CONTROLLER,
    note: str = "",
) -> Outcome:
    """Into step ``index``: wait there for an approval, or, past the step gate, serve its weight."""
    step = spec.spec.traffic.steps[index]
    total = len(spec.spec.traffic.steps)
    prefix = f"{note}: " if note else ""
    if isinstance(step, ApprovalStep):
        wait = f" for at most {step.approval.timeout:g}s" if step.approval.timeout is not None else ""
        return change(
            state,
            now=now,
            reason=f"{prefix}step {index + 1} of {total}: awaiting approval by {step.approval.role}{wait} "
            f"(candidate stays at {state.weight:g}%)",
            actor=actor,
            judgement=judgement,
            phase=Phase.AWAITING_APPROVAL,
            step=index,
            step_started_at=now,
            step_start_candidate_requests=candidate_requests,
        )
    checked = _gate(state, spec, Gate.STEP, gates, now=now, judgement=judgement, command=actor != CONTROLLER)
    if isinstance(checked, Outcome):
        return checked
    reason = f"{prefix}step {index + 1} of {total}: candidate at {step.weight:g}%"
    if judgement is not None and index > 0:
        reason += f" (step {index} passed)"  # the evidence is in the transition's judgement
    route = route_of(state, spec, step.weight)
    return change(
        state,
        now=now,
        reason=reason,
        actor=actor,
        judgement=judgement,
        gate=checked,
        phase=Phase.CANARY,
        step=index,
        weight=step.weight,
        step_started_at=now,
        step_start_candidate_requests=candidate_requests,
        route=route,
    )


def _enter_shadow(state: RolloutState, spec: RolloutSpec, *, now: float) -> Outcome:
    shadow = spec.spec.traffic.shadow
    assert shadow is not None
    reason = (
        f"shadow: the candidate predicts {shadow.sample:.0%} of the baseline's requests off the response path "
        f"for {shadow.duration:g}s, serving no one"
    )
    return change(
        state,
        now=now,
        reason=reason,
        actor=CONTROLLER,
        phase=Phase.SHADOW,
        weight=0.0,
        step_started_at=now,
        route=route_of(state, spec, 0.0),
    )


def _gate(
    state: RolloutState,
    spec: RolloutSpec,
    gate: Gate,
    gates: Mapping[Gate, GateDecision],
    *,
    now: float,
    judgement: Judgement | None,
    command: bool,
) -> Outcome | GateDecision | None:
    """Crossing ``gate``: None when it has no policies, the decision when they allow, and otherwise
    the outcome to return: a question for the caller, or the denial (held, rolled back, refused)."""
    if not spec.spec.gates.policies(gate.value):
        return None
    decision = gates.get(gate)
    if decision is None:
        return Outcome(state=state, asks=gate)
    if decision.allowed:
        return decision
    if command:
        raise PolicyDenied(gate.value, [(denial.policy, denial.message) for denial in decision.denials])
    if spec.spec.gates.on_deny == "rollback":
        if state.phase in (Phase.PENDING, Phase.SHADOW):  # denied its first step: it never served: aborted
            reason = f"aborted at the {decision.summary()}"
            baseline = Route(endpoint=state.endpoint, baseline=state.baseline)  # a shadow's route comes down too
            return change(
                state, now=now, reason=reason, actor=CONTROLLER, gate=decision, phase=Phase.ABORTED, route=baseline
            )
        return roll_back(state, spec, now=now, reason=decision.summary(), judgement=judgement, gate=decision)
    if state.gate_hold == decision.summary():
        return Outcome(state=state)  # held for the same reasons as at the last tick: nothing new to record
    return change(
        state,
        now=now,
        reason=f"held at the {decision.summary()}",
        actor=CONTROLLER,
        judgement=judgement,
        gate=decision,
        gate_hold=decision.summary(),
    )
