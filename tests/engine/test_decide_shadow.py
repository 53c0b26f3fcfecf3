"""The shadow phase: pending -> shadow (candidate loaded at weight 0 with its shadow lane) -> the
first step once the shadow duration is up, through the one transition table; and the routes the
decisions publish carrying the spec's other data-plane settings."""

from __future__ import annotations

import pytest

from modelcanary.domain.errors import Conflict
from modelcanary.domain.judgement import Judgement, MetricJudgement, Verdict
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import load_spec
from modelcanary.domain.state import ModelVersion, RolloutState
from modelcanary.domain.traffic import Batching, Shadow
from modelcanary.engine.decide import Command, apply_command, decide, new_state

TEXT = """\
apiVersion: modelcanary/v1
kind: Rollout
spec:
  endpoint: fraud
  baseline: models:/fraud@champion
  candidate: models:/fraud/2
  traffic:
    shadow: {sample: 0.2, duration: 5m}
    steps: [{weight: 5}, {weight: 50}]
  analysis: {metrics: [{kind: error_rate}]}
"""
SPEC = load_spec(TEXT)
T0 = 1_000.0


def _pending() -> RolloutState:
    return new_state(
        SPEC,
        rollout_id="r1",
        baseline=ModelVersion(name="fraud", version="1"),
        candidate=ModelVersion(name="fraud", version="2"),
        now=T0,
    )


def _shadowing() -> RolloutState:
    return decide(_pending(), SPEC, judgement=None, candidate_requests=0, now=T0 + 1).state


def test_pending_enters_shadow_with_the_candidate_loaded_at_weight_zero() -> None:
    outcome = decide(_pending(), SPEC, judgement=None, candidate_requests=0, now=T0 + 1)
    assert (outcome.state.phase, outcome.state.weight, outcome.state.step) == (Phase.SHADOW, 0.0, -1)
    assert outcome.state.step_started_at == T0 + 1
    assert outcome.state.reason.startswith("shadow: the candidate predicts 20% of the baseline's requests")
    route = outcome.route
    assert route is not None
    assert (route.weight, route.rollout_id, route.candidate) == (0.0, "r1", ModelVersion(name="fraud", version="2"))
    assert route.shadow == Shadow(sample=0.2, duration=300.0)
    assert outcome.transition is not None and outcome.transition.target is Phase.SHADOW


def test_shadow_holds_until_its_duration_is_up_then_enters_the_first_step() -> None:
    state = _shadowing()
    assert decide(state, SPEC, judgement=None, candidate_requests=0, now=T0 + 300).transition is None
    outcome = decide(state, SPEC, judgement=None, candidate_requests=0, now=T0 + 301)
    assert (outcome.state.phase, outcome.state.step, outcome.state.weight) == (Phase.CANARY, 0, 5.0)
    assert outcome.route is not None and outcome.route.shadow == Shadow(sample=0.2, duration=300.0)


def test_a_candidate_failing_in_shadow_is_rolled_back_before_it_serves_anyone() -> None:
    failed = MetricJudgement(
        name="error-rate",
        kind="error_rate",
        verdict=Verdict.FAIL,
        baseline=0.01,
        candidate=0.2,
        limit=0.01,
        baseline_samples=5000,
        candidate_samples=0,
        reason="evidence of a regression",
    )
    judgement = Judgement(judge="sequential", metrics=(failed,))
    outcome = decide(_shadowing(), SPEC, judgement=judgement, candidate_requests=0, now=T0 + 60)
    assert outcome.state.phase is Phase.ROLLED_BACK
    assert outcome.state.reason == "rolled back: in shadow: error-rate failed: evidence of a regression"
    assert outcome.route is not None and outcome.route.candidate is None  # the lane comes down too
    passing = judgement.model_copy(update={"metrics": (failed.model_copy(update={"verdict": Verdict.NO_DATA}),)})
    assert decide(_shadowing(), SPEC, judgement=passing, candidate_requests=0, now=T0 + 60).transition is None


def test_a_paused_shadow_does_not_move_on_and_resuming_restarts_its_clock() -> None:
    paused = apply_command(_shadowing(), SPEC, Command.PAUSE, actor="op", now=T0 + 10).state
    assert decide(paused, SPEC, judgement=None, candidate_requests=0, now=T0 + 1000).transition is None
    resumed = apply_command(paused, SPEC, Command.RESUME, actor="op", now=T0 + 1000).state
    assert resumed.phase is Phase.SHADOW
    assert decide(resumed, SPEC, judgement=None, candidate_requests=0, now=T0 + 1200).transition is None
    assert decide(resumed, SPEC, judgement=None, candidate_requests=0, now=T0 + 1300).state.phase is Phase.CANARY


def test_an_operator_may_promote_or_abort_a_shadow_but_not_approve_it() -> None:
    state = _shadowing()
    assert apply_command(state, SPEC, Command.PROMOTE, actor="op", now=T0 + 2).state.phase is Phase.PROMOTED
    assert apply_command(state, SPEC, Command.ABORT, actor="op", now=T0 + 2).state.phase is Phase.ABORTED
    with pytest.raises(Conflict):
        apply_command(state, SPEC, Command.APPROVE, actor="op", now=T0 + 2)


def test_without_a_duration_the_shadow_lane_runs_beside_the_steps() -> None:
    traffic = SPEC.spec.traffic.model_copy(update={"shadow": Shadow(sample=0.2)})
    spec = SPEC.model_copy(update={"spec": SPEC.spec.model_copy(update={"traffic": traffic})})
    outcome = decide(_pending(), spec, judgement=None, candidate_requests=0, now=T0 + 1)
    assert (outcome.state.phase, outcome.state.weight) == (Phase.CANARY, 5.0)
    assert outcome.route is not None and outcome.route.shadow == Shadow(sample=0.2)


def test_the_route_carries_the_specs_batching_and_cache() -> None:
    settings = "    batching: {maxBatchSize: 16, variants: [candidate]}\n    cache: {maxEntries: 100}\n"
    spec = load_spec(TEXT.replace("    shadow: {sample: 0.2, duration: 5m}\n", settings))
    pending = new_state(
        spec,
        rollout_id="r2",
        baseline=ModelVersion(name="fraud", version="1"),
        candidate=ModelVersion(name="fraud", version="2"),
        now=T0,
    )
    route = decide(pending, spec, judgement=None, candidate_requests=0, now=T0 + 1).route
    assert route is not None and route.weight == 5.0
    assert route.batching == Batching(max_batch_size=16, variants=["candidate"])
    assert route.cache is not None and route.cache.max_entries == 100
