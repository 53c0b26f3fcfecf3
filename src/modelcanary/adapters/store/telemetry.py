"""Telemetry in the SQL store: each source's cumulative counts per rollout and variant, one row
each, overwritten by every flush (a gateway writes its totals since it started; the judge sums
the sources); labels in transit between gateways (``relay_labels``); and what a stopped gateway
handed over for another to adopt (``hand_off``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from modelcanary.adapters.store.schema import chunks, handoff_keys, handoffs, relayed_labels, telemetry
from modelcanary.domain.telemetry import Variant, VariantTelemetry

if TYPE_CHECKING:
    from modelcanary.ports import Fence


HANDOFF_CHUNK = 10_000  # rows per stored JSON list: ~1 MB


class TelemetryTable:
    """The telemetry methods of ``SqlStore`` (which brings ``_tx``)."""

    if TYPE_CHECKING:

        def _tx(self) -> AbstractContextManager[Connection]: ...

        def _check_fence(self, conn: Connection, fence: Fence) -> None: ...

    def write_telemetry(
        self, source: str, rows: Sequence[tuple[str, Variant, VariantTelemetry]], *, fence: Fence | None = None
    ) -> None:
        """Each row's counts as the source's totals, inserted or overwritten, in one statement
        run for every row (a flush of 1,000 rollouts was one UPDATE, then an INSERT where it
        missed, per row: 1.1-1.2 s on PostgreSQL and 0.5 s on SQLite here, measured). With
        ``fence`` (a controller writing what it read from a metric source), ``Fenced`` and nothing
        written once the lease has passed on: a stalled leader's older read must not overwrite a
        newer one."""
        if not rows:
            return
        now = time.time()
        values = [
            {
                "rollout_id": rollout_id,
                "variant": variant.value,
                "source": source,
                "counts": orjson.dumps(counts.to_json()).decode(),
                "updated_at": now,
            }
            for rollout_id, variant, counts in rows
        ]
        with self._tx() as conn:
            if fence is not None:
                self._check_fence(conn, fence)
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(telemetry)
            upsert = insert.on_conflict_do_update(
                index_elements=[telemetry.c.rollout_id, telemetry.c.variant, telemetry.c.source],
                set_={"counts": insert.excluded.counts, "updated_at": insert.excluded.updated_at},
            )
            conn.execute(upsert, values)

    def read_telemetry_many(self, rollout_ids: Sequence[str]) -> dict[str, list[tuple[Variant, VariantTelemetry]]]:
        """``read_telemetry`` for many rollouts in one transaction."""
        found: dict[str, list[tuple[Variant, VariantTelemetry]]] = {rollout_id: [] for rollout_id in rollout_ids}
        with self._tx() as conn:
            for chunk in chunks(rollout_ids):
                query = sa.select(telemetry.c.rollout_id, telemetry.c.variant, telemetry.c.counts).where(
                    telemetry.c.rollout_id.in_(chunk)
                )
                for row in conn.execute(query):
                    found[row.rollout_id].append(
                        (Variant(row.variant), VariantTelemetry.from_json(orjson.loads(row.counts)))
                    )
        return found

    def read_telemetry(self, rollout_id: str) -> list[tuple[Variant, VariantTelemetry]]:
        """One rollout's rows: each source's cumulative counts per variant (``engine.analysis.pair`` sums them)."""
        return self.read_telemetry_many([rollout_id])[rollout_id]

    def relay_labels(self, via: str, items: Sequence[tuple[str, str, int]]) -> None:
        """Labels that gateway ``via`` received for predictions another gateway made:
        (issuer, prediction id, label), kept until the issuer takes them."""
        if not items:
            return
        now = time.time()
        values = [
            {"issuer": issuer, "prediction_id": prediction_id, "label": label, "via": via, "received_at": now}
            for issuer, prediction_id, label in items
        ]
        with self._tx() as conn:
            conn.execute(sa.insert(relayed_labels), values)

    def take_labels(self, *issuers: str) -> list[tuple[str, int]]:
        """The labels relayed to these issuers, oldest first, removed as they are read (a
        ``DELETE ... RETURNING``: two gateways cannot both take a label)."""
        taken: list[Any] = []
        with self._tx() as conn:
            for some in chunks(issuers):
                taken += conn.execute(
                    sa.delete(relayed_labels)
                    .where(relayed_labels.c.issuer.in_(some))
                    .returning(relayed_labels.c.id, relayed_labels.c.prediction_id, relayed_labels.c.label)
                ).all()
        return [(row.prediction_id, row.label) for row in sorted(taken, key=lambda row: row.id)]

    def hand_off(self, via: str, rows: Sequence[Sequence[Any]], key: str | None = None) -> None:
        """What stopping gateway ``via`` hands over (``Recorder.hand_off``'s rows, JSON), in one
        transaction: another gateway adopts all of it or none, and a second hand-off of one ``key``
        (default ``via``) stores nothing. Stored as JSON lists of ``HANDOFF_CHUNK`` rows: 200,000
        predictions are 20 statements' values, not 200,000."""
        now = time.time()
        values = [
            {"via": via, "rows": orjson.dumps(rows[start : start + HANDOFF_CHUNK]).decode(), "handed_at": now}
            for start in range(0, len(rows), HANDOFF_CHUNK)
        ]
        if values:
            with self._tx() as conn:
                # a retry after a write that landed (its answer lost) stores nothing: a second copy
                # was adopted too, by another flush or another gateway, and its labels counted twice
                once = key or via
                if conn.execute(sa.select(handoff_keys.c.key).where(handoff_keys.c.key == once)).first() is not None:
                    return
                conn.execute(sa.insert(handoff_keys), {"key": once, "handed_at": now})
                conn.execute(sa.insert(handoffs), values)

    def adopt_handoffs(self) -> list[list[Any]]:
        """Every row handed off and not yet adopted, oldest first, removed as it is read (one
        ``DELETE ... RETURNING``: no two gateways adopt the same row)."""
        with self._tx() as conn:
            taken = conn.execute(sa.delete(handoffs).returning(handoffs.c.id, handoffs.c.rows)).all()
        return [row for chunk in sorted(taken, key=lambda chunk: chunk.id) for row in orjson.loads(chunk.rows)]

    def expire_labels(self, received_before: float) -> int:
        """Drop relayed labels no gateway took since ``received_before`` (their issuer is gone, and
        its predictions with it); how many. Hand-off keys a day older go too."""
        with self._tx() as conn:
            done = conn.execute(sa.delete(relayed_labels).where(relayed_labels.c.received_at < received_before))
            # a hand-off's key is new at each start: a day on, its hand-off is long adopted
            conn.execute(sa.delete(handoff_keys).where(handoff_keys.c.handed_at < received_before - 86_400.0))
        return int(done.rowcount)
