"""The SQL store on a real SQLite file: rollouts, compare-and-set saves, routes, actions, telemetry
and the hash-chained audit log."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from modelcanary.adapters.store.sql import GENESIS, SqlStore, audit, audit_hash
from modelcanary.adapters.store.sql import actions as actions_table
from modelcanary.domain.errors import Conflict, NotFound
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import StickyKey
from modelcanary.domain.state import Action, ActionKind, ModelVersion, Outcome, RolloutState, Route, Transition
from modelcanary.domain.telemetry import Variant, VariantTelemetry
from modelcanary.engine.analysis import pair

BASELINE = ModelVersion(name="fraud", version="1", run_id="r1", source="models:/m-1")
CANDIDATE = ModelVersion(name="fraud", version="2", run_id="r2", source="models:/m-2")
SPEC_TEXT = "apiVersion: modelcanary/v1\nkind: Rollout\n# the store keeps the text as given\n"


def rollout(rollout_id: str = "r-1", *, endpoint: str = "fraud", at: float = 1_000.0) -> RolloutState:
    return RolloutState(
        id=rollout_id,
        name=rollout_id,
        endpoint=endpoint,
        phase=Phase.PENDING,
        baseline=BASELINE,
        candidate=CANDIDATE,
        created_at=at,
        updated_at=at,
    )


def moved(
    state: RolloutState,
    phase: Phase,
    *,
    weight: float = 10.0,
    at: float = 1_010.0,
    actions: tuple[Action, ...] = (),
    with_route: bool = True,
) -> Outcome:
    """An outcome moving ``state`` to ``phase``, with its transition, route and actions."""
    new = state.model_copy(update={"phase": phase, "step": 0, "weight": weight, "updated_at": at})
    transition = Transition(
        at=at, source=state.phase, target=phase, step=0, weight=weight, paused=False, reason=f"to {phase}", actor="t"
    )
    route = Route(
        endpoint=state.endpoint,
        baseline=state.baseline,
        candidate=state.candidate if not phase.is_terminal() else None,
        weight=weight if not phase.is_terminal() else 0.0,
        rollout_id=state.id,
        sticky=StickyKey(header="x-user-id"),
    )
    return Outcome(state=new, transition=transition, route=route if with_route else None, actions=actions)


def tag_action(rollout_id: str, key: str = "tag") -> Action:
    payload = {"name": "fraud", "version": "2", "tag": "why", "value": "bad"}
    return Action(kind=ActionKind.TAG_VERSION, payload=payload, key=f"{rollout_id}:{key}")


def telemetry(requests: int, *, errors: int = 0, labels: int = 0) -> VariantTelemetry:
    counts = VariantTelemetry()
    for index in range(requests):
        counts.observe(latency_ms=2.0 + index % 5, error=index < errors)
    for index in range(labels):
        counts.observe_label(bucket=counts.observe_score(0.9), label=index % 2)
    return counts


# -- rollouts -------------------------------------------------------------------------------------


def test_create_get_and_list(store: SqlStore) -> None:
    first = rollout("r-1", endpoint="fraud", at=1_000.0)
    second = rollout("r-2", endpoint="churn", at=2_000.0)
    store.create(first, SPEC_TEXT, actor="alice")
    store.create(second, "spec: 2\n", actor="bob")

    state, text = store.get("r-1")
    assert state == first
    assert text == SPEC_TEXT
    assert [s.id for s in store.list_rollouts()] == ["r-2", "r-1"]  # newest first
    assert [s.id for s in store.list_rollouts(active_only=True)] == ["r-2", "r-1"]
    assert store.history("r-1") == []
    created = store.audit_events("r-1")
    assert [(e["action"], e["actor"]) for e in created] == [("rollout.create", "alice")]
    assert created[0]["detail"] == {"endpoint": "fraud", "baseline": BASELINE.uri, "candidate": CANDIDATE.uri}


def test_unknown_rollout_is_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFound, match="nope"):
        store.get("nope")


def test_one_active_rollout_per_endpoint_until_the_first_ends(store: SqlStore) -> None:
    first = rollout("r-1")
    store.create(first, SPEC_TEXT, actor="alice")
    with pytest.raises(Conflict, match="r-1"):
        store.create(rollout("r-2"), SPEC_TEXT, actor="bob")
    store.create(rollout("r-3", endpoint="other"), SPEC_TEXT, actor="bob")  # another endpoint is free

    canary = store.save(moved(first, Phase.CANARY), expected_version=0)
    with pytest.raises(Conflict):  # still active
        store.create(rollout("r-2"), SPEC_TEXT, actor="bob")
    store.save(moved(canary, Phase.ROLLED_BACK, at=1_020.0), expected_version=canary.version)

    store.create(rollout("r-2"), SPEC_TEXT, actor="bob")
    assert {s.id for s in store.list_rollouts(active_only=True)} == {"r-2", "r-3"}
    assert {s.id for s in store.list_rollouts()} == {"r-1", "r-2", "r-3"}


def test_the_partial_unique_index_holds_even_without_the_check(store: SqlStore) -> None:
    """Two creates racing past the application check still meet the index: the loser gets Conflict."""
    store.create(rollout("r-1"), SPEC_TEXT, actor="alice")
    from modelcanary.adapters.store.sql import rollouts

    with pytest.raises(Conflict), store._tx() as conn:
        conn.execute(
            rollouts.insert().values(
                id="r-2", endpoint="fraud", phase="pending", active=1, version=0, state="{}", spec="", created_at=1.0
            )
        )


# -- compare-and-set saves ------------------------------------------------------------------------


def _counts(store: SqlStore) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            name: int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar() or 0)
            for name in ("transitions", "routes", "actions", "audit")
        }


def test_save_writes_state_transition_route_and_actions_together(store: SqlStore) -> None:
    state = rollout()
    store.create(state, SPEC_TEXT, actor="alice")
    assert store.routes_version() == 0
    assert store.routes() == {}

    outcome = moved(state, Phase.CANARY, actions=(tag_action(state.id),))
    saved = store.save(outcome, expected_version=0)

    assert saved.version == 1
    assert saved.phase is Phase.CANARY
    assert store.get(state.id)[0] == saved
    assert store.history(state.id) == [outcome.transition]
    assert store.routes() == {"fraud": outcome.route}
    first_routes_version = store.routes_version()
    assert first_routes_version > 0
    assert [action for _, action in store.pending_actions()] == [tag_action(state.id)]
    assert [e["action"] for e in store.audit_events(state.id)] == ["rollout.create", "rollout.canary"]

    # the next save moves the route again: the routes version grows
    later = store.save(moved(saved, Phase.CANARY, weight=50.0, at=1_020.0), expected_version=1)
    assert later.version == 2
    assert store.routes()["fraud"].weight == 50.0
    assert store.routes_version() > first_routes_version
    assert len(store.history(state.id)) == 2


def test_a_stale_save_is_a_conflict_and_writes_nothing(store: SqlStore) -> None:
    state = rollout()
    store.create(state, SPEC_TEXT, actor="alice")
    saved = store.save(moved(state, Phase.CANARY), expected_version=0)
    before = _counts(store)
    routes_before = store.routes()

    stale = moved(state, Phase.ABORTED, weight=0.0, actions=(tag_action(state.id, "abort"),))
    with pytest.raises(Conflict, match="changed since version 0"):
        store.save(stale, expected_version=0)

    assert store.get(state.id)[0] == saved
    assert _counts(store) == before  # no transition, route, action or audit row
    assert store.routes() == routes_before
    assert store.pending_actions() == []
    assert [s.id for s in store.list_rollouts(active_only=True)] == [state.id]


def test_a_save_that_fails_half_way_leaves_nothing_behind(store: SqlStore) -> None:
    """One transaction: an action whose key was already saved fails the whole save, state included."""
    state = rollout()
    store.create(state, SPEC_TEXT, actor="alice")
    saved = store.save(moved(state, Phase.CANARY, actions=(tag_action(state.id),)), expected_version=0)
    before, version_before = _counts(store), store.routes_version()

    again = moved(saved, Phase.ROLLED_BACK, weight=0.0, at=1_030.0, actions=(tag_action(state.id),))
    with pytest.raises(Conflict):
        store.save(again, expected_version=saved.version)

    assert store.get(state.id)[0] == saved
    assert _counts(store) == before
    assert store.routes_version() == version_before


def test_save_without_a_change_writes_no_history(store: SqlStore) -> None:
    state = rollout()
    store.create(state, SPEC_TEXT, actor="alice")
    saved = store.save(Outcome(state=state), expected_version=0)
    assert saved.version == 1
    assert store.history(state.id) == []
    assert store.routes_version() == 0


# -- actions --------------------------------------------------------------------------------------


def _attempts(store: SqlStore) -> dict[int, tuple[int, str | None, bool]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(actions_table.c.id, actions_table.c.attempts, actions_table.c.last_error, actions_table.c.done_at)
        )
        return {row.id: (row.attempts, row.last_error, row.done_at is not None) for row in rows}


def test_pending_actions_and_mark_done(store: SqlStore) -> None:
    state = rollout()
    store.create(state, SPEC_TEXT, actor="alice")
    first, second = tag_action(state.id, "a"), tag_action(state.id, "b")
    store.save(moved(state, Phase.CANARY, actions=(first, second)), expected_version=0)

    pending = store.pending_actions()
    assert [action for _, action in pending] == [first, second]  # oldest first
    (first_id, _), (second_id, _) = pending

    store.mark_done(first_id, error="registry down")
    store.mark_done(first_id, error="registry still down")
    assert [action for _, action in store.pending_actions()] == [first, second]  # failed: still pending
    assert _attempts(store)[first_id] == (2, "registry still down", False)

    store.mark_done(first_id)
    assert store.pending_actions() == [(second_id, second)]
    assert _attempts(store)[first_id] == (3, None, True)

    store.mark_done(second_id)
    assert store.pending_actions() == []


# -- telemetry ------------------------------------------------------------------------------------


def test_telemetry_upserts_per_source_and_reads_every_source(store: SqlStore) -> None:
    store.write_telemetry("gw-a", [("r-1", Variant.BASELINE, telemetry(10)), ("r-1", Variant.CANDIDATE, telemetry(2))])
    # cumulative counts: a later write of the same source replaces, never adds
    store.write_telemetry(
        "gw-a", [("r-1", Variant.BASELINE, telemetry(30, errors=1, labels=4)), ("r-2", Variant.BASELINE, telemetry(99))]
    )
    store.write_telemetry(
        "gw-b", [("r-1", Variant.BASELINE, telemetry(5)), ("r-1", Variant.CANDIDATE, telemetry(7, errors=2))]
    )

    rows = store.read_telemetry("r-1")
    assert len(rows) == 4  # two sources x two variants
    assert sorted((variant.value, counts.requests) for variant, counts in rows) == [
        ("baseline", 5),
        ("baseline", 30),
        ("candidate", 2),
        ("candidate", 7),
    ]
    total = pair(rows)
    assert (total.baseline.requests, total.baseline.errors, total.baseline.labels) == (35, 1, 4)
    assert (total.candidate.requests, total.candidate.errors) == (9, 2)
    assert total.baseline == telemetry(30, errors=1, labels=4).merged(telemetry(5))  # histograms survive the round trip
    assert store.read_telemetry("unknown") == []


# -- audit ----------------------------------------------------------------------------------------


def _verify_chain(events: list[dict[str, object]]) -> None:
    previous = GENESIS
    for event in events:
        assert event["prev_hash"] == previous
        body = {key: event[key] for key in ("at", "actor", "action", "rollout_id", "detail")}
        assert event["hash"] == audit_hash(previous, body)
        previous = str(event["hash"])


def test_the_audit_log_is_a_hash_chain(store: SqlStore) -> None:
    state = rollout()
    store.create(state, SPEC_TEXT, actor="alice")
    store.create(rollout("r-2", endpoint="churn"), SPEC_TEXT, actor="bob")
    canary = store.save(moved(state, Phase.CANARY), expected_version=0)
    store.save(moved(canary, Phase.PROMOTED, weight=100.0, at=1_050.0), expected_version=canary.version)

    events = store.audit_events()
    assert [e["action"] for e in events] == ["rollout.create", "rollout.create", "rollout.canary", "rollout.promoted"]
    assert events[0]["prev_hash"] == GENESIS
    _verify_chain(events)
    # filtered by rollout, the rows are the same rows
    assert [e["id"] for e in store.audit_events("r-1")] == [events[0]["id"], events[2]["id"], events[3]["id"]]


def test_an_edited_audit_row_breaks_the_chain(store: SqlStore) -> None:
    state = rollout()
    store.create(state, SPEC_TEXT, actor="alice")
    store.save(moved(state, Phase.CANARY), expected_version=0)
    with store.engine.begin() as conn:
        conn.execute(audit.update().where(audit.c.action == "rollout.create").values(actor="mallory"))
    with pytest.raises(AssertionError):
        _verify_chain(store.audit_events())


def test_routes_survive_reopening_the_file(store: SqlStore) -> None:
    state = rollout()
    store.create(state, SPEC_TEXT, actor="alice")
    outcome = moved(state, Phase.CANARY)
    store.save(outcome, expected_version=0)
    reopened = SqlStore(store.url)
    try:
        assert reopened.routes() == {"fraud": outcome.route}
        assert reopened.routes_version() == store.routes_version()
        assert reopened.get(state.id)[0].version == 1
    finally:
        reopened.close()
