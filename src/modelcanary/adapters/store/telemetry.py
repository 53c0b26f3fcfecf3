"""Telemetry in the SQL store: each source's cumulative counts per rollout and variant, one row
each, overwritten by every flush (a gateway writes its totals since it started; the judge sums
the sources); and labels in transit between gateways (``relay_labels``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from modelcanary.adapters.store.schema import chunks, relayed_labels, telemetry
from modelcanary.domain.telemetry import Variant, VariantTelemetry

if TYPE_CHECKING:
    from modelcanary.ports import Fence


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

    def take_labels(self, issuer: str) -> list[tuple[str, int]]:
        """The labels relayed to ``issuer``, oldest first, removed as they are read (one statement:
        two replicas of one issuer cannot both take a label)."""
        with self._tx() as conn:
            taken = conn.execute(
                sa.delete(relayed_labels)
                .where(relayed_labels.c.issuer == issuer)
                .returning(relayed_labels.c.id, relayed_labels.c.prediction_id, relayed_labels.c.label)
            ).all()
        return [(row.prediction_id, row.label) for row in sorted(taken, key=lambda row: row.id)]

    def expire_labels(self, received_before: float) -> int:
        """Drop relayed labels no gateway took since ``received_before`` (their issuer is gone, and
        its predictions with it); how many."""
        with self._tx() as conn:
            done = conn.execute(sa.delete(relayed_labels).where(relayed_labels.c.received_at < received_before))
        return int(done.rowcount)
