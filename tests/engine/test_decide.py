"""The transition function, driven with hand-built judgements and a hand-moved clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcanary.domain.errors import Conflict
from modelcanary.domain.judgement import Judgement, MetricJudgement, Verdict
from modelcanary.domain.phases import TRANSITIONS, Phase
from modelcanary.domain.spec import RolloutSpec, load_spec
from modelcanary.domain.state import Action, ActionKind, ModelVersion, Outcome, RolloutState, Route, Transition
from modelcanary.domain.traffic import CircuitBreaker, Step, StickyKey
from modelcanary.engine.decide import Command, apply_command, decide, new_state
from modelcanary.engine.outcomes import CONTROLLER, ROLLBACK_TAG

BASELINE = ModelVersion(name="fraud", version="1")
CANDIDATE = ModelVersion(name="fraud", version="2")
T0 = 1_000.0  # the clock when the rollout is created

# step 1: 5% for 60-600 s and 100 requests; step 2: 25% for 30-300 s and 50; step 3: 100% for 10-100 s and 10
STEPS = [
    {"weight": 5, "minRequests": 100, "minDuration": "60s", "maxDuration": "10m"},
    {"weight": 25, "minRequests": 50, "minDuration": 30, "maxDuration": 300},
    {"weight": 100, "minRequests": 10, "minDuration": 10, "maxDuration": 100},
]


def make_spec(
    *,
    steps: list[dict[str, Any]] | None = None,
    on_timeout: str | None = None,
    set_alias: str | None = "champion",
    tag_version: bool | None = None,
    notify: list[dict[str, str]] | None = None,
) -> RolloutSpec:
    traffic: dict[str, Any] = {"steps": steps or STEPS, "stickyKey": {"header": "x-user-id"}}
    if on_timeout:
        traffic["onTimeout"] = on_timeout
    body: dict[str, Any] = {
        "endpoint": "fraud",
        "baseline": "models:/fraud@champion",
        "candidate": "models:/fraud@challenger",
        "traffic": traffic,
        "analysis": {"metrics": [{"kind": "error_rate"}, {"kind": "latency"}]},
    }
    if set_alias:
        body["onSuccess"] = {"setAlias": set_alias}
    if tag_version is not None:
        body["onFailure"] = {"tagVersion": tag_version}
    if notify is not None:
        body["notify"] = notify
    document = {"apiVersion": "modelcanary/v1", "kind": "Rollout", "metadata": {"name": "fraud-2"}, "spec": body}
    return load_spec(json.dumps(document))  # JSON is YAML


SPEC = make_spec()


def judged(*verdicts: Verdict) -> Judgement:
    """One metric per verdict, named after its position and verdict (``m0-pass``)."""
    return Judgement(
        judge="threshold",
        metrics=tuple(
            MetricJudgement(
                name=f"m{index}-{verdict.value}",
                kind="error_rate",
                verdict=verdict,
                baseline=0.01,
                candidate=0.05 if verdict is Verdict.FAIL else 0.01,
                limit=0.02,
                baseline_samples=1000,
                candidate_samples=1000,
                reason=f"says {verdict.value}",
            )
            for index, verdict in enumerate(verdicts)
        ),
    )


PASS = judged(Verdict.PASS, Verdict.PASS)


def pending(spec: RolloutSpec = SPEC) -> RolloutState:
    return new_state(spec, rollout_id="r1", baseline=BASELINE, candidate=CANDIDATE, now=T0)


def at_step(index: int, *, spec: RolloutSpec = SPEC, started: float = T0, requests: int = 1000) -> RolloutState:
    """A canary rollout that entered step ``index`` at ``started`` with ``requests`` candidate requests so far."""
    step = spec.spec.traffic.steps[index]
    assert isinstance(step, Step)
    weight = step.weight
    return pending(spec).model_copy(
        update={
            "phase": Phase.CANARY,
            "step": index,
            "weight": weight,
            "step_started_at": started,
            "step_start_candidate_requests": requests,
        }
    )


def assert_unchanged(outcome: Outcome, state: RolloutState) -> None:
    assert outcome == Outcome(state=state)
    assert outcome.transition is None and outcome.route is None and outcome.actions == ()


# --- new_state and the first tick -----------------------------------------------------------------------------------


def test_new_state() -> None:
    state = pending()
    assert (state.id, state.name, state.endpoint) == ("r1", "fraud-2", "fraud")
    assert (state.phase, state.paused, state.step, state.weight) == (Phase.PENDING, False, -1, 0.0)
    assert (state.baseline, state.candidate) == (BASELINE, CANDIDATE)
    assert (state.created_at, state.updated_at, state.version) == (T0, T0, 0)
    assert state.reason == "waiting for the controller"


def test_pending_enters_step_zero() -> None:
    outcome = decide(pending(), SPEC, judgement=None, candidate_requests=17, now=T0 + 2)
    state = outcome.state
    assert (state.phase, state.step, state.weight, state.paused) == (Phase.CANARY, 0, 5.0, False)
    assert (state.step_started_at, state.step_start_candidate_requests) == (T0 + 2, 17)
    assert state.reason == "step 1 of 3: candidate at 5%"
    assert state.updated_at == T0 + 2
    assert outcome.route == Route(
        endpoint="fraud",
        baseline=BASELINE,
        candidate=CANDIDATE,
        weight=5.0,
        rollout_id="r1",
        sticky=StickyKey(header="x-user-id"),
        breaker=CircuitBreaker(),
    )
    transition = outcome.transition
    assert transition is not None
    assert (transition.source, transition.target, transition.step, transition.weight) == (
        Phase.PENDING,
        Phase.CANARY,
        0,
        5.0,
    )
    assert (transition.at, transition.actor, transition.paused, transition.judgement) == (
        T0 + 2,
        CONTROLLER,
        False,
        None,
    )
    assert transition.reason == "step 1 of 3: candidate at 5%"
    assert outcome.actions == ()


# --- holding ---------------------------------------------------------------------------------------------------------


def test_hold_until_min_duration() -> None:
    state = at_step(0)
    assert_unchanged(decide(state, SPEC, judgement=PASS, candidate_requests=100_000, now=T0 + 59.9), state)
    assert decide(state, SPEC, judgement=PASS, candidate_requests=100_000, now=T0 + 60).state.step == 1


def test_min_requests_count_from_the_start_of_the_step() -> None:
    state = at_step(0, requests=1000)  # 1000 candidate requests before the step began
    # 1099 cumulative is far above minRequests, but only 99 were served in this step
    assert_unchanged(decide(state, SPEC, judgement=PASS, candidate_requests=1099, now=T0 + 120), state)
    assert decide(state, SPEC, judgement=PASS, candidate_requests=1100, now=T0 + 120).state.step == 1


@pytest.mark.parametrize(
    "verdicts",
    [
        (Verdict.NO_DATA,),
        (Verdict.INCONCLUSIVE,),
        (Verdict.PASS, Verdict.NO_DATA),
        (Verdict.INCONCLUSIVE, Verdict.PASS),
        (Verdict.NO_DATA, Verdict.INCONCLUSIVE),
        (),  # a judgement with no metrics has no data
    ],
)
def test_no_data_or_inconclusive_never_advances(verdicts: tuple[Verdict, ...]) -> None:
    state = at_step(0)
    # both minimums met, well inside maxDuration
    assert_unchanged(decide(state, SPEC, judgement=judged(*verdicts), candidate_requests=50_000, now=T0 + 300), state)


def test_no_judgement_in_canary_holds() -> None:
    state = at_step(0)
    assert_unchanged(decide(state, SPEC, judgement=None, candidate_requests=50_000, now=T0 + 300), state)


# --- advancing and promoting ----------------------------------------------------------------------------------------


def test_advance_when_pass_and_both_minimums_met() -> None:
    state = at_step(0, requests=1000)
    outcome = decide(state, SPEC, judgement=PASS, candidate_requests=1100, now=T0 + 60)
    new = outcome.state
    assert (new.phase, new.step, new.weight) == (Phase.CANARY, 1, 25.0)
    assert (new.step_started_at, new.step_start_candidate_requests) == (T0 + 60, 1100)
    assert new.reason == "step 2 of 3: candidate at 25% (step 1 passed)"
    assert outcome.route is not None
    assert (outcome.route.weight, outcome.route.candidate, outcome.route.baseline) == (25.0, CANDIDATE, BASELINE)
    transition = outcome.transition
    assert transition is not None
    assert (transition.source, transition.target, transition.step, transition.weight) == (
        Phase.CANARY,
        Phase.CANARY,
        1,
        25.0,
    )
    assert (transition.actor, transition.reason) == (CONTROLLER, "step 2 of 3: candidate at 25% (step 1 passed)")
    assert transition.judgement == PASS.model_dump(mode="json")
    assert outcome.actions == ()


def test_walk_through_every_step_to_promotion() -> None:
    state = decide(pending(), SPEC, judgement=None, candidate_requests=0, now=T0).state
    now, requests, weights = T0, 0, [state.weight]
    while not state.phase.is_terminal():
        now, requests = now + 60, requests + 100
        state = decide(state, SPEC, judgement=PASS, candidate_requests=requests, now=now).state
        weights.append(state.weight)
    assert state.phase is Phase.PROMOTED
    assert weights == [5.0, 25.0, 100.0, 100.0]


def test_promote_after_the_last_step() -> None:
    state = at_step(2)
    outcome = decide(state, SPEC, judgement=PASS, candidate_requests=1010, now=T0 + 10)
    new = outcome.state
    assert (new.phase, new.weight, new.step) == (Phase.PROMOTED, 100.0, 2)
    assert new.reason == "promoted: every step passed"
    # the candidate is the endpoint's baseline now, alone
    assert outcome.route == Route(endpoint="fraud", baseline=CANDIDATE)
    assert outcome.actions == (
        Action(
            kind=ActionKind.SET_ALIAS,
            payload={"name": "fraud", "alias": "champion", "version": "2"},
            key="r1:set_alias:champion",
        ),
    )
    transition = outcome.transition
    assert transition is not None
    assert (transition.source, transition.target, transition.actor) == (Phase.CANARY, Phase.PROMOTED, CONTROLLER)
    assert transition.reason == "promoted: every step passed"
    assert transition.judgement == PASS.model_dump(mode="json")


def test_promote_without_set_alias_has_no_action() -> None:
    spec = make_spec(set_alias=None)
    outcome = decide(at_step(2, spec=spec), spec, judgement=PASS, candidate_requests=1010, now=T0 + 10)
    assert outcome.state.phase is Phase.PROMOTED
    assert outcome.actions == ()


def test_single_step_spec_promotes_from_its_only_step() -> None:
    spec = make_spec(steps=[{"weight": 100, "minRequests": 0, "minDuration": 0}])
    state = decide(pending(spec), spec, judgement=None, candidate_requests=0, now=T0).state
    assert (state.phase, state.step, state.weight) == (Phase.CANARY, 0, 100.0)
    assert decide(state, spec, judgement=PASS, candidate_requests=0, now=T0).state.phase is Phase.PROMOTED


# --- rolling back ----------------------------------------------------------------------------------------------------


def test_a_remote_candidate_rolls_back_with_no_registry_tag() -> None:
    remote = ModelVersion(name="fraud", version="", ref="v2+http://10.0.0.7:8000/models/fraud")
    state = at_step(1).model_copy(update={"candidate": remote})
    outcome = decide(state, SPEC, judgement=judged(Verdict.FAIL), candidate_requests=1000, now=T0)
    assert outcome.state.phase is Phase.ROLLED_BACK and outcome.actions == ()


@pytest.mark.parametrize("elapsed", [0.0, 59.0, 599.0])
def test_any_failing_metric_rolls_back_at_once(elapsed: float) -> None:
    state = at_step(1)
    judgement = judged(Verdict.PASS, Verdict.FAIL)
    outcome = decide(state, SPEC, judgement=judgement, candidate_requests=1000, now=T0 + elapsed)
    new = outcome.state
    reason = "rolled back: m1-fail failed: says fail"
    assert (new.phase, new.weight, new.step, new.reason) == (Phase.ROLLED_BACK, 0.0, 1, reason)
    assert outcome.route == Route(endpoint="fraud", baseline=BASELINE)
    assert outcome.route.weight == 0.0 and outcome.route.candidate is None
    assert outcome.actions == (
        Action(
            kind=ActionKind.TAG_VERSION,
            payload={
                "name": "fraud",
                "version": "2",
                "tag": ROLLBACK_TAG,
                "value": "rollout r1: m1-fail failed: says fail",
            },
            key="r1:tag",
        ),
    )
    transition = outcome.transition
    assert transition is not None
    assert (transition.source, transition.target, transition.weight, transition.actor) == (
        Phase.CANARY,
        Phase.ROLLED_BACK,
        0.0,
        CONTROLLER,
    )
    assert transition.reason == reason
    assert transition.judgement == judgement.model_dump(mode="json")


def test_every_failing_metric_is_named() -> None:
    judgement = judged(Verdict.FAIL, Verdict.NO_DATA, Verdict.FAIL)
    outcome = decide(at_step(0), SPEC, judgement=judgement, candidate_requests=1000, now=T0 + 1)
    assert outcome.state.reason == "rolled back: m0-fail failed: says fail; m2-fail failed: says fail"


def test_rollback_without_tag_version_has_no_action() -> None:
    spec = make_spec(tag_version=False)
    outcome = decide(at_step(0, spec=spec), spec, judgement=judged(Verdict.FAIL), candidate_requests=1000, now=T0 + 1)
    assert outcome.state.phase is Phase.ROLLED_BACK
    assert outcome.actions == ()


@pytest.mark.parametrize("verdict", [Verdict.NO_DATA, Verdict.INCONCLUSIVE, Verdict.PASS])
def test_max_duration_without_a_pass_rolls_back(verdict: Verdict) -> None:
    state = at_step(0, requests=1000)
    # PASS counts as "without a pass" too while minRequests is not met: 40 of 100
    judgement = judged(verdict)
    outcome = decide(state, SPEC, judgement=judgement, candidate_requests=1040, now=T0 + 600)
    why = (
        "step 1 reached its maxDuration of 600s without a pass "
        f"(40 of 100 candidate requests; m0-{verdict.value}: says {verdict.value})"
    )
    assert outcome.state.phase is Phase.ROLLED_BACK
    assert outcome.state.reason == f"rolled back: {why}"
    assert outcome.route == Route(endpoint="fraud", baseline=BASELINE)
    assert outcome.actions[0].payload["value"] == f"rollout r1: {why}"
    assert outcome.transition is not None and outcome.transition.target is Phase.ROLLED_BACK


def test_just_before_max_duration_holds() -> None:
    state = at_step(0)
    assert_unchanged(
        decide(state, SPEC, judgement=judged(Verdict.NO_DATA), candidate_requests=5000, now=T0 + 599.9), state
    )


def test_a_pass_at_max_duration_with_minimums_met_advances() -> None:
    outcome = decide(at_step(0), SPEC, judgement=PASS, candidate_requests=2000, now=T0 + 600)
    assert (outcome.state.phase, outcome.state.step) == (Phase.CANARY, 1)


def in_place(outcome: Outcome, *, paused: bool, actor: str, reason: str) -> Transition:
    """The outcome's transition, asserted to keep the rollout in its canary phase, as said."""
    transition = outcome.transition
    assert transition is not None
    assert (transition.source, transition.target, transition.paused, transition.actor, transition.reason) == (
        Phase.CANARY,
        Phase.CANARY,
        paused,
        actor,
        reason,
    )
    return transition


def test_timeout_with_on_timeout_pause_waits_for_a_human() -> None:
    spec = make_spec(on_timeout="pause")
    state = at_step(0, spec=spec, requests=1000)
    outcome = decide(state, spec, judgement=judged(Verdict.INCONCLUSIVE), candidate_requests=1040, now=T0 + 700)
    new = outcome.state
    reason = (
        "paused for a human: step 1 reached its maxDuration of 600s without a pass "
        "(40 of 100 candidate requests; m0-inconclusive: says inconclusive)"
    )
    assert (new.phase, new.paused, new.step, new.weight, new.reason) == (Phase.CANARY, True, 0, 5.0, reason)
    assert new.step_started_at == T0  # the step's clock keeps running until someone resumes
    assert outcome.route is None and outcome.actions == ()
    in_place(outcome, paused=True, actor=CONTROLLER, reason=reason)
    # and then it stays put unless a metric fails
    for judgement in (PASS, judged(Verdict.NO_DATA), judged(Verdict.INCONCLUSIVE)):
        assert_unchanged(decide(new, spec, judgement=judgement, candidate_requests=9999, now=T0 + 5000), new)
    failed = decide(new, spec, judgement=judged(Verdict.FAIL), candidate_requests=9999, now=T0 + 5000)
    assert failed.state.phase is Phase.ROLLED_BACK


def test_timeout_with_on_timeout_hold_records_the_hold_once_and_notifies_it() -> None:
    """A hold at maxDuration changed nothing visible: the reason still read "step 1 of 3: candidate at
    5%", with no transition (so no audit event) and no notification, where pause and rollback had all
    three."""
    spec = make_spec(on_timeout="hold", notify=[{"url": "http://hooks.example/x"}])
    state = at_step(0, spec=spec, requests=1000)
    outcome = decide(state, spec, judgement=judged(Verdict.INCONCLUSIVE), candidate_requests=1040, now=T0 + 700)
    held = outcome.state
    reason = (
        "held: step 1 reached its maxDuration of 600s without a pass "
        "(40 of 100 candidate requests; m0-inconclusive: says inconclusive); "
        "judging on at 5% until a pass, a failure or an operator decides"
    )
    assert (held.phase, held.paused, held.step, held.weight, held.reason) == (Phase.CANARY, False, 0, 5.0, reason)
    assert held.timeout_hold and held.step_started_at == T0
    transition = in_place(outcome, paused=False, actor=CONTROLLER, reason=reason)
    assert transition.judgement is not None and outcome.route is None
    (notice,) = outcome.actions
    assert notice.kind is ActionKind.NOTIFY and json.loads(notice.payload["body"])["reason"] == reason
    # once: the ticks after it, however the inconclusive evidence reads, record nothing more
    for judgement in (judged(Verdict.NO_DATA), judged(Verdict.INCONCLUSIVE)):
        assert_unchanged(decide(held, spec, judgement=judgement, candidate_requests=1090, now=T0 + 5000), held)


def test_a_rollout_held_at_its_timeout_still_moves_on_a_pass_or_rolls_back_on_a_failure() -> None:
    spec = make_spec(on_timeout="hold")
    timed_out = at_step(0, spec=spec, requests=1000)
    held = decide(timed_out, spec, judgement=judged(Verdict.NO_DATA), candidate_requests=1040, now=T0 + 600).state
    assert held.timeout_hold
    moved = decide(held, spec, judgement=PASS, candidate_requests=1100, now=T0 + 900).state
    assert (moved.phase, moved.step, moved.weight, moved.timeout_hold) == (Phase.CANARY, 1, 25.0, False)
    failed = decide(held, spec, judgement=judged(Verdict.FAIL), candidate_requests=1100, now=T0 + 900).state
    assert (failed.phase, failed.timeout_hold) == (Phase.ROLLED_BACK, False)
    # a pause and a resume restart the step's clock: its next timeout is a new hold, recorded again
    paused = apply_command(held, spec, Command.PAUSE, actor="alice", now=T0 + 700).state
    resumed = apply_command(paused, spec, Command.RESUME, actor="alice", now=T0 + 800).state
    assert not resumed.timeout_hold
    again = decide(resumed, spec, judgement=judged(Verdict.NO_DATA), candidate_requests=1050, now=T0 + 1400)
    assert again.transition is not None and again.state.timeout_hold


# --- paused rollouts and operator commands ---------------------------------------------------------------------------


@pytest.mark.parametrize("verdicts", [(Verdict.PASS,), (Verdict.NO_DATA,), (Verdict.INCONCLUSIVE,)])
@pytest.mark.parametrize("elapsed", [100.0, 10_000.0])  # past minDuration; past maxDuration
def test_paused_rollouts_never_advance_or_time_out(verdicts: tuple[Verdict, ...], elapsed: float) -> None:
    state = at_step(1).model_copy(update={"paused": True})
    assert_unchanged(
        decide(state, SPEC, judgement=judged(*verdicts), candidate_requests=99_999, now=T0 + elapsed), state
    )


def test_a_failing_metric_rolls_back_a_paused_rollout_too() -> None:
    """A pause stops the rollout advancing; it never keeps a failing candidate serving."""
    state = at_step(1).model_copy(update={"paused": True})
    outcome = decide(state, SPEC, judgement=judged(Verdict.FAIL), candidate_requests=99_999, now=T0 + 100)
    assert outcome.state.phase is Phase.ROLLED_BACK
    assert outcome.route is not None and outcome.route.candidate is None


def test_a_paused_pending_rollout_does_not_start() -> None:
    paused = apply_command(pending(), SPEC, Command.PAUSE, actor="alice", now=T0 + 1).state
    assert (paused.phase, paused.paused) == (Phase.PENDING, True)
    assert_unchanged(decide(paused, SPEC, judgement=None, candidate_requests=0, now=T0 + 2), paused)


def test_pause() -> None:
    state = at_step(1)
    outcome = apply_command(state, SPEC, Command.PAUSE, actor="alice", now=T0 + 5)
    new = outcome.state
    assert (new.phase, new.paused, new.step, new.weight) == (Phase.CANARY, True, 1, 25.0)
    assert (new.reason, new.updated_at, new.step_started_at) == ("paused by alice", T0 + 5, T0)
    assert outcome.route is None and outcome.actions == ()
    transition = in_place(outcome, paused=True, actor="alice", reason="paused by alice")
    assert (transition.at, transition.step, transition.weight, transition.judgement) == (T0 + 5, 1, 25.0, None)


def test_resume_restarts_the_step_clock() -> None:
    spec = make_spec(on_timeout="pause")
    timed_out = decide(
        at_step(0, spec=spec), spec, judgement=judged(Verdict.NO_DATA), candidate_requests=1000, now=T0 + 600
    ).state
    assert timed_out.paused
    outcome = apply_command(timed_out, spec, Command.RESUME, actor="bob", now=T0 + 900)
    resumed = outcome.state
    assert (resumed.phase, resumed.paused, resumed.step, resumed.weight) == (Phase.CANARY, False, 0, 5.0)
    assert (resumed.step_started_at, resumed.step_start_candidate_requests) == (T0 + 900, 1000)
    assert resumed.reason == "resumed by bob"
    assert outcome.route is None and outcome.actions == ()
    in_place(outcome, paused=False, actor="bob", reason="resumed by bob")
    # a fresh maxDuration from the resume: no timeout at resume + 599 s, a timeout at resume + 600 s
    assert_unchanged(
        decide(resumed, spec, judgement=judged(Verdict.NO_DATA), candidate_requests=1000, now=T0 + 1499), resumed
    )
    assert decide(resumed, spec, judgement=judged(Verdict.NO_DATA), candidate_requests=1000, now=T0 + 1500).state.paused


@pytest.mark.parametrize(
    "state",
    [pending(), at_step(1), at_step(0).model_copy(update={"paused": True})],
    ids=["pending", "canary", "paused"],
)
def test_abort(state: RolloutState) -> None:
    outcome = apply_command(state, SPEC, Command.ABORT, actor="carol", now=T0 + 7)
    new = outcome.state
    assert (new.phase, new.weight, new.reason, new.updated_at) == (Phase.ABORTED, 0.0, "aborted by carol", T0 + 7)
    assert outcome.route == Route(endpoint="fraud", baseline=BASELINE)
    assert outcome.actions == ()
    transition = outcome.transition
    assert transition is not None
    assert (transition.source, transition.target, transition.weight, transition.actor, transition.reason) == (
        state.phase,
        Phase.ABORTED,
        0.0,
        "carol",
        "aborted by carol",
    )


def test_pausing_twice_or_resuming_a_running_rollout_conflicts() -> None:
    running = at_step(1)
    with pytest.raises(Conflict, match="is not paused"):
        apply_command(running, SPEC, Command.RESUME, actor="alice", now=T0 + 1)
    paused = apply_command(running, SPEC, Command.PAUSE, actor="alice", now=T0 + 1).state
    with pytest.raises(Conflict, match="already paused"):
        apply_command(paused, SPEC, Command.PAUSE, actor="alice", now=T0 + 2)


@pytest.mark.parametrize("phase", [Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED])
@pytest.mark.parametrize("command", list(Command))
def test_commands_on_ended_rollouts_conflict(phase: Phase, command: Command) -> None:
    ended = at_step(2).model_copy(update={"phase": phase})
    with pytest.raises(Conflict, match=rf"^rollout r1 has ended \({phase.value}\); it cannot be {command.participle}$"):
        apply_command(ended, SPEC, command, actor="alice", now=T0 + 1)


@pytest.mark.parametrize("phase", [Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED])
@pytest.mark.parametrize("verdict", list(Verdict))
def test_ended_rollouts_never_move(phase: Phase, verdict: Verdict) -> None:
    ended = at_step(2).model_copy(update={"phase": phase})
    assert_unchanged(decide(ended, SPEC, judgement=judged(verdict), candidate_requests=99_999, now=T0 + 99_999), ended)


def test_a_step_that_began_at_time_zero_still_ages() -> None:
    created = new_state(SPEC, rollout_id="r1", baseline=BASELINE, candidate=CANDIDATE, now=0.0)  # a clock from 0
    state = decide(created, SPEC, judgement=None, candidate_requests=0, now=0.0).state
    assert state.step_started_at == 0.0
    assert decide(state, SPEC, judgement=PASS, candidate_requests=1000, now=60.0).state.step == 1


# --- property: whatever happens, the table holds ---------------------------------------------------------------------

verdict_lists = st.lists(st.sampled_from(list(Verdict)), min_size=0, max_size=3)
moves = st.lists(
    st.one_of(
        st.tuples(
            st.just("tick"),
            st.one_of(st.none(), verdict_lists),
            st.integers(min_value=0, max_value=200),  # new candidate requests
            st.floats(min_value=0, max_value=400, allow_nan=False),  # clock advance
        ),
        st.tuples(st.just("command"), st.sampled_from(list(Command)), st.just(0), st.floats(0, 400)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(moves, st.sampled_from(["rollback", "pause"]))
def test_phases_follow_the_table_and_weight_only_rises_in_canary(
    sequence: list[tuple[str, Any, int, float]], on_timeout: str
) -> None:
    spec = make_spec(on_timeout=on_timeout)
    state, now, requests = pending(spec), T0, 0
    for kind, what, more, later in sequence:
        now, requests = now + later, requests + more
        if kind == "tick":
            judgement = None if what is None else judged(*what)
            outcome = decide(state, spec, judgement=judgement, candidate_requests=requests, now=now)
        else:
            try:
                outcome = apply_command(state, spec, what, actor="op", now=now)
            except Conflict:
                assert (
                    state.phase.is_terminal()
                    or (what is Command.PAUSE and state.paused)
                    or (what is Command.RESUME and not state.paused)
                    or (what is Command.PROMOTE and state.phase is Phase.PENDING)
                    or (what is Command.APPROVE and state.phase is not Phase.AWAITING_APPROVAL)
                )
                continue
        new = outcome.state
        assert new.phase is state.phase or new.phase in TRANSITIONS[state.phase]
        if state.phase is Phase.CANARY and new.phase is Phase.CANARY:
            assert new.weight >= state.weight
        if outcome.transition is None:
            assert new == state and outcome.route is None and outcome.actions == ()
        else:
            t = outcome.transition
            assert (t.source, t.target, t.step, t.weight, t.paused, t.at) == (
                state.phase,
                new.phase,
                new.step,
                new.weight,
                new.paused,
                now,
            )
            assert t.reason == new.reason
        if new.phase in (Phase.ROLLED_BACK, Phase.ABORTED):
            assert new.weight == 0.0
        state = new


# --- promote and approve ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
def test_promote_now_from_any_step(paused: bool) -> None:
    state = at_step(0).model_copy(update={"paused": paused})
    outcome = apply_command(state, SPEC, Command.PROMOTE, actor="dave", now=T0 + 3)
    assert (outcome.state.phase, outcome.state.weight, outcome.state.reason) == (
        Phase.PROMOTED,
        100.0,
        "promoted by dave",
    )
    assert outcome.route == Route(endpoint="fraud", baseline=CANDIDATE)
    assert [action.kind for action in outcome.actions] == [ActionKind.SET_ALIAS]
    assert outcome.transition is not None and outcome.transition.actor == "dave"


def test_a_pending_rollout_cannot_be_promoted() -> None:
    with pytest.raises(Conflict, match="not started"):
        apply_command(pending(), SPEC, Command.PROMOTE, actor="dave", now=T0 + 1)


def test_approve_lets_a_waiting_rollout_into_its_next_step() -> None:
    waiting = at_step(0).model_copy(update={"phase": Phase.AWAITING_APPROVAL})
    outcome = apply_command(waiting, SPEC, Command.APPROVE, actor="erin", now=T0 + 70, candidate_requests=1234)
    new = outcome.state
    assert (new.phase, new.step, new.weight, new.step_started_at) == (Phase.CANARY, 1, 25.0, T0 + 70)
    assert new.step_start_candidate_requests == 1234  # the next step's minRequests count from here
    assert new.reason.startswith("approved by erin: step 2 of 3")
    assert outcome.route is not None and outcome.route.weight == 25.0
    assert outcome.transition is not None
    assert (outcome.transition.source, outcome.transition.actor) == (Phase.AWAITING_APPROVAL, "erin")


def test_approve_after_the_last_step_promotes() -> None:
    waiting = at_step(2).model_copy(update={"phase": Phase.AWAITING_APPROVAL})
    outcome = apply_command(waiting, SPEC, Command.APPROVE, actor="erin", now=T0 + 70)
    assert outcome.state.phase is Phase.PROMOTED
    assert outcome.state.reason == "approved by erin: promoted"


def test_approve_needs_a_rollout_awaiting_approval() -> None:
    with pytest.raises(Conflict, match="canary, not awaiting approval"):
        apply_command(at_step(1), SPEC, Command.APPROVE, actor="erin", now=T0 + 1)
