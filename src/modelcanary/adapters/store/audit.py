"""The audit log in the SQL store: an append-only table of events, each hash covering the hash of
the event before it and the event's canonical JSON, so an edited, deleted or reordered row shows;
a head row keeps the chain's length and last hash, so events cut off the end show too."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from modelcanary.adapters.store.schema import AUDIT_LOCK, GENESIS, audit, audit_hash, audit_head, rollouts


@dataclass(frozen=True)
class BrokenLink:
    """Where the audit chain first fails to verify, and why."""

    position: int  # 0-based, in id order
    id: int
    reason: str


ACTOR_CHARS = 200  # the audit table's actor column


def _fitted(event: dict[str, Any]) -> dict[str, Any]:
    """An event whose actor fits its column: a longer one (an Airflow task's id, a watched alias
    with a long model name) is cut to fit, and kept whole in the detail, so nothing is lost and
    PostgreSQL does not refuse the event (and with it the change it records)."""
    actor = event["actor"]
    if len(actor) <= ACTOR_CHARS:
        return event
    return {**event, "actor": actor[: ACTOR_CHARS - 1] + "\u2026", "detail": {**event["detail"], "actor": actor}}


class AuditLog:
    """The audit methods of ``SqlStore`` (which brings ``engine`` and ``_tx``)."""

    if TYPE_CHECKING:
        engine: Engine

        def _tx(self, *, read_only: bool = False) -> AbstractContextManager[Connection]: ...

    def _audit(
        self, conn: Connection, *, at: float, actor: str, action: str, rollout_id: str | None, detail: dict[str, Any]
    ) -> None:
        self._audit_many(
            conn, [{"at": at, "actor": actor, "action": action, "rollout_id": rollout_id, "detail": detail}]
        )

    def _audit_many(self, conn: Connection, events: Sequence[dict[str, Any]]) -> None:
        """Append events to the chain in order, each hash covering the one before it."""
        if not events:
            return
        if conn.dialect.name == "postgresql":
            # appends must be serial, or two transactions both read the same last hash and fork the
            # chain; SQLite's BEGIN IMMEDIATE already serialises every writer
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(AUDIT_LOCK)))
        head = conn.execute(
            sa.select(audit_head.c.count, audit_head.c.hash).where(audit_head.c.name == "audit")
        ).first()
        length, prev = (int(head[0]), str(head[1])) if head is not None else (0, GENESIS)
        rows = []
        for event in map(_fitted, events):
            digest = audit_hash(prev, event)
            rows.append(
                {**event, "detail": json.dumps(event["detail"], sort_keys=True), "prev_hash": prev, "hash": digest}
            )
            prev = digest
        # the drivers run an executemany as one statement per row, in order (psycopg 3 pipelines
        # them; SQLAlchemy folds rows into one multi-row VALUES only for psycopg2 or RETURNING):
        # the chain is walked in id order, so each row's id must follow the one before it
        conn.execute(audit.insert(), rows)
        if head is None:
            conn.execute(audit_head.insert().values(name="audit", count=len(rows), hash=prev))
        else:
            conn.execute(
                audit_head.update().where(audit_head.c.name == "audit").values(count=length + len(rows), hash=prev)
            )

    def append_audit(
        self, *, at: float, actor: str, action: str, rollout_id: str | None, detail: dict[str, Any]
    ) -> None:
        with self._tx() as conn:
            self._audit(conn, at=at, actor=actor, action=action, rollout_id=rollout_id, detail=detail)

    def audit_events(
        self,
        rollout_id: str | None = None,
        *,
        endpoints: Sequence[str] | None = None,
        after: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Audit events in id order (oldest first, or newest first), each filter applied by the
        database: one rollout's; only those of rollouts on ``endpoints`` (None: every event, those
        of no rollout too); ids past ``after`` and short of ``before``; at most ``limit`` of them.
        A page ends with the id the next one starts ``after`` (or ``before``, newest first)."""
        query = sa.select(audit).order_by(audit.c.id.desc() if newest_first else audit.c.id)
        if rollout_id is not None:
            query = query.where(audit.c.rollout_id == rollout_id)
        if endpoints is not None:
            # a subquery, not a join: the rollout ids of those endpoints are few, the events many
            query = query.where(
                audit.c.rollout_id.in_(sa.select(rollouts.c.id).where(rollouts.c.endpoint.in_(endpoints)))
            )
        if after is not None:
            query = query.where(audit.c.id > after)
        if before is not None:
            query = query.where(audit.c.id < before)
        if limit is not None:
            query = query.limit(limit)
        with self._tx(read_only=True) as conn:
            return [{**row._asdict(), "detail": json.loads(row.detail)} for row in conn.execute(query)]

    def audit_head(self) -> tuple[int, str]:
        """The chain's length and last hash as its head row keeps them: one row read, so a caller
        can tell whether anything was appended since it last verified the chain."""
        with self._tx(read_only=True) as conn:
            head = conn.execute(sa.select(audit_head.c.count, audit_head.c.hash)).first()
        return (int(head[0]), str(head[1])) if head is not None else (0, GENESIS)

    def verify_audit(self) -> tuple[int, BrokenLink | None]:
        """Walk the whole chain in id order: the number of events, and the first broken link if any.

        An edited row fails its own hash; a deleted or reordered row fails the next row's
        ``prev_hash``; events cut off the end leave a chain shorter than the head row says. (Whoever
        can rewrite the table can rewrite the head too: keep the head hash that ``audit export``
        prints somewhere else as well.)"""
        previous, count, last_id = GENESIS, 0, 0
        # the head and the events from one snapshot, or an append between the two reads would look
        # like a cut; and, on SQLite, without the write lock, which a long walk would hold from writers
        with self._tx(read_only=True) as conn:
            head = conn.execute(sa.select(audit_head.c.count, audit_head.c.hash)).first()
            for position, row in enumerate(conn.execute(sa.select(audit).order_by(audit.c.id))):
                count += 1
                if row.prev_hash != previous:
                    return count, BrokenLink(position, row.id, "prev_hash is not the hash of the event before it")
                try:
                    detail = json.loads(row.detail)
                except ValueError:
                    return count, BrokenLink(position, row.id, "detail is not JSON")
                event = {"at": row.at, "actor": row.actor, "action": row.action, "rollout_id": row.rollout_id}
                if row.hash != audit_hash(previous, {**event, "detail": detail}):
                    return count, BrokenLink(position, row.id, "hash does not match the event's content")
                previous, last_id = row.hash, row.id
        if head is None:  # every store has one from its first migrations on: it was deleted
            return count, BrokenLink(
                count, last_id, "the chain's head row is missing: it, and maybe events, were deleted"
            )
        expected = (int(head[0]), str(head[1]))
        if (count, previous) != expected:
            reason = f"the chain ends after {count} events but its head says {expected[0]} ending in {expected[1][:12]}"
            return count, BrokenLink(count, last_id, reason + ": events were cut off the end, or the head was edited")
        return count, None
