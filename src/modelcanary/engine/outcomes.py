"""The outcomes a decision comes to, described and never performed: a transition with its reason and
actor, the route it publishes, and the side effects it implies (move an alias on promotion, tag the
version on a rollback, a webhook per phase change). ``decide`` chooses; these say what the choice
means, one function each.
"""

from __future__ import annotations

import json

from modelcanary.domain.gates import GateDecision
from modelcanary.domain.judgement import Judgement
from modelcanary.domain.metrics import QualityMetric
from modelcanary.domain.phases import Phase, check_transition
from modelcanary.domain.spec import RolloutSpec
from modelcanary.domain.state import Action, ActionKind, Outcome, RolloutState, Route, Transition

CONTROLLER = "controller"
ROLLBACK_TAG = "modelcanary.rollback_reason"


def route_of(state: RolloutState, spec: RolloutSpec, weight: float) -> Route:
    """The route of a rollout that has the candidate loaded: in shadow (weight 0) or at a step."""
    traffic = spec.spec.traffic
    return Route(
        endpoint=state.endpoint,
        baseline=state.baseline,
        candidate=state.candidate,
        weight=weight,
        rollout_id=state.id,
        sticky=traffic.sticky_key,
        breaker=traffic.circuit_breaker,
        segments=tuple(traffic.segments),
        candidate_segments=tuple(traffic.candidate_segments) if traffic.candidate_segments is not None else None,
        cache=traffic.cache,
        batching=traffic.batching,
        shadow=traffic.shadow,
        label_maturity_s=max(
            (metric.mature_after for metric in spec.spec.analysis.metrics if isinstance(metric, QualityMetric)),
            default=0.0,
        ),
    )


def promote(
    state: RolloutState,
    spec: RolloutSpec,
    *,
    now: float,
    judgement: Judgement | None = None,
    reason: str = "promoted: every step passed",
    actor: str = CONTROLLER,
    gate: GateDecision | None = None,
) -> Outcome:
    actions: tuple[Action, ...] = ()
    alias = spec.spec.on_success.set_alias
    if alias and state.candidate.in_registry:
        payload = {"name": state.candidate.name, "alias": alias, "version": state.candidate.version}
        actions = (Action(kind=ActionKind.SET_ALIAS, payload=payload, key=f"{state.id}:set_alias:{alias}"),)
    return change(
        state,
        now=now,
        reason=reason,
        actor=actor,
        judgement=judgement,
        gate=gate,
        phase=Phase.PROMOTED,
        weight=100.0,
        route=Route(endpoint=state.endpoint, baseline=state.candidate),
        actions=actions,
    )


def roll_back(
    state: RolloutState,
    spec: RolloutSpec,
    *,
    now: float,
    reason: str,
    judgement: Judgement | None,
    gate: GateDecision | None = None,
) -> Outcome:
    actions: tuple[Action, ...] = ()
    if spec.spec.on_failure.tag_version and state.candidate.in_registry:  # a remote model has no version to tag
        payload = {
            "name": state.candidate.name,
            "version": state.candidate.version,
            "tag": ROLLBACK_TAG,
            "value": f"rollout {state.id}: {reason}",
        }
        actions = (Action(kind=ActionKind.TAG_VERSION, payload=payload, key=f"{state.id}:tag"),)
    return change(
        state,
        now=now,
        reason=f"rolled back: {reason}",
        actor=CONTROLLER,
        judgement=judgement,
        gate=gate,
        phase=Phase.ROLLED_BACK,
        weight=0.0,
        route=Route(endpoint=state.endpoint, baseline=state.baseline),
        actions=actions,
    )


def change(
    state: RolloutState,
    *,
    now: float,
    reason: str,
    actor: str,
    judgement: Judgement | None = None,
    gate: GateDecision | None = None,
    route: Route | None = None,
    actions: tuple[Action, ...] = (),
    **updates: object,
) -> Outcome:
    target = updates.get("phase", state.phase)
    assert isinstance(target, Phase)
    if target is not state.phase:
        check_transition(state.phase, target)
    # any other change ends a hold; a new one records itself again
    updates.setdefault("gate_hold", "")
    updates.setdefault("timeout_hold", False)
    updates.setdefault("error_hold", "")
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
        gate=gate.model_dump(mode="json") if gate else None,
    )
    return Outcome(state=new, transition=transition, route=route, actions=actions)


def failing(state: RolloutState, spec: RolloutSpec | None, failure: str, where: str, *, now: float) -> Outcome | None:
    """Deciding ``state`` raised ``failure`` (its type and message) ``where`` (a file and line): a
    hold, recorded (audited, and sent to the notify webhooks) once for each new failure, not at
    every tick, so that it does not wait unseen in a log. Deciding is tried again every tick. ``spec``
    is None when it is the saved spec that no longer loads: then nobody can be notified."""
    hold = f"{failure.partition(':')[0]} at {where}"
    if state.error_hold == hold:
        return None
    reason = f"held: deciding it failed at {where}: {_shortened(failure)}; the controller tries again every tick"
    outcome = change(state, now=now, reason=reason, actor=CONTROLLER, error_hold=hold)
    return notified(state, spec, outcome) if spec is not None else outcome


ERROR_HOLD_KEPT_S = 60.0  # a failure's hold is on the record at least this long (see ``decided_again``)


def decided_again(state: RolloutState, outcome: Outcome | None, *, now: float) -> Outcome | None:
    """``outcome`` of a rollout decided once more: where a failure held it (``failing``) and the
    outcome records no change of its own (which ends the hold), the hold's end is recorded, once
    the hold has been on the record ``ERROR_HOLD_KEPT_S``: a failure that comes and goes from tick
    to tick then records at most a hold and its end a minute, not two transitions a second."""
    if not state.error_hold or (outcome is not None and outcome.transition is not None):
        return outcome
    if now - state.updated_at < ERROR_HOLD_KEPT_S:
        return outcome
    decided = outcome.state if outcome is not None else state
    return change(decided, now=now, reason=f"decided again: no longer held by {state.error_hold}", actor=CONTROLLER)


def _shortened(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut at ``limit`` characters (the log has the whole of it)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def notified(state: RolloutState, spec: RolloutSpec, outcome: Outcome) -> Outcome:
    """``outcome`` with a webhook action per ``notify`` target when its phase or step changed, it
    was paused or resumed, or it came to a hold, at a step's maxDuration or at a gate for new
    reasons (a pause for a human at a step's or an approval's timeout must reach one, and a hold
    waits for the same human). The body is made here, once, so every retry sends the same bytes;
    its key (the rollout and the version the change is saved as) lets a receiver drop a repeat."""
    new, transition = outcome.state, outcome.transition
    held = (
        (new.timeout_hold and not state.timeout_hold)
        or new.gate_hold not in ("", state.gate_hold)
        or new.error_hold not in ("", state.error_hold)
    )
    moved = held or (new.phase, new.step, new.paused) != (state.phase, state.step, state.paused)
    if not spec.spec.notify or transition is None or not moved:
        return outcome
    key = f"{state.id}:v{state.version + 1}"
    event = {
        "key": key,
        "rollout": {"id": state.id, "name": state.name, "endpoint": state.endpoint},
        "baseline": state.baseline.uri,
        "candidate": state.candidate.uri,
        **transition.model_dump(mode="json", exclude={"judgement", "gate"}),
    }
    text = (
        f"modelcanary: rollout {state.name} on {state.endpoint} ({state.candidate.uri}) "
        f"{transition.source.value} -> {transition.target.value}: {transition.reason}"
    )
    actions = [
        Action(
            kind=ActionKind.NOTIFY,
            payload={
                "url": target.url or "",
                "url_env": target.url_env or "",
                "secret_env": target.secret_env or "",
                "key": key,
                "body": json.dumps({"text": text} if target.format == "slack" else event, sort_keys=True),
            },
            key=f"{key}:notify:{index}",
        )
        for index, target in enumerate(spec.spec.notify)
    ]
    return outcome.model_copy(update={"actions": (*outcome.actions, *actions)})
