"""The store contract, on real SQLite and real PostgreSQL (see conftest.py): rollouts,
compare-and-set saves, routes, actions, telemetry, the hash-chained audit log, leases with fencing
and schema migrations."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from modelcanary.adapters.store.schema import (
    GENESIS,
    HEAD,
    MIGRATIONS,
    audit,
    audit_hash,
    audit_head,
    engine_for,
    metadata,
    normalise_url,
    schema_revision,
)
from modelcanary.adapters.store.schema import actions as actions_table
from modelcanary.adapters.store.schema import routes as routes_table
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.domain.errors import Conflict, Fenced, NotFound
from modelcanary.domain.phases import Phase
from modelcanary.domain.state import Action, ActionKind, ModelVersion, Outcome, RolloutState, Route, Transition
from modelcanary.domain.telemetry import Variant, VariantTelemetry
from modelcanary.domain.traffic import StickyKey
from modelcanary.engine.analysis import pair
from modelcanary.ports import Fence

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
    assert [s.id for s in store.list_rollouts(active=True)] == ["r-2", "r-1"]
    assert store.history("r-1") == []
    created = store.audit_events("r-1")
    assert [(e["action"], e["actor"]) for e in created] == [("rollout.create", "alice")]
    assert created[0]["detail"] == {"endpoint": "fraud", "baseline": BASELINE.uri, "candidate": CANDIDATE.uri}


def test_unknown_rollout_is_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFound, match="nope"):
        store.get("nope")
    with pytest.raises(NotFound, match="no rollout"):  # PostgreSQL's text holds no NUL: its query failed, a 503
        store.get("nope\x00")


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
    assert {s.id for s in store.list_rollouts(active=True)} == {"r-2", "r-3"}
    assert {s.id for s in store.list_rollouts()} == {"r-1", "r-2", "r-3"}


def test_rollouts_are_listed_a_page_at_a_time_filtered_by_the_database(store: SqlStore) -> None:
    # three created in one instant: the id orders them, so pages neither skip nor repeat one
    store.create(rollout("r-a", endpoint="fraud", at=1.0), SPEC_TEXT, actor="alice")
    store.save(moved(store.get("r-a")[0], Phase.ROLLED_BACK, at=3.0), expected_version=0)
    for rollout_id, endpoint in [("r-b", "churn"), ("r-c", "fraud"), ("r-d", "spam")]:
        store.create(rollout(rollout_id, endpoint=endpoint, at=2.0), SPEC_TEXT, actor="alice")

    assert [s.id for s in store.list_rollouts()] == ["r-d", "r-c", "r-b", "r-a"]
    pages, before = [], None
    while True:
        page = store.list_rollouts(limit=2, before=before)
        pages.append([s.id for s in page])
        if len(page) < 2:
            break
        before = page[-1].id
    assert pages == [["r-d", "r-c"], ["r-b", "r-a"], []]
    assert [s.id for s in store.list_rollouts(active=True)] == ["r-d", "r-c", "r-b"]
    assert [s.id for s in store.list_rollouts(active=False)] == ["r-a"]
    assert [s.id for s in store.list_rollouts(endpoints=["fraud", "churn"], before="r-c")] == ["r-b", "r-a"]
    assert store.list_rollouts(endpoints=[]) == []
    with pytest.raises(NotFound, match="r-x"):
        store.list_rollouts(before="r-x")


def test_the_partial_unique_index_holds_even_without_the_check(store: SqlStore) -> None:
    """Two creates racing past the application check still meet the index: the loser gets Conflict."""
    store.create(rollout("r-1"), SPEC_TEXT, actor="alice")
    from modelcanary.adapters.store.schema import rollouts

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
    assert [s.id for s in store.list_rollouts(active=True)] == [state.id]


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


def test_save_many_saves_each_on_its_own(store: SqlStore) -> None:
    """One transaction for a tick's decisions, one savepoint each: a lost compare-and-set or a broken
    constraint keeps that rollout out and the others in."""
    first, second, third = rollout("r-1"), rollout("r-2", endpoint="churn"), rollout("r-3", endpoint="ads")
    for state in (first, second, third):
        store.create(state, SPEC_TEXT, actor="alice")
    store.save(moved(third, Phase.CANARY, actions=(tag_action("r-3"),)), expected_version=0)
    before = _counts(store)

    results = store.save_many(
        [
            (moved(first, Phase.CANARY), 0),
            (moved(second, Phase.CANARY), 7),  # stale
            (moved(third, Phase.CANARY, actions=(tag_action("r-3"),)), 1),  # the same action key again
        ]
    )
    (saved, none), (lost, stale), (refused, duplicate) = results
    assert saved is not None and saved.version == 1 and none is None
    assert lost is None and isinstance(stale, Conflict) and "changed since version 7" in str(stale)
    assert refused is None and isinstance(duplicate, Conflict)
    assert store.get("r-1")[0].phase is Phase.CANARY
    assert store.get("r-2")[0] == second
    assert store.get("r-3")[0].version == 1
    after = _counts(store)
    assert after["transitions"] == before["transitions"] + 1  # only r-1's
    assert after["actions"] == before["actions"]
    assert store.verify_audit()[1] is None
    assert store.save_many([]) == []


def test_active_rollouts_reuse_a_known_state_only_at_its_version(store: SqlStore) -> None:
    """What a controller saved last tick is not read again; a rollout saved by anyone else since,
    a new one and an ended one are seen as they are stored."""
    first, second = rollout("r-1"), rollout("r-2", endpoint="churn", at=1_001.0)
    third, ended = rollout("r-3", endpoint="ads", at=1_002.0), rollout("r-4", endpoint="old", at=999.0)
    for state in (first, second, third, ended):
        store.create(state, SPEC_TEXT, actor="alice")
    saved_first = store.save(moved(first, Phase.CANARY), expected_version=0)
    saved_second = store.save(moved(second, Phase.CANARY), expected_version=0)
    store.save(moved(ended, Phase.ABORTED), expected_version=0)
    known = {"r-1": saved_first, "r-2": saved_second, "r-4": ended}
    operator = store.save(moved(saved_second, Phase.CANARY, weight=0.0), expected_version=1)  # paused, say

    listed = store.active_rollouts(known)

    assert [state.id for state in listed] == [state.id for state in store.list_rollouts(active=True)]
    assert [state.id for state in listed] == ["r-3", "r-2", "r-1"]  # newest first, the ended one gone
    assert listed[2] is saved_first  # its version holds: not read again
    assert listed[1] == operator and listed[1].version == 2  # saved by someone else since: read
    assert listed[0] == store.get("r-3")[0]  # not known: read
    assert store.active_rollouts({}) == store.list_rollouts(active=True)


def test_a_batch_of_moves_saves_every_effect_in_order(store: SqlStore) -> None:
    """A tick where many rollouts move at once writes their effects a batch at a time: each
    transition audited once, in the batch's order, on one unbroken chain; each route under its own
    store-wide version, in order, whether the endpoint had a route or not; every action pending."""
    states = [rollout(f"r-{index}", endpoint=f"e{index}", at=1_000.0 + index) for index in range(12)]
    for state in states:
        store.create(state, SPEC_TEXT, actor="alice")
    store.put_route(Route(endpoint="e3", baseline=BASELINE))  # e3 has a route already, the others none
    store.append_audit(at=1_005.0, actor="alice", action="note", rollout_id=None, detail={"before": "the batch"})
    version = store.routes_version()

    results = store.save_many(
        [(moved(state, Phase.CANARY, actions=(tag_action(state.id),)), 0) for state in states[:-1]]
        + [(moved(states[-1], Phase.CANARY, with_route=False), 0)]
    )

    assert [error for _, error in results] == [None] * 12
    assert store.verify_audit() == (12 + 1 + 12, None)
    moves = [event for event in store.audit_events() if event["action"] == "rollout.canary"]
    assert [event["rollout_id"] for event in moves] == [state.id for state in states]
    assert [event["detail"]["reason"] for event in moves] == ["to canary"] * 12
    table = store.routes()
    with store.engine.connect() as conn:
        versions = dict(conn.execute(sa.select(routes_table.c.endpoint, routes_table.c.version)).all())
    assert [versions[f"e{index}"] for index in range(11)] == list(range(version + 1, version + 12))
    assert "e11" not in versions and table["e3"].candidate == CANDIDATE
    assert store.routes_version() == version + 11
    assert sorted(action.key for _, action in store.pending_actions()) == sorted(
        f"r-{index}:tag" for index in range(11)
    )
    assert all(len(store.history(state.id)) == 1 for state in states)


def test_a_batch_is_refused_whole_once_the_lease_has_moved(store: SqlStore) -> None:
    old = store.acquire_lease("controller", "a", ttl_s=5, now=100.0)
    states = [rollout(f"r-{index}", endpoint=f"e{index}") for index in range(3)]
    for state in states:
        store.create(state, SPEC_TEXT, actor="alice")
    assert store.acquire_lease("controller", "b", ttl_s=5, now=200.0) is not None
    before = _counts(store)
    with pytest.raises(Fenced):
        store.save_many([(moved(state, Phase.CANARY), 0) for state in states], fence=old)
    assert _counts(store) == before
    assert [store.get(state.id)[0] for state in states] == states


def test_specs_and_telemetry_read_many_at_once(store: SqlStore) -> None:
    store.create(rollout("r-1"), SPEC_TEXT, actor="alice", spec_json='{"json": 1}')
    store.create(rollout("r-2", endpoint="churn"), "text only\n", actor="alice")
    assert store.specs(["r-1", "r-2", "nope"]) == {"r-1": (SPEC_TEXT, '{"json": 1}'), "r-2": ("text only\n", None)}
    ids = [f"t-{index}" for index in range(1_200)]  # more than one IN (...) chunk
    store.write_telemetry("gw", [(rollout_id, Variant.BASELINE, telemetry(3)) for rollout_id in ids])
    many = store.read_telemetry_many([*ids, "quiet"])
    assert len(many) == 1_201 and many["quiet"] == []
    assert all(rows == store.read_telemetry(rollout_id) for rollout_id, rows in list(many.items())[:5])
    assert {rows[0][1].requests for rollout_id, rows in many.items() if rows} == {3}


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


def test_relayed_labels_wait_for_their_issuer_who_takes_each_once(open_store: Callable[[], SqlStore]) -> None:
    store, other = open_store(), open_store()  # two gateways' connections
    store.relay_labels("gw-b", [("aaaaaaaaaa", "aaaaaaaaaa-1", 1), ("cccccccccc", "cccccccccc-7", 0)])
    store.relay_labels("gw-c", [("aaaaaaaaaa", "aaaaaaaaaa-2", 0), ("aaaaaaaaaa", "aaaaaaaaaa-1", 0)])
    assert other.take_labels("bbbbbbbbbb") == []
    # oldest first, a label sent twice comes twice (the issuer counts the second as unmatched)
    assert store.take_labels("aaaaaaaaaa") == [("aaaaaaaaaa-1", 1), ("aaaaaaaaaa-2", 0), ("aaaaaaaaaa-1", 0)]
    assert other.take_labels("aaaaaaaaaa") == []  # taken once
    # one nobody took expires; a fresh one does not
    assert store.expire_labels(time.time() - 60) == 0
    store.relay_labels("gw-b", [("dddddddddd", "dddddddddd-3", 1)])
    assert other.expire_labels(time.time() + 1) == 2
    assert store.take_labels("cccccccccc") == [] == store.take_labels("dddddddddd")
    store.relay_labels("gw-b", [])  # nothing to write is no statement at all
    # a gateway that adopted stopped ones takes their labels with its own, in one call
    store.relay_labels("gw-b", [("aaaaaaaaaa", "aaaaaaaaaa-3", 1), ("eeeeeeeeee", "eeeeeeeeee-1", 0)])
    store.relay_labels("gw-b", [("ffffffffff", "ffffffffff-9", 1)])
    assert other.take_labels("ffffffffff", "aaaaaaaaaa", "eeeeeeeeee") == [
        ("aaaaaaaaaa-3", 1),
        ("eeeeeeeeee-1", 0),
        ("ffffffffff-9", 1),
    ]


def test_what_a_stopped_gateway_hands_off_is_adopted_whole_and_once(open_store: Callable[[], SqlStore]) -> None:
    from modelcanary.adapters.store.telemetry import HANDOFF_CHUNK

    store, other = open_store(), open_store()
    assert store.adopt_handoffs() == []
    many = [
        [f"aaaaaaaaaa-{n:x}", "fraud", "r-1", "baseline", n % 7, None, 0.0, None, None, None, 0.0]
        for n in range(HANDOFF_CHUNK + 5)
    ]
    store.hand_off("gw-a", many)  # more than one stored chunk, in one transaction
    store.hand_off("gw-b", [["bbbbbbbbbb-1", None, None, "candidate", None, "eu", 1e9, 1, 0.2, 0.9, 0.0]])
    store.hand_off("gw-c", [])  # nothing to hand off is no statement at all
    adopted = other.adopt_handoffs()
    assert adopted == [
        *many,
        ["bbbbbbbbbb-1", None, None, "candidate", None, "eu", 1e9, 1, 0.2, 0.9, 0.0],
    ]  # oldest first
    assert store.adopt_handoffs() == [] == other.adopt_handoffs()  # adopted once


def test_a_hand_off_sent_again_is_stored_once_even_after_its_first_copy_was_adopted(
    open_store: Callable[[], SqlStore],
) -> None:
    """A gateway whose hand-off landed but whose answer was lost sends it again: a second copy was
    stored, another flush adopted it too, and a label joined to both was counted twice (found by
    review, 2026-12-03)."""
    store, other = open_store(), open_store()
    rows = [["aaaaaaaaaa-1", "fraud", "r-1", "baseline", 3, None, 0.0, None, None, None, 0.0]]
    store.hand_off("gw-a", rows, "aaaaaaaaaa")
    assert other.adopt_handoffs() == rows
    store.hand_off("gw-a", rows, "aaaaaaaaaa")  # the retry, after the first copy was adopted
    store.hand_off("gw-a", rows, "aaaaaaaaaa")
    assert other.adopt_handoffs() == [] == store.adopt_handoffs()
    store.hand_off("gw-a", [["bbbbbbbbbb-1", *rows[0][1:]]], "bbbbbbbbbb")  # the same name, restarted
    assert [row[0] for row in other.adopt_handoffs()] == ["bbbbbbbbbb-1"]


# -- audit ----------------------------------------------------------------------------------------


def _chain(store: SqlStore) -> None:
    """Three rollouts' worth of audit events: creates, transitions and a done action."""
    state = rollout()
    store.create(state, SPEC_TEXT, actor="alice")
    store.create(rollout("r-2", endpoint="churn"), SPEC_TEXT, actor="bob")
    canary = store.save(moved(state, Phase.CANARY, actions=(tag_action(state.id),)), expected_version=0)
    store.save(moved(canary, Phase.PROMOTED, weight=100.0, at=1_050.0), expected_version=canary.version)
    [(action_id, _)] = store.pending_actions()
    store.mark_done(action_id)


def test_the_audit_log_is_a_hash_chain_that_verifies(store: SqlStore) -> None:
    _chain(store)
    events = store.audit_events()
    assert [e["action"] for e in events] == [
        "rollout.create",
        "rollout.create",
        "rollout.canary",
        "rollout.promoted",
        "action.done",
    ]
    assert events[0]["prev_hash"] == GENESIS
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in itertools.pairwise(events))
    # an independent recomputation of the first hash: sha256 over GENESIS + the event's canonical JSON
    body = {key: events[0][key] for key in ("at", "actor", "action", "rollout_id", "detail")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert events[0]["hash"] == hashlib.sha256(("0" * 64 + canonical).encode()).hexdigest()
    assert store.verify_audit() == (5, None)
    # filtered by rollout, the rows are the same rows
    assert [e["id"] for e in store.audit_events("r-1")] == [events[i]["id"] for i in (0, 2, 3, 4)]
    assert events[4]["detail"]["key"] == "r-1:tag"


def test_an_actor_longer_than_its_column_is_cut_and_kept_whole_in_the_detail(store: SqlStore) -> None:
    # an Airflow task id or a watched alias of a long model name: PostgreSQL refused the event,
    # and with it the change it records
    actor = "airflow:" + "d" * 250 + ".start"
    store.append_audit(at=1.0, actor=actor, action="rollout.create", rollout_id=None, detail={"why": "test"})
    [event] = store.audit_events()
    assert len(event["actor"]) == 200 and event["actor"] == actor[:199] + "\u2026"
    assert event["detail"] == {"why": "test", "actor": actor}
    assert store.verify_audit() == (1, None)


def _tamper(store: SqlStore, statement: sa.Executable) -> None:
    with store.engine.begin() as conn:
        conn.execute(statement)


def test_an_edited_audit_row_is_the_first_broken_link(store: SqlStore) -> None:
    _chain(store)
    second = store.audit_events()[1]["id"]
    _tamper(store, audit.update().where(audit.c.id == second).values(actor="mallory"))
    count, broken = store.verify_audit()
    assert broken is not None
    assert (broken.id, broken.position, count) == (second, 1, 2)
    assert "hash does not match" in broken.reason


def test_an_edited_detail_or_time_breaks_the_chain(store: SqlStore) -> None:
    _chain(store)
    third = store.audit_events()[2]
    _tamper(store, audit.update().where(audit.c.id == third["id"]).values(detail='{"reason": "fine"}'))
    assert store.verify_audit()[1] is not None
    _tamper(
        store,
        audit.update().where(audit.c.id == third["id"]).values(detail=json.dumps(third["detail"], sort_keys=True)),
    )
    assert store.verify_audit() == (5, None)  # restored exactly: the chain holds again
    _tamper(store, audit.update().where(audit.c.id == third["id"]).values(at=third["at"] + 1))
    broken = store.verify_audit()[1]
    assert broken is not None and broken.id == third["id"]


def test_a_deleted_audit_row_breaks_the_next_link(store: SqlStore) -> None:
    _chain(store)
    events = store.audit_events()
    _tamper(store, audit.delete().where(audit.c.id == events[2]["id"]))
    broken = store.verify_audit()[1]
    assert broken is not None
    assert broken.id == events[3]["id"]
    assert "prev_hash" in broken.reason


def test_events_cut_off_the_end_are_caught_by_the_head(store: SqlStore) -> None:
    _chain(store)
    events = store.audit_events()
    _tamper(store, audit.delete().where(audit.c.id >= events[3]["id"]))
    count, broken = store.verify_audit()
    assert count == 3 and broken is not None
    assert broken.id == events[2]["id"] and "cut off the end" in broken.reason


def test_a_deleted_head_row_is_a_broken_chain(store: SqlStore) -> None:
    """Every event and the head row deleted read as an empty chain that holds: every store has a
    head row from its first migrations on."""
    _chain(store)
    _tamper(store, audit.delete())
    _tamper(store, audit_head.delete())
    count, broken = store.verify_audit()
    assert count == 0 and broken is not None and "head row is missing" in broken.reason


def test_audit_events_are_read_a_page_at_a_time_and_by_endpoint(store: SqlStore) -> None:
    """The control API's pages: filtered, cut and ordered by the database, on both engines."""
    _chain(store)
    events = store.audit_events()
    ids = [event["id"] for event in events]
    assert [e["id"] for e in store.audit_events(limit=2)] == ids[:2]
    assert [e["id"] for e in store.audit_events(after=ids[1], limit=2)] == ids[2:4]
    assert [e["id"] for e in store.audit_events(before=ids[-1], limit=2, newest_first=True)] == ids[-3:-1][::-1]
    churn = [e["id"] for e in events if e["rollout_id"] == "r-2"]
    assert [e["id"] for e in store.audit_events(endpoints=["churn"])] == churn
    assert store.audit_events(endpoints=[]) == []
    assert store.audit_head() == (len(events), events[-1]["hash"])


def test_an_append_during_a_verify_walk_commits_and_is_no_cut(open_store: Callable[[], SqlStore]) -> None:
    """A verify reads the chain's head, then walks its events; another writer appends an event and
    commits in between. The walk reads one snapshot, so it does not take the longer chain for a cut
    (PostgreSQL read each statement afresh), and it holds no write lock, so the writer goes on at
    once (SQLite's BEGIN IMMEDIATE made it wait out the busy timeout). A real cut is still caught."""
    verifier, writer = open_store(), open_store()
    _chain(writer)
    appended: list[int] = []

    def append_before_the_walk(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().startswith("SELECT audit.id") and not appended:
            writer.append_audit(at=2_000.0, actor="ops", action="note", rollout_id=None, detail={"n": 1})
            appended.append(len(writer.audit_events()))

    sa.event.listen(verifier.engine, "before_cursor_execute", append_before_the_walk)
    try:
        assert verifier.verify_audit() == (5, None)  # the chain as it was when the walk began
    finally:
        sa.event.remove(verifier.engine, "before_cursor_execute", append_before_the_walk)
    assert appended == [6]  # committed while the walk's transaction was open
    assert verifier.verify_audit() == (6, None)
    _tamper(writer, audit.delete().where(audit.c.id == writer.audit_events()[-1]["id"]))
    count, broken = verifier.verify_audit()
    assert count == 5 and broken is not None and "cut off the end" in broken.reason


def test_reordered_audit_rows_break_the_chain(store: SqlStore) -> None:
    _chain(store)
    first, second = store.audit_events()[:2]
    columns = ("at", "actor", "action", "rollout_id", "detail", "prev_hash", "hash")
    swap = {
        column: (second[column] if column != "detail" else json.dumps(second[column], sort_keys=True))
        for column in columns
    }
    back = {
        column: (first[column] if column != "detail" else json.dumps(first[column], sort_keys=True))
        for column in columns
    }
    _tamper(store, audit.update().where(audit.c.id == first["id"]).values(**swap))
    _tamper(store, audit.update().where(audit.c.id == second["id"]).values(**back))
    broken = store.verify_audit()[1]
    assert broken is not None and broken.position == 0


def test_concurrent_writers_never_fork_the_chain(open_store: Callable[[], SqlStore]) -> None:
    """Eight threads, each with its own store (its own connections), create rollouts at once: every
    append reads the last hash under a lock, so the chain stays one line."""
    stores = [open_store() for _ in range(8)]

    def create_many(index: int) -> None:
        for n in range(5):
            stores[index].create(rollout(f"r-{index}-{n}", endpoint=f"e-{index}-{n}"), SPEC_TEXT, actor=f"t{index}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create_many, range(8)))
    assert stores[0].verify_audit() == (40, None)


# -- leases and fencing ---------------------------------------------------------------------------


def test_a_lease_is_held_renewed_and_taken_over_only_when_it_expires(store: SqlStore) -> None:
    first = store.acquire_lease("controller", "a", ttl_s=10, now=100.0)
    assert first == Fence("controller", 1)
    assert store.acquire_lease("controller", "b", ttl_s=10, now=105.0) is None  # a's lease runs
    assert store.acquire_lease("controller", "a", ttl_s=10, now=108.0) == first  # renewed: same token
    assert store.acquire_lease("controller", "b", ttl_s=10, now=115.0) is None  # renewal moved expiry to 118
    taken = store.acquire_lease("controller", "b", ttl_s=10, now=118.5)
    assert taken == Fence("controller", 2)
    assert store.acquire_lease("controller", "a", ttl_s=10, now=119.0) is None
    # an expired holder that comes back gets a new token too: its old writes may have been refused
    assert store.acquire_lease("controller", "b", ttl_s=10, now=140.0) == Fence("controller", 3)
    assert store.acquire_lease("other", "a", ttl_s=10, now=140.0) == Fence("other", 1)  # leases are independent


def test_a_released_lease_passes_at_once(store: SqlStore) -> None:
    held = store.acquire_lease("controller", "a", ttl_s=60, now=100.0)
    assert held is not None
    store.release_lease(held, "b")  # not b's to release
    assert store.acquire_lease("controller", "b", ttl_s=60, now=101.0) is None
    store.release_lease(held, "a")
    assert store.acquire_lease("controller", "b", ttl_s=60, now=101.0) == Fence("controller", 2)


def test_a_stale_leaders_writes_are_refused_and_write_nothing(store: SqlStore) -> None:
    old = store.acquire_lease("controller", "a", ttl_s=5, now=100.0)
    assert old is not None
    state = rollout()
    store.create(state, SPEC_TEXT, actor="alice")
    saved = store.save(moved(state, Phase.CANARY, actions=(tag_action(state.id),)), expected_version=0, fence=old)
    new = store.acquire_lease("controller", "b", ttl_s=5, now=200.0)  # a stalled past its lease
    assert new is not None and new.token > old.token
    before = _counts(store)

    with pytest.raises(Fenced, match="refused"):
        store.save(moved(saved, Phase.ROLLED_BACK, weight=0.0, at=1_030.0), expected_version=saved.version, fence=old)
    [(action_id, _)] = store.pending_actions()
    with pytest.raises(Fenced):
        store.mark_done(action_id, fence=old)
    with pytest.raises(Fenced):  # a metric source's read, made before the stall
        store.write_telemetry("prometheus", [(state.id, Variant.BASELINE, telemetry(3))], fence=old)
    assert store.read_telemetry(state.id) == []
    assert _counts(store) == before
    assert store.get(state.id)[0] == saved
    assert store.pending_actions() != []

    store.save(moved(saved, Phase.PROMOTED, weight=100.0, at=1_040.0), expected_version=saved.version, fence=new)
    store.mark_done(action_id, fence=new)
    assert store.pending_actions() == []
    store.write_telemetry("prometheus", [(state.id, Variant.BASELINE, telemetry(3))], fence=new)
    assert store.read_telemetry(state.id) == [(Variant.BASELINE, telemetry(3))]


def test_racing_controllers_get_one_lease(open_store: Callable[[], SqlStore]) -> None:
    stores = [open_store() for _ in range(6)]
    barrier = threading.Barrier(len(stores))

    def race(index: int) -> Fence | None:
        barrier.wait()
        return stores[index].acquire_lease("controller", f"c{index}", ttl_s=30, now=1_000.0)

    with ThreadPoolExecutor(len(stores)) as pool:
        won = [fence for fence in pool.map(race, range(len(stores))) if fence is not None]
    assert won == [Fence("controller", 1)]


def test_marking_an_action_done_twice_audits_it_once(store: SqlStore) -> None:
    state = rollout()
    store.create(state, SPEC_TEXT, actor="alice")
    store.save(moved(state, Phase.CANARY, actions=(tag_action(state.id),)), expected_version=0)
    [(action_id, _)] = store.pending_actions()
    store.mark_done(action_id)
    store.mark_done(action_id)  # a retry after a crash between the effect and this mark
    assert [e["action"] for e in store.audit_events(state.id)].count("action.done") == 1


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


# -- schema migrations ----------------------------------------------------------------------------


def _config(conn: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def _build(url: str, revision: str) -> sa.Engine:
    """An engine on a store built up to ``revision`` only, as an older modelcanary left it."""
    engine = engine_for(normalise_url(url))
    with engine.begin() as conn:
        command.upgrade(_config(conn), revision)
    return engine


def test_head_is_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD


def test_the_migrations_build_exactly_the_declared_tables(store_url: str) -> None:
    store = SqlStore(store_url)
    try:
        with store.engine.connect() as conn:
            assert schema_revision(conn) == HEAD
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        store.close()


def _old_rollout(engine: sa.Engine) -> None:
    """Rows as modelcanary 0.1.0 wrote them: a rollout in canary with its transition and audit."""
    state = rollout("old-1")
    outcome = moved(state, Phase.CANARY)
    saved = outcome.state.model_copy(update={"version": 1})
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO rollouts (id, endpoint, phase, active, version, state, spec, created_at) "
                "VALUES (:id, :endpoint, 'canary', 1, 1, :state, :spec, :at)"
            ),
            {
                "id": state.id,
                "endpoint": state.endpoint,
                "state": saved.model_dump_json(),
                "spec": SPEC_TEXT,
                "at": 1_000.0,
            },
        )
        assert outcome.transition is not None
        conn.execute(
            sa.text("INSERT INTO transitions (rollout_id, body) VALUES (:id, :body)"),
            {"id": state.id, "body": outcome.transition.model_dump_json()},
        )


def test_a_store_at_the_first_revision_upgrades_with_its_data(store_url: str) -> None:
    engine = _build(store_url, "0001")
    _old_rollout(engine)
    with engine.connect() as conn:
        assert schema_revision(conn) == "0001"
        assert "leases" not in sa.inspect(conn).get_table_names()
    engine.dispose()

    store = SqlStore(store_url)
    try:
        state, text = store.get("old-1")
        assert (state.phase, state.version, text) == (Phase.CANARY, 1, SPEC_TEXT)
        assert len(store.history("old-1")) == 1
        assert store.acquire_lease("controller", "a", ttl_s=5, now=1.0) == Fence("controller", 1)  # 0002's table
        with store.engine.connect() as conn:
            assert schema_revision(conn) == HEAD
    finally:
        store.close()


def test_a_store_made_before_migrations_is_stamped_then_upgraded(store_url: str) -> None:
    """0.1.0 made its tables with create_all and kept no alembic_version: they are revision 0001's."""
    engine = _build(store_url, "0001")
    _old_rollout(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
        assert schema_revision(conn) == "0001"
    engine.dispose()

    store = SqlStore(store_url)
    try:
        assert store.get("old-1")[0].phase is Phase.CANARY
        with store.engine.connect() as conn:
            assert schema_revision(conn) == HEAD
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        store.close()


def test_the_audit_head_is_built_from_the_events_of_an_older_store(store_url: str) -> None:
    engine = _build(store_url, "0003")
    previous = GENESIS
    with engine.begin() as conn:
        for index in range(3):
            event = {"at": float(index), "actor": "old", "action": "rollout.create", "rollout_id": None, "detail": {}}
            digest = audit_hash(previous, event)
            conn.execute(audit.insert().values(**{**event, "detail": "{}"}, prev_hash=previous, hash=digest))
            previous = digest
    engine.dispose()
    store = SqlStore(store_url)
    try:
        assert store.verify_audit() == (3, None)
        store.create(rollout("new-1", endpoint="new"), SPEC_TEXT, actor="new")
        assert store.verify_audit() == (4, None)  # appended after the old chain's head
    finally:
        store.close()


def test_processes_opening_an_old_store_at_once_upgrade_it_once(
    store_url: str, open_store: Callable[[], SqlStore]
) -> None:
    _build(store_url, "0001").dispose()
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_store(), range(4)))
    with stores[0].engine.connect() as conn:
        assert schema_revision(conn) == HEAD
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    stores[0].create(rollout("new-1", endpoint="x"), SPEC_TEXT, actor="t")
    assert stores[3].get("new-1")[0].id == "new-1"
