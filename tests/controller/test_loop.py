"""The control loop on a real SQLite store, with an in-memory registry and a hand-moved clock:
start, advance, roll back, promote, retry side effects, obey operators, lose races gracefully."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from modelcanary.adapters.store.schema import actions as actions_table
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.adapters.testing import FakeRegistry
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import run_command, start_rollout
from modelcanary.controller.report import rollout_report
from modelcanary.controller.shards import Shards, shard_of
from modelcanary.domain.errors import Conflict, RegistryError, SpecError
from modelcanary.domain.judgement import Verdict
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import load_spec
from modelcanary.domain.state import RolloutState
from modelcanary.domain.telemetry import Variant, VariantTelemetry
from modelcanary.engine.decide import Command
from modelcanary.engine.outcomes import ERROR_HOLD_KEPT_S, ROLLBACK_TAG
from modelcanary.judges.sample_ratio import SRM_SETTLE_S

T0 = 10_000.0
# the earliest look the judge bets on after a warm_up at T0 + 1 (where in_canary starts step 1)
SETTLED = T0 + 1 + SRM_SETTLE_S
STEPS = [
    {"weight": 10, "minRequests": 50, "minDuration": "60s", "maxDuration": "10m"},
    {"weight": 50, "minRequests": 50, "minDuration": "60s", "maxDuration": "10m"},
]


def spec_text(*, endpoint: str = "fraud", candidate: str | None = None, set_alias: str | None = "champion") -> str:
    body: dict[str, Any] = {
        "endpoint": endpoint,
        "baseline": f"models:/{endpoint}@champion",
        "candidate": candidate or f"models:/{endpoint}@challenger",
        "traffic": {"steps": STEPS, "stickyKey": {"header": "x-user-id"}},
        "analysis": {
            "metrics": [
                {"kind": "error_rate", "margin": 0.05, "minRequests": 50},
                {"kind": "quality", "name": "accuracy", "measure": "accuracy", "margin": 0.1, "minLabels": 50},
            ]
        },
        "onFailure": {"tagVersion": True},
    }
    if set_alias:
        body["onSuccess"] = {"setAlias": set_alias}
    document = {"apiVersion": "modelcanary/v1", "kind": "Rollout", "metadata": {"name": f"{endpoint}-v2"}, "spec": body}
    return json.dumps(document, indent=2)  # JSON is YAML


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def registry() -> FakeRegistry:
    return FakeRegistry(
        {"fraud": ["1", "2"], "churn": ["1", "2"]},
        {
            ("fraud", "champion"): "1",
            ("fraud", "challenger"): "2",
            ("churn", "champion"): "1",
            ("churn", "challenger"): "2",
        },
    )


def counts(requests: int, *, errors: int = 0, correct: int = 0, wrong: int = 0) -> VariantTelemetry:
    """Cumulative counts: ``requests`` requests, and ``correct + wrong`` labelled predictions, half of
    each positive, scored 0.9 for a positive guess and 0.1 for a negative one."""
    telemetry = VariantTelemetry()
    for index in range(requests):
        telemetry.observe(latency_ms=5.0, error=index < errors)
    for index in range(correct + wrong):
        label = index % 2
        guess = label if index < correct else 1 - label
        telemetry.observe_label(bucket=telemetry.observe_score(0.9 if guess else 0.1), label=label)
    return telemetry


def report(
    store: SqlStore, rollout_id: str, *, baseline: VariantTelemetry, candidate: VariantTelemetry, source: str = "gw-1"
) -> None:
    store.write_telemetry(
        source, [(rollout_id, Variant.BASELINE, baseline), (rollout_id, Variant.CANDIDATE, candidate)]
    )


def warm_up(store: SqlStore, controller: Controller, rollout_id: str) -> None:
    """One look with a little data: the sequential judge tests an absolute margin against the
    baseline's rate as it stood before each interval, so it needs a look with baseline data first.
    It bets on none of this look's counts (with no memory, they may span weights it did not see),
    nor on a look in the ``SRM_SETTLE_S`` after it: a decisive look comes that long after, or later."""
    report(store, rollout_id, baseline=counts(1000, correct=450, wrong=50), candidate=counts(20, correct=9, wrong=1))
    assert controller.tick() == []


def good(store: SqlStore, rollout_id: str, candidate_requests: int = 600) -> None:
    """Telemetry on which the candidate is as good as the baseline (90% accurate, no errors), with
    enough of it for the sequential judge's confidence bounds to fit within the margins. They read
    the looks after a warm_up alone: of these 3000 baseline requests and 1500 labels, 2000 and 1000."""
    report(
        store,
        rollout_id,
        baseline=counts(3000, correct=1350, wrong=150),
        candidate=counts(candidate_requests, correct=450, wrong=50),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def fake_registry() -> FakeRegistry:
    return registry()


@pytest.fixture
def controller(store: SqlStore, fake_registry: FakeRegistry, clock: Clock) -> Controller:
    return Controller(store=store, registry=fake_registry, clock=clock)


def start(
    store: SqlStore,
    fake_registry: FakeRegistry,
    clock: Clock,
    *,
    endpoint: str = "fraud",
    set_alias: str | None = "champion",
) -> RolloutState:
    return start_rollout(
        store,
        fake_registry,
        spec_text(endpoint=endpoint, set_alias=set_alias),
        source="test",
        actor="alice",
        now=clock.now,
    )


def in_canary(controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock) -> RolloutState:
    """A rollout at step 1 (10%), entered at ``T0 + 1``."""
    state = start(store, fake_registry, clock)
    clock.now = T0 + 1
    (entered,) = controller.tick()
    assert (entered.id, entered.phase, entered.step) == (state.id, Phase.CANARY, 0)
    return entered


def current(store: SqlStore, rollout_id: str) -> RolloutState:
    return store.get(rollout_id)[0]


def action_rows(store: SqlStore) -> list[tuple[int, str | None, bool]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(actions_table).order_by(actions_table.c.id))
        return [(row.attempts, row.last_error, row.done_at is not None) for row in rows]


# -- the happy path -------------------------------------------------------------------------------


def test_a_started_rollout_enters_its_first_step_and_publishes_a_route(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    state = start(store, fake_registry, clock)
    assert state.phase is Phase.PENDING
    assert (state.baseline.version, state.candidate.version) == ("1", "2")  # aliases resolved at start
    assert store.routes() == {}

    clock.now = T0 + 1
    (entered,) = controller.tick()
    assert entered.phase is Phase.CANARY
    assert (entered.step, entered.weight, entered.step_started_at) == (0, 10.0, T0 + 1)
    route = store.routes()["fraud"]
    assert (route.baseline.version, route.candidate and route.candidate.version) == ("1", "2")
    assert (route.weight, route.rollout_id) == (10.0, state.id)
    assert route.sticky is not None and route.sticky.header == "x-user-id"
    assert [(t.source, t.target) for t in store.history(state.id)] == [(Phase.PENDING, Phase.CANARY)]
    assert [e["action"] for e in store.audit_events(state.id)] == ["rollout.create", "rollout.canary"]

    # nothing new: no save, no history
    assert controller.tick() == []
    assert current(store, state.id).version == entered.version


def test_a_passing_step_advances_after_its_min_duration(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    state = in_canary(controller, store, fake_registry, clock)
    warm_up(store, controller, state.id)
    # two gateway replicas, each with half the traffic: only their sum has enough to judge (the
    # warm-up's counts are not judged on: the bounds read the looks after it)
    half = {"baseline": counts(1800, correct=450, wrong=50), "candidate": counts(250, correct=225, wrong=25)}
    report(store, state.id, baseline=half["baseline"], candidate=half["candidate"], source="gw-a")
    clock.now = T0 + 30
    assert controller.tick() == []  # one replica's counts, and the step's minDuration (60 s) has not passed
    clock.now = T0 + 62
    assert controller.tick() == []  # 250 candidate requests and labels each: too few to show it within margin
    report(store, state.id, baseline=half["baseline"], candidate=half["candidate"], source="gw-b")

    (advanced,) = controller.tick()
    assert (advanced.phase, advanced.step, advanced.weight) == (Phase.CANARY, 1, 50.0)
    assert advanced.step_start_candidate_requests == 520  # the warm-up look (20) and both replicas (250 each)
    assert store.routes()["fraud"].weight == 50.0
    last = store.history(state.id)[-1]
    assert last.judgement is not None
    assert {metric["name"]: metric["verdict"] for metric in last.judgement["metrics"]} == {
        "error-rate": Verdict.PASS.value,
        "accuracy": Verdict.PASS.value,
        "sample-ratio": Verdict.PASS.value,  # off under sticky routing, and the judgement says so
    }


def test_every_step_passing_promotes_and_moves_the_alias(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    state = in_canary(controller, store, fake_registry, clock)
    warm_up(store, controller, state.id)
    good(store, state.id, candidate_requests=600)
    clock.now = T0 + 62
    (step_two,) = controller.tick()
    assert step_two.step == 1
    clock.now = T0 + 130
    assert controller.tick() == []  # no new candidate requests in this step yet
    good(store, state.id, candidate_requests=660)

    (promoted,) = controller.tick()
    assert promoted.phase is Phase.PROMOTED
    assert fake_registry.aliases[("fraud", "champion")] == "2"
    assert store.pending_actions() == []
    assert action_rows(store) == [(1, None, True)]
    route = store.routes()["fraud"]
    assert (route.baseline.version, route.candidate, route.rollout_id) == ("2", None, None)
    assert store.list_rollouts(active=True) == []
    assert controller.tick() == []


def test_failing_quality_rolls_back_and_tags_the_candidate(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    state = in_canary(controller, store, fake_registry, clock)
    warm_up(store, controller, state.id)
    report(
        store, state.id, baseline=counts(2000, correct=900, wrong=100), candidate=counts(500, correct=250, wrong=250)
    )
    clock.now = SETTLED  # a failure needs no minDuration

    (rolled_back,) = controller.tick()
    assert rolled_back.phase is Phase.ROLLED_BACK
    assert "accuracy failed" in rolled_back.reason
    tag = fake_registry.tags[("fraud", "2")][ROLLBACK_TAG]
    assert state.id in tag and "accuracy" in tag
    assert ("fraud", "1") not in fake_registry.tags
    assert store.pending_actions() == []
    assert action_rows(store) == [(1, None, True)]
    route = store.routes()["fraud"]
    assert (route.baseline.version, route.candidate, route.weight, route.rollout_id) == ("1", None, 0.0, None)
    assert store.list_rollouts(active=True) == []


def test_a_step_that_never_passes_rolls_back_at_its_max_duration(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    state = in_canary(controller, store, fake_registry, clock)
    report(store, state.id, baseline=counts(200), candidate=counts(10))  # too little to judge
    clock.now = T0 + 599
    assert controller.tick() == []
    clock.now = T0 + 601
    (rolled_back,) = controller.tick()
    assert rolled_back.phase is Phase.ROLLED_BACK
    assert "maxDuration" in rolled_back.reason


# -- side effects ---------------------------------------------------------------------------------


class FlakyRegistry(FakeRegistry):
    """Refuses the first ``failures`` calls that change something, as a registry that is down would."""

    def __init__(self, failures: int) -> None:
        fake = registry()
        super().__init__(fake.versions, fake.aliases)
        self.failures = failures

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise RegistryError("registry unavailable (503)")

    def set_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._maybe_fail()
        super().set_tag(name, version, key, value)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._maybe_fail()
        super().set_alias(name, alias, version)


def test_a_failed_action_stays_pending_and_runs_on_the_next_tick(store: SqlStore, clock: Clock) -> None:
    flaky = FlakyRegistry(failures=1)
    controller = Controller(store=store, registry=flaky, clock=clock)
    state = in_canary(controller, store, flaky, clock)
    warm_up(store, controller, state.id)
    report(
        store, state.id, baseline=counts(2000, correct=900, wrong=100), candidate=counts(500, correct=250, wrong=250)
    )
    clock.now = SETTLED

    (rolled_back,) = controller.tick()  # the decision is saved although its side effect failed
    assert rolled_back.phase is Phase.ROLLED_BACK
    assert flaky.tags == {}
    assert len(store.pending_actions()) == 1
    assert action_rows(store) == [(1, "registry unavailable (503)", False)]

    assert controller.tick() == [] and flaky.tags == {}  # backing off: not again at once
    clock.now += 1
    assert controller.tick() == []  # nothing to decide, but the action is retried
    assert ROLLBACK_TAG in flaky.tags[("fraud", "2")]
    assert store.pending_actions() == []
    assert action_rows(store) == [(2, None, True)]


class BrokenRegistry(FakeRegistry):
    """Raises an error that is not modelcanary's (a client library's bug, say) on its first tag."""

    def __init__(self) -> None:
        fake = registry()
        super().__init__(fake.versions, fake.aliases)
        self.broken = True

    def set_tag(self, name: str, version: str, key: str, value: str) -> None:
        if self.broken:
            self.broken = False
            raise RuntimeError("the registry client tripped over its own feet")
        super().set_tag(name, version, key, value)


def both_failing(controller: Controller, store: SqlStore, fake: FakeRegistry, clock: Clock) -> list[RolloutState]:
    """fraud and churn in canary, with telemetry on which both roll back at the next tick."""
    states = [start(store, fake, clock), start(store, fake, clock, endpoint="churn")]
    clock.now = T0 + 1
    assert len(controller.tick()) == 2
    for state in states:
        warm_up(store, controller, state.id)
    for state in states:
        bad = counts(500, correct=250, wrong=250)
        report(store, state.id, baseline=counts(2000, correct=900, wrong=100), candidate=bad)
    clock.now = SETTLED
    return states


def test_of_two_pending_moves_of_one_alias_only_the_newest_is_made(store: SqlStore, clock: Clock) -> None:
    """fraud v2 is promoted while the registry is down, then v3 over it. Each move backed off on its
    own, so the older, retried later, put @champion back on v2 once the registry was back."""
    down = FlakyRegistry(failures=1_000)
    down.versions["fraud"].append("3")
    controller = Controller(store=store, registry=down, clock=clock, retry_backoff_s=8)
    first = start(store, down, clock)
    controller.tick()
    run_command(store, first.id, Command.PROMOTE, actor="alice")  # @champion -> 2, pending
    controller.run_actions()  # fails: the next try is 8 s away
    clock.now += 5
    text = spec_text(candidate="models:/fraud/3").replace('"models:/fraud@champion"', '"models:/fraud/2"')
    second = start_rollout(store, down, text, source="test", actor="alice", now=clock.now)
    controller.tick()
    run_command(store, second.id, Command.PROMOTE, actor="alice")  # @champion -> 3, pending
    down.failures = 0  # the registry is back
    controller.run_actions()
    clock.now += 20
    controller.run_actions()
    assert down.aliases[("fraud", "champion")] == "3" and store.pending_actions() == []
    failed = [event for event in store.audit_events() if event["action"] == "action.failed"]
    assert [event["detail"]["key"] for event in failed] == [f"{first.id}:set_alias:champion"]
    assert failed[0]["detail"]["error"].startswith("superseded: a later promotion moves fraud@champion")


def test_an_alias_move_audits_what_the_alias_named_before_so_an_overwritten_hand_move_shows(
    store: SqlStore, fake_registry: FakeRegistry, controller: Controller, clock: Clock
) -> None:
    """Someone moves @champion by hand mid-rollout (an emergency revert, say); the promotion moves
    it to the candidate all the same, and its audit event said only where to: now also from where."""
    state = start(store, fake_registry, clock)
    controller.tick()
    fake_registry.versions["fraud"].append("3")
    fake_registry.set_alias("fraud", "champion", "3")  # by hand
    run_command(store, state.id, Command.PROMOTE, actor="alice")
    controller.run_actions()
    (done,) = [event for event in store.audit_events() if event["action"] == "action.done"]
    assert done["detail"]["payload"]["version"] == "2" and done["detail"]["before"] == "3"
    assert fake_registry.aliases[("fraud", "champion")] == "2"


def test_a_promotion_whose_version_was_deleted_gives_up_its_alias_move_and_the_endpoint_starts_again(
    store: SqlStore, fake_registry: FakeRegistry, controller: Controller, clock: Clock
) -> None:
    """fraud v2 is deleted from the registry while its rollout is promoted: the alias move can never
    be made. It was retried for ever, unaudited, and the endpoint, serving v2, refused every new
    rollout (from @champion, still v1: 'the move may be pending'; from v2: no such version)."""
    state = start(store, fake_registry, clock)
    controller.tick()
    fake_registry.versions["fraud"].remove("2")
    run_command(store, state.id, Command.PROMOTE, actor="alice")
    controller.run_actions()
    assert store.pending_actions() == []
    (failed,) = [event for event in store.audit_events() if event["action"] == "action.failed"]
    assert (
        failed["detail"]["key"] == f"{state.id}:set_alias:champion"
        and "no such model version" in (failed["detail"]["error"])
    )
    assert fake_registry.aliases[("fraud", "champion")] == "1"
    assert store.routes()["fraud"].baseline.uri == "models:/fraud/2"  # served from the gateways' memory
    fake_registry.versions["fraud"].append("3")
    again = start_rollout(
        store, fake_registry, spec_text(candidate="models:/fraud/3"), source="test", actor="alice", now=clock.now
    )
    assert again.baseline.uri == "models:/fraud/1"


def test_an_action_raising_a_foreign_error_is_recorded_and_those_after_it_still_run(
    store: SqlStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    broken = BrokenRegistry()
    controller = Controller(store=store, registry=broken, clock=clock)
    both_failing(controller, store, broken, clock)

    with caplog.at_level(logging.WARNING, logger="modelcanary.controller"):
        assert {state.phase for state in controller.tick()} == {Phase.ROLLED_BACK}  # the tick goes on
    first, second = action_rows(store)
    assert first == (1, "RuntimeError: the registry client tripped over its own feet", False)  # kept for a retry
    assert second == (1, None, True)  # the action queued after it ran
    assert len(broken.tags) == 1
    (logged,) = [record for record in caplog.records if record.exc_info]
    assert "will retry: RuntimeError" in logged.getMessage()

    clock.now += 1
    assert controller.tick() == []
    assert action_rows(store) == [(2, None, True), (1, None, True)]
    assert len(broken.tags) == 2


# -- operators ------------------------------------------------------------------------------------


def test_pause_stops_advancing_and_resume_restarts_the_step_clock(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    state = in_canary(controller, store, fake_registry, clock)
    warm_up(store, controller, state.id)
    paused = run_command(store, state.id, Command.PAUSE, actor="bob", now=T0 + 2)
    assert paused.paused
    good(store, state.id)
    for at in (T0 + 62, T0 + 700):  # past minDuration, and past maxDuration: neither advance nor time out
        clock.now = at
        assert controller.tick() == []
    assert (current(store, state.id).step, current(store, state.id).paused) == (0, True)
    assert store.routes()["fraud"].weight == 10.0

    resumed = run_command(store, state.id, Command.RESUME, actor="bob", now=T0 + 700)
    assert not resumed.paused
    assert resumed.step_started_at == T0 + 700
    clock.now = T0 + 730
    assert controller.tick() == []  # the step's minDuration counts from the resume
    clock.now = T0 + 761
    (advanced,) = controller.tick()
    assert (advanced.step, advanced.paused) == (1, False)
    assert [t.actor for t in store.history(state.id)] == ["controller", "bob", "bob", "controller"]


def test_abort_ends_the_rollout_and_restores_the_baseline(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    state = in_canary(controller, store, fake_registry, clock)
    aborted = run_command(store, state.id, Command.ABORT, actor="bob", now=T0 + 3)
    assert aborted.phase is Phase.ABORTED
    assert store.routes()["fraud"].candidate is None
    assert controller.tick() == []
    with pytest.raises(Conflict):
        run_command(store, state.id, Command.RESUME, actor="bob", now=T0 + 4)


def test_a_rollout_paused_while_pending_stays_pending(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    state = start(store, fake_registry, clock)
    run_command(store, state.id, Command.PAUSE, actor="bob", now=T0)
    clock.now = T0 + 1
    assert controller.tick() == []
    assert current(store, state.id).phase is Phase.PENDING
    assert "fraud" not in store.routes()  # no candidate traffic while paused
    run_command(store, state.id, Command.RESUME, actor="bob", now=T0 + 2)
    clock.now = T0 + 3
    (entered,) = controller.tick()
    assert (entered.phase, entered.step) == (Phase.CANARY, 0)


def test_the_states_kept_between_ticks_are_the_stored_ones(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    """A tick does not read again the states it saved the tick before (their version holds), so what
    it keeps must be exactly what a fresh read gives, the judge's memory included; a rollout an
    operator saved in between is read again."""
    state = in_canary(controller, store, fake_registry, clock)
    warm_up(store, controller, state.id)
    good(store, state.id)
    clock.now = T0 + 30
    assert controller.tick() == []
    kept = controller._states[state.id]
    assert kept == current(store, state.id) and kept.judge_memory  # as a restarted controller would read it
    paused = run_command(store, state.id, Command.PAUSE, actor="bob", now=T0 + 31)
    good(store, state.id, candidate_requests=800)  # new data: the look is saved
    clock.now = T0 + 62  # past minDuration: the step would advance, were the pause not read
    assert controller.tick() == []
    assert controller._states[state.id] == current(store, state.id)
    assert current(store, state.id).version == paused.version + 1  # judged on the paused state, not the kept one
    assert (current(store, state.id).step, current(store, state.id).paused) == (0, True)


@pytest.mark.parametrize("enabled", [True, False])
def test_a_tick_leaves_the_cycle_collector_as_it_found_it(controller: Controller, enabled: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        controller.tick()
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


class RacingStore:
    """The store, with an operator pausing ``target`` right after the controller has read it."""

    def __init__(self, inner: SqlStore, target: str) -> None:
        self.inner = inner
        self.target: str | None = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_telemetry_many(self, rollout_ids: list[str]) -> dict[str, list[tuple[Variant, VariantTelemetry]]]:
        rows = self.inner.read_telemetry_many(rollout_ids)
        if self.target in rollout_ids:
            run_command(self.inner, self.target, Command.PAUSE, actor="bob")
            self.target = None
        return rows


def test_a_concurrent_save_makes_the_tick_skip_that_rollout(
    store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    plain = Controller(store=store, registry=fake_registry, clock=clock)
    fraud = in_canary(plain, store, fake_registry, clock)
    warm_up(store, plain, fraud.id)
    fraud = current(store, fraud.id)  # the look saved the judge's memory: a new version
    churn = start(store, fake_registry, clock, endpoint="churn")
    good(store, fraud.id)
    clock.now = T0 + 62  # fraud would advance, churn would start

    racing = Controller(store=RacingStore(store, fraud.id), registry=fake_registry, clock=clock)  # type: ignore[arg-type]
    changed = racing.tick()

    assert [state.id for state in changed] == [churn.id]  # the other rollout was not held up
    after = current(store, fraud.id)
    assert (after.step, after.paused, after.version) == (0, True, fraud.version + 1)  # the operator's write won
    assert store.history(fraud.id)[-1].actor == "bob"
    assert store.routes()["fraud"].weight == 10.0
    assert racing.tick() == []  # and on fresh state, the paused rollout holds


def test_a_rollout_saved_before_specs_were_kept_as_json_is_read_from_its_yaml(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    state = start(store, fake_registry, clock)
    older = state.model_copy(update={"id": "churn-old", "name": "churn-old", "endpoint": "churn"})
    store.create(older, spec_text(endpoint="churn"), actor="an older release")  # no spec_json
    clock.now = T0 + 1
    assert {s.id for s in controller.tick()} == {state.id, older.id}
    assert current(store, older.id).phase is Phase.CANARY


def test_one_broken_rollout_does_not_hold_the_others(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    fraud = start(store, fake_registry, clock)
    broken = fraud.model_copy(update={"id": "churn-old", "name": "churn-old", "endpoint": "churn"})
    store.create(broken, "apiVersion: modelcanary/v0\n", actor="an older release")  # no longer a valid spec
    clock.now = T0 + 1
    changed = controller.tick()
    assert sorted(state.id for state in changed) == [broken.id, fraud.id]
    held = current(store, broken.id)
    assert (held.phase, held.step) == (broken.phase, broken.step)  # held where it was: on the record, once
    assert held.reason.startswith("held: deciding it failed at modelcanary/domain/")
    assert "its saved spec no longer loads: invalid rollout spec" in held.reason
    assert [t.reason for t in store.history(broken.id)] == [held.reason]
    clock.now = T0 + 2
    controller.tick()
    assert current(store, broken.id).version == held.version  # the same failure: nothing new recorded


def test_a_rollout_whose_saved_spec_no_longer_loads_can_still_be_aborted_and_shown(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    """Held by the controller at its weight, it must not be stuck there: an abort needs nothing of
    the spec and takes the candidate out; other commands say why they cannot run, and what can;
    its report says why it is held. Commands read the saved JSON, as the controller does, not the
    YAML, which an older version may have accepted and this one refuses."""
    fraud = start(store, fake_registry, clock)
    broken = fraud.model_copy(update={"id": "churn-old", "name": "churn-old", "endpoint": "churn", "weight": 10.0})
    store.create(broken, "apiVersion: modelcanary/v0\n", actor="an older release")  # no longer a valid spec
    clock.now = T0 + 1
    controller.tick()
    with pytest.raises(SpecError, match="abort it, which needs none"):
        run_command(store, broken.id, Command.PAUSE, actor="ops", now=clock.now)
    assert (rollout_report(store, broken.id).judgement.hold or "").startswith("held: this version cannot read the spec")
    aborted = run_command(store, broken.id, Command.ABORT, actor="ops", now=clock.now, reason="stuck")
    assert (aborted.phase, aborted.weight, aborted.reason) == (Phase.ABORTED, 0.0, "aborted by ops: stuck")
    with pytest.raises(Conflict, match="has ended"):
        run_command(store, broken.id, Command.ABORT, actor="ops", now=clock.now)

    # a YAML this version refuses beside the JSON it saved: commands read the JSON
    with store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE rollouts SET spec = spec || 'late: [' WHERE id = :id"), {"id": fraud.id})
    with pytest.raises(SpecError):
        load_spec(store.get(fraud.id)[1])
    paused = run_command(store, fraud.id, Command.PAUSE, actor="ops", now=clock.now)
    assert paused.paused and rollout_report(store, fraud.id).judgement.hold is None


class Recording:
    """A notifier that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def deliver(self, payload: dict[str, str]) -> None:
        self.sent.append(json.loads(payload["body"]))


def test_a_rollout_whose_decision_raises_is_held_on_the_record_once_and_notified(
    store: SqlStore, fake_registry: FakeRegistry, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a rollout whose judge (or gate, or decision) raised was held for ever, in the log
    alone: its state, history, dashboard and webhooks said nothing, and its maxDuration never came."""
    notifier = Recording()
    controller = Controller(store=store, registry=fake_registry, clock=clock, notifier=notifier)
    document = json.loads(spec_text())
    document["spec"]["notify"] = [{"url": "http://hooks.example/modelcanary"}]
    state = start_rollout(store, fake_registry, json.dumps(document), source="test", actor="alice", now=clock.now)
    clock.now = T0 + 1
    controller.tick()  # into step 1

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr("modelcanary.controller.loop.analyse", broken)
    clock.now = T0 + 5
    (held,) = controller.tick()
    assert (held.phase, held.step, held.weight) == (Phase.CANARY, 0, 10.0)
    assert held.error_hold.startswith("ZeroDivisionError at modelcanary/controller/loop.py:")
    assert held.reason.startswith("held: deciding it failed at modelcanary/controller/loop.py:")
    assert "ZeroDivisionError: float division by zero" in held.reason
    assert notifier.sent[-1]["reason"] == held.reason
    audited = [event for event in store.audit_events(state.id) if event["action"].startswith("rollout.")][-1]
    assert (audited["action"], audited["actor"]) == ("rollout.canary", "controller")
    assert audited["detail"]["reason"] == held.reason
    sent = len(notifier.sent)
    for now in (T0 + 6, T0 + 30):  # the same failure: nothing new
        clock.now = now
        assert controller.tick() == []
    assert len(notifier.sent) == sent and current(store, state.id).version == held.version

    monkeypatch.undo()  # fixed: it is decided again, and that is recorded once the hold is a minute old
    clock.now = T0 + 31
    assert controller.tick() == [] and current(store, state.id).error_hold == held.error_hold
    clock.now = T0 + 5 + ERROR_HOLD_KEPT_S
    (again,) = controller.tick()
    assert (again.phase, again.step, again.error_hold) == (Phase.CANARY, 0, "")
    assert again.reason == f"decided again: no longer held by {held.error_hold}"
    assert notifier.sent[-1]["reason"] == held.reason  # a hold's end is on the record; nobody waits for it


# -- starting ---------------------------------------------------------------------------------------


def _nothing_saved(store: SqlStore) -> None:
    assert store.list_rollouts() == []
    assert store.audit_events() == []
    assert store.routes() == {}


def test_a_bad_spec_saves_nothing(store: SqlStore, fake_registry: FakeRegistry) -> None:
    broken = spec_text().replace('"weight": 50', '"weight": 5')  # weights must increase
    with pytest.raises(SpecError, match="weights must increase"):
        start_rollout(store, fake_registry, broken, source="bad.yaml", actor="alice", now=T0)
    with pytest.raises(SpecError):
        start_rollout(store, fake_registry, "spec: [", source="bad.yaml", actor="alice", now=T0)
    _nothing_saved(store)


@pytest.mark.parametrize("candidate", ["models:/nosuch@challenger", "models:/fraud/9", "models:/fraud@nosuch"])
def test_an_unknown_model_saves_nothing(store: SqlStore, fake_registry: FakeRegistry, candidate: str) -> None:
    with pytest.raises(RegistryError, match=candidate):
        start_rollout(store, fake_registry, spec_text(candidate=candidate), source="r.yaml", actor="alice", now=T0)
    _nothing_saved(store)


def test_a_second_rollout_on_a_busy_endpoint_saves_nothing(
    store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    first = start(store, fake_registry, clock)
    with pytest.raises(Conflict):
        start(store, fake_registry, clock)
    assert [state.id for state in store.list_rollouts()] == [first.id]
    assert len(store.audit_events()) == 1


def test_run_ticks_until_cancelled(
    controller: Controller, store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    state = start(store, fake_registry, clock)

    async def briefly() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(controller.run(interval_s=0.01), timeout=0.3)

    asyncio.run(briefly())
    assert current(store, state.id).phase is Phase.CANARY


def test_run_releases_the_lease_when_cancelled(store: SqlStore, fake_registry: FakeRegistry, clock: Clock) -> None:
    """``modelcanary serve`` runs the controller in its event loop: stopped, it hands the lease
    over at once, as ``modelcanary controller`` does, instead of leaving every rollout unjudged
    until the lease runs out."""
    leader = Controller(store=store, registry=fake_registry, clock=clock, holder="a", lease_ttl_s=60)

    async def briefly() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(leader.run(interval_s=0.01), timeout=0.3)

    asyncio.run(briefly())
    assert leader.fence is None
    assert store.acquire_lease("controller", "b", ttl_s=60, now=clock.now + 1) is not None


def test_run_counts_the_interval_from_each_ticks_start(controller: Controller, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tick taking 0.3 s leaves 0.7 s to wait, so every rollout is judged once a second, not once
    every 1.3 s; a tick longer than the interval is followed by the next at once."""
    now, waits = [0.0], []
    durations = iter([0.3, 1.4, 0.0])

    def tick() -> list[RolloutState]:
        now[0] += next(durations)
        return []

    async def sleep(seconds: float) -> None:
        waits.append(round(seconds, 9))
        now[0] += seconds
        if len(waits) == 3:
            raise asyncio.CancelledError

    monkeypatch.setattr(controller, "decide", tick)
    monkeypatch.setattr("modelcanary.controller.loop._monotonic", lambda: now[0])
    monkeypatch.setattr("modelcanary.controller.loop._sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(controller.run(interval_s=1.0))
    assert waits == [0.7, 0.0, 1.0]


def test_run_goes_on_ticking_after_an_error_that_is_not_modelcanarys(
    controller: Controller, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ticks: list[str] = []

    def tick() -> list[RolloutState]:
        ticks.append("tick")
        if len(ticks) == 1:
            raise KeyError("a bug")
        return []

    async def sleep(seconds: float) -> None:
        if len(ticks) == 2:
            raise asyncio.CancelledError

    monkeypatch.setattr(controller, "decide", tick)
    monkeypatch.setattr("modelcanary.controller.loop._sleep", sleep)
    with pytest.raises(asyncio.CancelledError), caplog.at_level(logging.ERROR, logger="modelcanary.controller"):
        asyncio.run(controller.run(interval_s=1.0))
    assert ticks == ["tick", "tick"]
    (logged,) = caplog.records
    assert logged.exc_info is not None and "KeyError: 'a bug'" in caplog.text  # with its traceback


def test_a_hanging_side_effect_does_not_delay_a_decision(store: SqlStore) -> None:
    """A promotion's alias move hangs in the registry; meanwhile ``run`` goes on deciding, and a
    rollout started then enters its first step. In the tick, the side effects ran after the
    decisions, so every rollout waited for the registry's timeout."""
    entered, release = threading.Event(), threading.Event()

    class HangingRegistry(FakeRegistry):
        def set_alias(self, name: str, alias: str, version: str) -> None:
            entered.set()
            release.wait(30)
            super().set_alias(name, alias, version)

    hanging = HangingRegistry(registry().versions, registry().aliases)
    controller = Controller(store=store, registry=hanging)
    first = start_rollout(store, hanging, spec_text(), source="test", actor="alice")
    controller.tick()
    run_command(store, first.id, Command.PROMOTE, actor="alice")  # its alias move is now pending

    async def meanwhile() -> RolloutState:
        task = asyncio.create_task(controller.run(interval_s=0.02))
        try:
            assert await asyncio.to_thread(entered.wait, 10)  # the alias move is in the registry, hanging
            second = start_rollout(store, hanging, spec_text(endpoint="churn"), source="test", actor="alice")
            for _ in range(200):
                if current(store, second.id).phase is Phase.CANARY:
                    break
                await asyncio.sleep(0.01)
            assert not release.is_set() and store.pending_actions()  # decided while the move still hung
            release.set()
            for _ in range(200):
                if not store.pending_actions():
                    break
                await asyncio.sleep(0.01)
            return current(store, second.id)
        finally:
            release.set()
            task.cancel()

    assert asyncio.run(meanwhile()).phase is Phase.CANARY
    assert hanging.aliases[("fraud", "champion")] == "2" and store.pending_actions() == []


# -- several controllers: the lease and its fencing token -----------------------------------------


def test_only_the_lease_holder_acts_and_another_takes_over_when_it_falls_silent(
    store: SqlStore, fake_registry: FakeRegistry, clock: Clock
) -> None:
    first = Controller(store=store, registry=fake_registry, clock=clock, holder="a", lease_ttl_s=5)
    second = Controller(store=store, registry=fake_registry, clock=clock, holder="b", lease_ttl_s=5)
    fraud = start(store, fake_registry, clock)
    clock.now = T0 + 1
    assert [s.id for s in first.tick()] == [fraud.id]
    churn = start(store, fake_registry, clock, endpoint="churn")
    clock.now = T0 + 2
    assert second.tick() == []  # a leads: b acts on nothing
    assert (second.fence, current(store, churn.id).phase) == (None, Phase.PENDING)

    clock.now = T0 + 8  # a has not renewed since T0 + 1: its lease ran out at T0 + 6
    assert [s.id for s in second.tick()] == [churn.id]
    assert second.fence is not None and first.fence is not None
    assert second.fence.token == first.fence.token + 1
    assert first.tick() == []  # a is back, but b leads now
    assert first.fence is None


def stall(stalled: Controller, leader: Controller, clock: Clock) -> None:
    """``stalled`` takes the lease, stalls past its expiry while ``leader`` takes over, and wakes up
    mid-tick, past ``lead()``, still believing it leads."""
    clock.now = T0 + 1
    assert stalled.lead()
    clock.now = T0 + 10
    assert leader.lead()
    stalled.lead = lambda: True  # type: ignore[method-assign]


def test_a_stalled_leaders_decision_is_fenced_off(store: SqlStore, fake_registry: FakeRegistry, clock: Clock) -> None:
    """a took the lease, then stalled (a GC pause, a frozen VM) past its expiry while b took over;
    when a wakes up still believing it leads, its save is refused and changes nothing."""
    stalled = Controller(store=store, registry=fake_registry, clock=clock, holder="a", lease_ttl_s=5)
    leader = Controller(store=store, registry=fake_registry, clock=clock, holder="b", lease_ttl_s=5)
    state = start(store, fake_registry, clock)
    stall(stalled, leader, clock)
    assert stalled.tick() == []
    assert stalled.fence is None  # it noticed, and stops acting
    assert (current(store, state.id).phase, store.history(state.id)) == (Phase.PENDING, [])

    (entered,) = leader.tick()
    assert entered.phase is Phase.CANARY


class StallingRegistry(FlakyRegistry):
    """``FlakyRegistry`` that, once it works again, runs ``stall`` inside the next tag it sets."""

    stall: Callable[[], None] | None = None

    def set_tag(self, name: str, version: str, key: str, value: str) -> None:
        if self.failures == 0 and self.stall is not None:
            stall, self.stall = self.stall, None
            stall()
        super().set_tag(name, version, key, value)


class StallingStore:
    """The store, with ``stall`` run (once) when the controller reads its pending actions."""

    def __init__(self, inner: SqlStore) -> None:
        self.inner = inner
        self.stall: Callable[[], None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def pending_actions(self) -> list[Any]:
        if self.stall is not None:
            stall, self.stall = self.stall, None
            stall()
        return self.inner.pending_actions()


def test_a_lease_lost_under_a_side_effect_fences_the_decisions_of_that_tick(store: SqlStore, clock: Clock) -> None:
    """The side effects' thread is in a tag past a's lease; the decisions' thread takes the lease
    again (a new token); the tag's done-mark, with the old token, is refused. That cleared the
    fence the decisions were then saved with, and a write without a fence goes unchecked: a's
    decisions were saved after b had taken the lease."""
    entered, go = threading.Event(), threading.Event()

    class SlowRegistry(FakeRegistry):
        slow = False

        def set_tag(self, name: str, version: str, key: str, value: str) -> None:
            if self.slow:
                entered.set()
                go.wait(10)
            super().set_tag(name, version, key, value)

    slow = SlowRegistry(registry().versions, registry().aliases)
    both_failing(Controller(store=store, registry=slow, clock=clock), store, slow, clock)
    assert len(Controller(store=store, registry=slow, clock=clock).decide()) == 2  # their tags pending
    fresh = start(store, slow, clock)  # for a to decide

    class Hook(StallingStore):
        def read_telemetry_many(self, rollout_ids: Sequence[str]) -> Any:
            go.set()  # the tag finishes now, and its done-mark is refused
            side_effects.join()
            assert store.acquire_lease("controller", "b", ttl_s=10, now=clock.now + 100) is not None
            return self.inner.read_telemetry_many(rollout_ids)

    a = Controller(store=Hook(store), registry=slow, clock=clock, holder="a", lease_ttl_s=10)
    assert a.lead()
    slow.slow = True
    side_effects = threading.Thread(target=a.run_actions)
    side_effects.start()
    assert entered.wait(10)
    clock.now += 20  # past a's lease: its next tick takes the lease again, with a new token
    assert a.decide() == []
    assert current(store, fresh.id).phase is Phase.PENDING  # nothing saved under b's lease
    assert a.fence is None


@pytest.mark.parametrize("stall_at", ["deciding", "before its actions", "in an action"])
def test_a_leader_that_loses_its_lease_mid_tick_runs_no_more_side_effects(
    store: SqlStore, clock: Clock, stall_at: str
) -> None:
    """Two tags are pending when a freezes past its lease and b takes over: whether a learns it from
    a refused save, or before or after running an action, it runs no side effect from then on
    (nor records one done), and b runs them all, each recorded done once."""
    flaky = StallingRegistry(failures=2)
    stalling = StallingStore(store)
    first = Controller(store=stalling, registry=flaky, clock=clock, holder="a", lease_ttl_s=5)
    second = Controller(store=store, registry=flaky, clock=clock, holder="b", lease_ttl_s=5)
    both_failing(first, store, flaky, clock)
    assert len(first.tick()) == 2  # both rolled back, but the registry is down: both tags pending
    assert [done for _, _, done in action_rows(store)] == [False, False]
    clock.now += 1  # the two tags' retries are due

    def stall() -> None:
        clock.now += 10  # past a's lease, renewed at T0 + 7 at the latest
        assert second.lead()

    if stall_at == "deciding":
        start(store, flaky, clock)  # something for a to save: its save is refused
        stall()
        first.lead = lambda: True  # type: ignore[method-assign]
    elif stall_at == "before its actions":
        stalling.stall = stall
    else:
        flaky.stall = stall

    assert first.tick() == []
    assert first.fence is None
    assert len(flaky.tags) == (1 if stall_at == "in an action" else 0)  # a ran the one it was in, no other
    assert [done for _, _, done in action_rows(store)] == [False, False]  # and recorded none done

    second.tick()
    assert set(flaky.tags) == {("fraud", "2"), ("churn", "2")}
    assert store.pending_actions() == []
    assert len([e for e in store.audit_events() if e["action"] == "action.done"]) == 2


def test_stepping_down_hands_the_lease_over_at_once(store: SqlStore, fake_registry: FakeRegistry, clock: Clock) -> None:
    first = Controller(store=store, registry=fake_registry, clock=clock, holder="a", lease_ttl_s=60)
    second = Controller(store=store, registry=fake_registry, clock=clock, holder="b", lease_ttl_s=60)
    assert first.lead() and not second.lead()
    first.step_down()
    assert second.lead()


# -- judging across cores: worker processes deciding a share of the rollouts each ------------------

ENDPOINTS = [f"e{index}" for index in range(40)]


def endpoints_registry() -> FakeRegistry:
    return FakeRegistry(
        {e: ["1", "2"] for e in ENDPOINTS},
        {(e, alias): v for e in ENDPOINTS for alias, v in (("champion", "1"), ("challenger", "2"))},
    )


def spread(store: SqlStore, fake: FakeRegistry, clock: Clock) -> list[RolloutState]:
    """Rollouts (ids are random) until each of two shards has at least two."""
    states: list[RolloutState] = []
    for endpoint in ENDPOINTS:
        states.append(start(store, fake, clock, endpoint=endpoint))
        if min(sum(shard_of(s.id, 2) == shard for s in states) for shard in (0, 1)) >= 2:
            return states
    raise AssertionError("no two rollouts in each shard out of 40")


Sharded = tuple[SqlStore, FakeRegistry, list[RolloutState], Shards]


@pytest.fixture
def sharded(store_url: str, open_store: Any, clock: Clock) -> Iterator[Sharded]:
    """A store with rollouts in both of two shards, and one worker process for the second."""
    store = open_store()
    fake = endpoints_registry()
    states = spread(store, fake, clock)
    shards = Shards(store_url, 2)
    yield store, fake, states, shards
    shards.close()


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
def test_worker_processes_decide_and_save_their_share_and_the_controller_runs_every_action(
    sharded: Sharded, clock: Clock
) -> None:
    store, fake, states, shards = sharded
    controller = Controller(store=store, registry=fake, clock=clock, shards=shards)
    clock.now = T0 + 1
    assert sorted(s.id for s in controller.tick()) == sorted(s.id for s in states)  # the workers' count too
    for state in states:
        report(store, state.id, baseline=counts(1000, correct=450, wrong=50), candidate=counts(20, correct=9, wrong=1))
    assert controller.tick() == []
    failing = {next(s.id for s in states if shard_of(s.id, 2) == shard) for shard in (0, 1)}
    for state in states:
        bad = state.id in failing
        report(
            store,
            state.id,
            baseline=counts(2000, correct=900, wrong=100),
            candidate=counts(500, correct=250, wrong=250) if bad else counts(500, correct=450, wrong=50),
        )
    clock.now = SETTLED

    rolled_back = controller.tick()
    assert {s.id for s in rolled_back} == failing and {s.phase for s in rolled_back} == {Phase.ROLLED_BACK}
    for state in states:  # whoever saved the decision, the controller ran its side effect, once
        tagged = ROLLBACK_TAG in fake.tags.get((state.endpoint, "2"), {})
        assert tagged is (state.id in failing)
        assert current(store, state.id).phase is (Phase.ROLLED_BACK if tagged else Phase.CANARY)
    assert store.pending_actions() == []
    assert all(current(store, s.id).judge_memory for s in states if s.id not in failing)  # evidence saved


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_a_stalled_leaders_workers_are_fenced_off_too(sharded: Sharded, open_store: Any, clock: Clock) -> None:
    store, fake, states, shards = sharded
    stalled = Controller(store=store, registry=fake, clock=clock, holder="a", lease_ttl_s=5, shards=shards)
    leader = Controller(store=open_store(), registry=fake, clock=clock, holder="b", lease_ttl_s=5)
    stall(stalled, leader, clock)
    assert stalled.tick() == []
    assert stalled.fence is None
    assert {current(store, s.id).phase for s in states} == {Phase.PENDING}  # no shard saved anything
    assert len(leader.tick()) == len(states)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_worker_that_died_is_started_again(sharded: Sharded, clock: Clock) -> None:
    store, fake, states, shards = sharded
    controller = Controller(store=store, registry=fake, clock=clock, shards=shards)
    clock.now = T0 + 1
    assert len(controller.tick()) == len(states)
    for process in list(shards._workers[0]._processes.values()):
        process.kill()  # SIGKILL between two ticks
        process.join()
    for state in states:
        run_command(store, state.id, Command.ABORT, actor="alice")
    assert controller.tick() == []  # aborted rollouts are no longer active: nothing to decide
    theirs = next(s for s in spread(store, fake, clock) if not shards.mine(s.id))
    clock.now = T0 + 2
    assert theirs.id in {s.id for s in controller.tick()}  # decided by the new worker


def test_an_action_failing_for_a_day_keeps_backing_off_and_is_made_once_the_registry_is_back(
    store: SqlStore, clock: Clock
) -> None:
    """The registry refuses one alias move for a day (not a missing version: retried for ever). The
    backoff doubled without end until 2 ** 1024 overflowed a float at the 1,025th failure: from then
    on ``run_actions`` raised at that action every time, and no action after it ever ran (found by
    review, 2026-12-03)."""
    down = FlakyRegistry(failures=10**9)
    controller = Controller(store=store, registry=down, clock=clock, retry_backoff_s=1.0, retry_backoff_max_s=60.0)
    first = start(store, down, clock)
    controller.tick()
    run_command(store, first.id, Command.PROMOTE, actor="alice")
    for _ in range(1_100):  # ~18 h at the 60 s cap
        clock.now += 61
        controller.run_actions()
    down.failures = 0
    clock.now += 61
    controller.run_actions()
    assert down.aliases[("fraud", "champion")] == "2" and store.pending_actions() == []


def test_an_alias_move_made_again_after_a_crash_says_what_it_named_before_is_not_known(
    store: SqlStore, fake_registry: FakeRegistry, controller: Controller, clock: Clock
) -> None:
    """The process dies after moving @champion, before marking the move done: the next leader moves
    it again, reads the candidate's own version as what the alias named before, and audited that as
    if the promotion had overwritten nothing (found by review)."""
    state = start(store, fake_registry, clock)
    controller.tick()
    run_command(store, state.id, Command.PROMOTE, actor="alice")
    fake_registry.set_alias("fraud", "champion", "2")  # the move made, its done-mark lost with the process
    controller.run_actions()
    (done,) = [event for event in store.audit_events() if event["action"] == "action.done"]
    assert done["detail"]["before"] == "2" and "moved by an attempt cut short" in done["detail"]["before_unknown"]
