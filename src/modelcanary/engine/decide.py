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

from modelcanary.domain.errors import Conflict
from modelcanary.domain.judgement import Judgement, Verdict
from modelcanary.domain.phases import Phase, check_transition
from modelcanary.domain.spec import RolloutSpec
from modelcanary.domain.state import Action, ActionKind, ModelVersion, Outcome, RolloutState, Route, Transition

CONTROLLER = "controller"
ROLLBACK_TAG = "modelcanary.rollback_reason"


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
    state: RolloutState, spec: RolloutSpec, *, judgement: Judgement | None, candidate_requests: int, now: float
) -> Outcome:
    """One controller tick. ``candidate_requests`` is the candidate's cumulative request count."""
    if state.phase is Phase.PENDING and not state.paused:
        return _enter_step(state, spec, 0, now=now, candidate_requests=candidate_requests, judgement=None)
    if state.phase is not Phase.CANARY or judgement is None:
        return Outcome(state=state)
    failing = judgement.failing()
    if failing:  # a pause stops the rollout advancing, never its protection
        why = "; ".join(f"{metric.name} failed: {metric.reason}" for metric in failing)
        return _roll_back(state, spec, now=now, reason=why, judgement=judgement)
    if state.paused:
        return Outcome(state=state)
    step = spec.spec.traffic.steps[state.step]
    elapsed = 0.0 if state.step_started_at is None else now - state.step_started_at
    served = candidate_requests - state.step_start_candidate_requests
    if judgement.verdict is Verdict.PASS and elapsed >= step.min_duration and served >= step.min_requests:
        if state.step + 1 == len(spec.spec.traffic.steps):
            return _promote(state, spec, now=now, judgement=judgement)
        return _enter_step(
            state, spec, state.step + 1, now=now, candidate_requests=candidate_requests, judgement=judgement
        )
    if elapsed >= step.max_duration:
        why = (
            f"step {state.step + 1} reached its maxDuration of {step.max_duration:g}s without a pass "
            f"({served} of {step.min_requests} candidate requests; {judgement.summary()})"
        )
        if spec.spec.traffic.on_timeout == "rollback":
            return _roll_back(state, spec, now=now, reason=why, judgement=judgement)
        if spec.spec.traffic.on_timeout == "hold":
            return Outcome(state=state)  # keep judging at this weight until evidence or an operator decides
        return _change(
            state, now=now, reason=f"paused for a human: {why}", actor=CONTROLLER, judgement=judgement, paused=True
        )
    return Outcome(state=state)


def apply_command(
    state: RolloutState, spec: RolloutSpec, command: Command, *, actor: str, now: float, candidate_requests: int = 0
) -> Outcome:
    """An operator's pause, resume, abort, promote or approve. Raises ``Conflict`` when the rollout
    has ended or the command does not fit its phase. ``candidate_requests`` (cumulative) starts
    the count of the step an approval lets the rollout into."""
    if state.phase.is_terminal():
        raise Conflict(f"rollout {state.id} has ended ({state.phase.value}); it cannot be {command.participle}")
    if command is Command.PROMOTE:
        if state.phase is Phase.PENDING:
            raise Conflict(f"rollout {state.id} has not started yet; it cannot be promoted")
        return _promote(state, spec, now=now, reason=f"promoted by {actor}", actor=actor)
    if command is Command.APPROVE:
        if state.phase is not Phase.AWAITING_APPROVAL:
            raise Conflict(f"rollout {state.id} is {state.phase.value}, not awaiting approval")
        if state.step + 1 == len(spec.spec.traffic.steps):
            return _promote(state, spec, now=now, reason=f"approved by {actor}: promoted", actor=actor)
        outcome = _enter_step(
            state, spec, state.step + 1, now=now, candidate_requests=candidate_requests, judgement=None
        )
        reason = f"approved by {actor}: {outcome.state.reason}"
        assert outcome.transition is not None
        return outcome.model_copy(
            update={
                "state": outcome.state.model_copy(update={"reason": reason}),
                "transition": outcome.transition.model_copy(update={"reason": reason, "actor": actor}),
            }
        )
    if command is Command.ABORT:
        return _change(
            state,
            now=now,
            reason=f"aborted by {actor}",
            actor=actor,
            phase=Phase.ABORTED,
            weight=0.0,
            route=Route(endpoint=state.endpoint, baseline=state.baseline),
        )
    if command is Command.PAUSE:
        if state.paused:
            raise Conflict(f"rollout {state.id} is already paused")
        return _change(state, now=now, reason=f"paused by {actor}", actor=actor, paused=True)
    if not state.paused:
        raise Conflict(f"rollout {state.id} is not paused")
    # Resuming restarts the step's clock, so a step that timed out gets a fresh maxDuration.
    return _change(state, now=now, reason=f"resumed by {actor}", actor=actor, paused=False, step_started_at=now)


def _enter_step(
    state: RolloutState,
    spec: RolloutSpec,
    index: int,
    *,
    now: float,
    candidate_requests: int,
    judgement: Judgement | None,
) -> Outcome:
    step = spec.spec.traffic.steps[index]
    check_transition(state.phase, Phase.CANARY)
    reason = f"step {index + 1} of {len(spec.spec.traffic.steps)}: candidate at {step.weight:g}%"
    if judgement is not None:
        reason += f" (step {index} passed)"  # the evidence is in the transition's judgement
    route = Route(
        endpoint=state.endpoint,
        baseline=state.baseline,
        candidate=state.candidate,
        weight=step.weight,
        rollout_id=state.id,
        sticky=spec.spec.traffic.sticky_key,
    )
    return _change(
        state,
        now=now,
        reason=reason,
        actor=CONTROLLER,
        judgement=judgement,
        phase=Phase.CANARY,
        step=index,
        weight=step.weight,
        step_started_at=now,
        step_start_candidate_requests=candidate_requests,
        route=route,
    )


def _promote(
    state: RolloutState,
    spec: RolloutSpec,
    *,
    now: float,
    judgement: Judgement | None = None,
    reason: str = "promoted: every step passed",
    actor: str = CONTROLLER,
) -> Outcome:
    actions: tuple[Action, ...] = ()
    alias = spec.spec.on_success.set_alias
    if alias and state.candidate.in_registry:
        payload = {"name": state.candidate.name, "alias": alias, "version": state.candidate.version}
        actions = (Action(kind=ActionKind.SET_ALIAS, payload=payload, key=f"{state.id}:set_alias:{alias}"),)
    return _change(
        state,
        now=now,
        reason=reason,
        actor=actor,
        judgement=judgement,
        phase=Phase.PROMOTED,
        weight=100.0,
        route=Route(endpoint=state.endpoint, baseline=state.candidate),
        actions=actions,
    )


def _roll_back(state: RolloutState, spec: RolloutSpec, *, now: float, reason: str, judgement: Judgement) -> Outcome:
    actions: tuple[Action, ...] = ()
    if spec.spec.on_failure.tag_version and state.candidate.in_registry:  # a remote model has no version to tag
        payload = {
            "name": state.candidate.name,
            "version": state.candidate.version,
            "tag": ROLLBACK_TAG,
            "value": f"rollout {state.id}: {reason}",
        }
        actions = (Action(kind=ActionKind.TAG_VERSION, payload=payload, key=f"{state.id}:tag"),)
    return _change(
        state,
        now=now,
        reason=f"rolled back: {reason}",
        actor=CONTROLLER,
        judgement=judgement,
        phase=Phase.ROLLED_BACK,
        weight=0.0,
        route=Route(endpoint=state.endpoint, baseline=state.baseline),
        actions=actions,
    )


def _change(
    state: RolloutState,
    *,
    now: float,
    reason: str,
    actor: str,
    judgement: Judgement | None = None,
    route: Route | None = None,
    actions: tuple[Action, ...] = (),
    **updates: object,
) -> Outcome:
    target = updates.get("phase", state.phase)
    assert isinstance(target, Phase)
    if target is not state.phase:
        check_transition(state.phase, target)
    new = state.model_copy(update={**updates, "reason": reason, "updated_at": now})
    transition = Transition(
        at=now,
        source=state.phase,
        target=new.phase,
        step=new.step,
        weight=new.weight,
        paused=new.paused,
        reason=reason,
        actor=actor,
        judgement=judgement.model_dump(mode="json") if judgement else None,
    )
    return Outcome(state=new, transition=transition, route=route, actions=actions)
