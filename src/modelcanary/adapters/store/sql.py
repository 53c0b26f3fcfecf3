"""The state store on SQLAlchemy 2 Core: SQLite (WAL) embedded, PostgreSQL by URL.

A decision is saved in one transaction: the new state (compare-and-set on ``version``), its
transition, the route it implies, its side effects as pending actions, and an audit event whose
hash covers the previous event's hash, so an edited, deleted or reordered row shows. A controller
holding a lease passes its fencing token, and the save is refused once the lease has changed hands.

The tables, the engines and the migrations are in ``schema.py``; the methods of the other tables
are mixed in from ``tokens.py``, ``audit.py``, ``telemetry.py``, ``leases.py`` and ``routes.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from modelcanary.adapters.store.audit import AuditLog
from modelcanary.adapters.store.leases import LeaseTable
from modelcanary.adapters.store.routes import RouteTable
from modelcanary.adapters.store.schema import (
    actions,
    chunks,
    engine_for,
    migrate,
    normalise_url,
    reading,
    rollouts,
    transitions,
)
from modelcanary.adapters.store.telemetry import TelemetryTable
from modelcanary.adapters.store.tokens import TokenTable
from modelcanary.domain.errors import Conflict, Fenced, ModelcanaryError, NotFound, Stale, StoreError
from modelcanary.domain.state import Action, Outcome, RolloutState, Transition
from modelcanary.ports import Fence


class _Contended(Exception):
    """The batched save cannot tell which rollout failed: redo it one savepoint each."""


def _created(state: RolloutState, spec_json: str | None) -> dict[str, Any]:
    """A new rollout's audit detail: both models and, when known, their lineage and the traffic plan
    (steps and sticky key), so who was served what, when and why is answerable from the log alone."""
    detail: dict[str, Any] = {
        "endpoint": state.endpoint,
        "baseline": state.baseline.uri,
        "candidate": state.candidate.uri,
    }
    infos = {"baseline": state.baseline_info, "candidate": state.candidate_info}
    if any(infos.values()):
        detail["lineage"] = {role: info.lineage() if info else None for role, info in infos.items()}
    traffic = json.loads(spec_json).get("spec", {}).get("traffic") if spec_json else None
    if traffic is not None:
        detail["traffic"] = traffic
    if state.policies:
        detail["policies"] = sorted(state.policies)
    return detail


_BATCH_UPDATE = (
    rollouts.update()
    .where(rollouts.c.id == sa.bindparam("b_id"), rollouts.c.version == sa.bindparam("b_expected"))
    .values(
        state=sa.bindparam("b_state"),
        phase=sa.bindparam("b_phase"),
        version=sa.bindparam("b_version"),
        active=sa.bindparam("b_active"),
    )
)


def _transition_event(rollout_id: str, transition: Transition) -> dict[str, Any]:
    """A transition's audit event."""
    detail: dict[str, Any] = {
        "source": transition.source.value,
        "step": transition.step,
        "weight": transition.weight,
        "paused": transition.paused,
        "reason": transition.reason,
    }
    if transition.gate is not None:  # the policies asked and what they denied
        detail["gate"] = transition.gate
    return {
        "at": transition.at,
        "actor": transition.actor,
        "action": f"rollout.{transition.target.value}",
        "rollout_id": rollout_id,
        "detail": detail,
    }


class SqlStore(TokenTable, AuditLog, TelemetryTable, LeaseTable, RouteTable):
    """Implements RolloutStore, ActionQueue, TelemetryStore, RouteSource, History, Leases, AuditLog and Tokens."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = engine_for(self.url)
        with self._tx() as conn:
            migrate(conn)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self, *, read_only: bool = False) -> Iterator[Connection]:
        """One transaction; ``read_only`` for pure reads: one snapshot, and on SQLite no write lock
        (``schema.reading``)."""
        try:
            with self.engine.connect() as conn, (reading(conn) if read_only else conn).begin():
                yield conn
        except IntegrityError as exc:
            raise Conflict(f"the store refused a conflicting write: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"store {self.engine.url.render_as_string(hide_password=True)}: {exc}") from exc

    # -- rollouts --------------------------------------------------------------------------------

    def create(self, state: RolloutState, spec_text: str, *, actor: str, spec_json: str | None = None) -> None:
        with self._tx() as conn:
            active = conn.execute(
                sa.select(rollouts.c.id).where(rollouts.c.endpoint == state.endpoint, rollouts.c.active == 1)
            ).scalar()
            if active:
                raise Conflict(f"endpoint {state.endpoint!r} already has an active rollout: {active}")
            conn.execute(
                rollouts.insert().values(
                    id=state.id,
                    endpoint=state.endpoint,
                    phase=state.phase.value,
                    active=1,
                    version=state.version,
                    state=state.model_dump_json(),
                    spec=spec_text,
                    spec_json=spec_json,
                    created_at=state.created_at,
                )
            )
            self._audit(
                conn,
                at=state.created_at,
                actor=actor,
                action="rollout.create",
                rollout_id=state.id,
                detail=_created(state, spec_json),
            )

    def get(self, rollout_id: str) -> tuple[RolloutState, str]:
        if "\x00" in rollout_id:  # no id holds one; PostgreSQL refuses it in text, which was a 503 (audit)
            raise NotFound(f"no rollout {rollout_id!r}")
        with self._tx() as conn:
            row = conn.execute(sa.select(rollouts.c.state, rollouts.c.spec).where(rollouts.c.id == rollout_id)).first()
        if row is None:
            raise NotFound(f"no rollout {rollout_id!r}")
        return RolloutState.model_validate_json(row.state), row.spec

    def list_rollouts(
        self,
        *,
        active: bool | None = None,
        endpoints: Sequence[str] | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> list[RolloutState]:
        """Rollouts newest first (by creation time, then id), each filter applied by the database,
        so a page parses only its own states: only active ones (``active``), or only ended ones
        (False); only those of ``endpoints`` (None: all); only those after rollout ``before`` in
        this order (a page's last id: the next page; one that does not exist: ``NotFound``); at
        most ``limit``."""
        query = sa.select(rollouts.c.state).order_by(rollouts.c.created_at.desc(), rollouts.c.id.desc())
        if active is not None:
            query = query.where(rollouts.c.active == int(active))
        if endpoints is not None:
            query = query.where(rollouts.c.endpoint.in_(endpoints))
        if limit is not None:
            query = query.limit(limit)
        with self._tx(read_only=True) as conn:
            if before is not None:
                mark = conn.execute(sa.select(rollouts.c.created_at).where(rollouts.c.id == before)).first()
                if mark is None:
                    raise NotFound(f"no rollout {before!r}")
                query = query.where(
                    sa.or_(
                        rollouts.c.created_at < mark.created_at,
                        sa.and_(rollouts.c.created_at == mark.created_at, rollouts.c.id < before),
                    )
                )
            return [RolloutState.model_validate_json(row.state) for row in conn.execute(query)]

    def active_rollouts(
        self, known: Mapping[str, RolloutState], *, mine: Callable[[str], bool] | None = None
    ) -> list[RolloutState]:
        """The active rollouts (those ``mine`` accepts), newest first; those still at the version
        of their state in ``known`` are not read again. A controller knows the state it saved last
        tick, and parsing a thousand states (the judge's memory included) took longer than the query."""
        query = sa.select(rollouts.c.id, rollouts.c.version).where(rollouts.c.active == 1)
        with self._tx() as conn:
            versions = conn.execute(query.order_by(rollouts.c.created_at.desc())).all()
            if mine is not None:
                versions = [row for row in versions if mine(row.id)]
            stale = {row.id for row in versions if row.id not in known or known[row.id].version != row.version}
            fresh: dict[str, RolloutState] = {}
            for chunk in chunks(sorted(stale)):
                rows = conn.execute(sa.select(rollouts.c.id, rollouts.c.state).where(rollouts.c.id.in_(chunk)))
                fresh.update({row.id: RolloutState.model_validate_json(row.state) for row in rows})
        # a state read just now may be newer than the version listed (another writer saved it in
        # between): it is the freshest there is, and its own version is what a save compares with
        return [
            fresh[row.id] if row.id in stale else known[row.id]
            for row in versions
            if row.id not in stale or row.id in fresh
        ]

    def specs(self, rollout_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """Each rollout's spec text and validated JSON (None for rollouts made before 0003)."""
        found: dict[str, tuple[str, str | None]] = {}
        with self._tx() as conn:
            for chunk in chunks(rollout_ids):
                query = sa.select(rollouts.c.id, rollouts.c.spec, rollouts.c.spec_json).where(rollouts.c.id.in_(chunk))
                found.update({row.id: (row.spec, row.spec_json) for row in conn.execute(query)})
        return found

    def save(self, outcome: Outcome, *, expected_version: int, fence: Fence | None = None) -> RolloutState:
        [(saved, error)] = self.save_many([(outcome, expected_version)], fence=fence)
        if error is not None:
            raise error
        assert saved is not None
        return saved

    def save_many(
        self, items: Sequence[tuple[Outcome, int]], *, fence: Fence | None = None
    ) -> list[tuple[RolloutState | None, ModelcanaryError | None]]:
        """Save many outcomes in one transaction, each as ``save`` would and each on its own: one
        that lost its compare-and-set (or broke a constraint) is kept out and reported, and the
        others still commit. ``Fenced`` for all of them if the lease moved.

        The usual tick, where nobody raced, takes the fast path: one batched compare-and-set
        UPDATE for every rollout. Should any of them miss, the transaction is rolled back and
        redone one savepoint per rollout, which finds out which."""
        if not items:
            return []
        try:
            with self._tx() as conn:
                if fence is not None:
                    self._check_fence(conn, fence)
                return self._save_batched(conn, items)
        except Fenced:
            raise
        except (_Contended, Conflict):  # a conflicting write got past the checks: find out whose
            pass
        results: list[tuple[RolloutState | None, ModelcanaryError | None]] = []
        with self._tx() as conn:
            if fence is not None:
                self._check_fence(conn, fence)
            for outcome, expected_version in items:
                new = outcome.state.model_copy(update={"version": expected_version + 1})
                try:
                    with conn.begin_nested():
                        saved = self._save_one(conn, outcome, new, expected_version)
                except IntegrityError as exc:
                    refused = Conflict(f"rollout {new.id}: the store refused a conflicting write: {exc.orig}")
                    results.append((None, refused))
                    continue
                lost = Stale(f"rollout {new.id} changed since version {expected_version}; not saved")
                results.append((new, None) if saved else (None, lost))
        return results

    def _save_batched(
        self, conn: Connection, items: Sequence[tuple[Outcome, int]]
    ) -> list[tuple[RolloutState | None, ModelcanaryError | None]]:
        keys = [action.key for outcome, _ in items for action in outcome.actions]
        if len(set(keys)) != len(keys) or any(
            conn.execute(sa.select(actions.c.key).where(actions.c.key.in_(chunk))).first() for chunk in chunks(keys)
        ):
            raise _Contended  # an action key already saved: the slow path names the rollout
        news = [outcome.state.model_copy(update={"version": expected + 1}) for outcome, expected in items]
        rows = [
            {
                "b_id": new.id,
                "b_expected": expected,
                "b_state": new.model_dump_json(),
                "b_phase": new.phase.value,
                "b_version": new.version,
                "b_active": 0 if new.phase.is_terminal() else 1,
            }
            for new, (_, expected) in zip(news, items, strict=True)
        ]
        if not conn.dialect.supports_sane_multi_rowcount:
            raise _Contended
        # one UPDATE a rollout, pipelined by psycopg 3 (one statement for the batch, UPDATE ... FROM
        # unnest(arrays), was tried on PostgreSQL: 180-250 ms for 1,000 rollouts against 80)
        updated = conn.execute(_BATCH_UPDATE, rows).rowcount
        if updated != len(items):
            raise _Contended  # someone else saved one of them since it was read
        self._save_effects_many(conn, [(outcome, new) for (outcome, _), new in zip(items, news, strict=True)])
        return [(new, None) for new in news]

    def _save_one(self, conn: Connection, outcome: Outcome, new: RolloutState, expected_version: int) -> bool:
        updated = conn.execute(
            rollouts.update()
            .where(rollouts.c.id == new.id, rollouts.c.version == expected_version)
            .values(
                state=new.model_dump_json(),
                phase=new.phase.value,
                version=new.version,
                active=0 if new.phase.is_terminal() else 1,
            )
        ).rowcount
        if updated != 1:
            return False
        self._save_effects(conn, outcome, new)
        return True

    def _save_effects(self, conn: Connection, outcome: Outcome, new: RolloutState) -> None:
        """What a saved state brings with it: its transition (audited), its route, its actions."""
        self._save_effects_many(conn, [(outcome, new)])

    def _save_effects_many(self, conn: Connection, saved: Sequence[tuple[Outcome, RolloutState]]) -> None:
        """``_save_effects`` for a batch in a few statements rather than eight round trips per
        rollout: every transition in one insert, their audit events as one stretch of the chain
        (the lock taken, the head read and written once), the routes' versions from one read, and
        every action in one insert. A tick where a thousand rollouts move at once (all entering
        their first step, say) took 2.5 s on PostgreSQL one rollout at a time."""
        moved = [(new.id, outcome.transition) for outcome, new in saved if outcome.transition is not None]
        if moved:
            conn.execute(
                transitions.insert(),
                [{"rollout_id": rollout_id, "body": t.model_dump_json()} for rollout_id, t in moved],
            )
            self._audit_many(conn, [_transition_event(rollout_id, t) for rollout_id, t in moved])
        changed_routes = [outcome.route for outcome, _ in saved if outcome.route is not None]
        if changed_routes:
            self._put_routes(conn, changed_routes)
        rows = [
            {"rollout_id": new.id, "key": action.key, "body": action.model_dump_json(), "attempts": 0}
            for outcome, new in saved
            for action in outcome.actions
        ]
        if rows:
            conn.execute(actions.insert(), rows)

    def history(self, rollout_id: str) -> list[Transition]:
        query = sa.select(transitions.c.body).where(transitions.c.rollout_id == rollout_id).order_by(transitions.c.id)
        with self._tx() as conn:
            return [Transition.model_validate_json(row.body) for row in conn.execute(query)]

    # -- actions ---------------------------------------------------------------------------------

    def pending_actions(self) -> list[tuple[int, Action]]:
        query = sa.select(actions.c.id, actions.c.body).where(actions.c.done_at.is_(None)).order_by(actions.c.id)
        with self._tx() as conn:
            return [(row.id, Action.model_validate_json(row.body)) for row in conn.execute(query)]

    def mark_done(
        self,
        action_id: int,
        *,
        error: str | None = None,
        fence: Fence | None = None,
        final: bool = False,
        found: Mapping[str, Any] | None = None,
    ) -> None:
        now = time.time()
        values: dict[str, Any] = {"attempts": actions.c.attempts + 1, "last_error": error}
        if error is None or final:
            values["done_at"] = now
        with self._tx() as conn:
            if fence is not None:
                self._check_fence(conn, fence)
            row = conn.execute(
                actions.update()
                .where(actions.c.id == action_id, actions.c.done_at.is_(None))
                .values(**values)
                .returning(actions.c.rollout_id, actions.c.key, actions.c.body)
            ).first()
            if row is not None and (error is None or final):
                action = Action.model_validate_json(row.body)
                detail = {"key": row.key, "kind": action.kind.value, "payload": action.payload, **(found or {})}
                what = "action.done" if error is None else "action.failed"
                if error is not None:
                    detail["error"] = error
                self._audit(conn, at=now, actor="controller", action=what, rollout_id=row.rollout_id, detail=detail)
