"""Leases in the SQL store: a controller takes one to decide alone, and each write it makes
carries the lease's fencing token, refused once the lease has changed hands (a stalled leader's
late write must not land over its successor's)."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from modelcanary.adapters.store.schema import leases
from modelcanary.domain.errors import Fenced
from modelcanary.ports import Fence


class LeaseTable:
    """The lease methods of ``SqlStore`` (which brings ``_tx``)."""

    if TYPE_CHECKING:

        def _tx(self) -> AbstractContextManager[Connection]: ...

    def acquire_lease(self, name: str, holder: str, *, ttl_s: float, now: float | None = None) -> Fence | None:
        """Take or renew the lease ``name`` for ``holder`` until ``now + ttl_s``; None while another
        holder's lease is still running. The token grows by one each time the lease changes hands."""
        at = time.time() if now is None else now
        with self._tx() as conn:
            row = conn.execute(sa.select(leases).where(leases.c.name == name).with_for_update()).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(leases.insert().values(name=name, holder=holder, token=1, expires_at=at + ttl_s))
                except IntegrityError:
                    return None  # another holder inserted it first
                return Fence(name, 1)
            if row.holder != holder and row.expires_at > at:
                return None
            token = row.token if row.holder == holder and row.expires_at > at else row.token + 1
            conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.token == row.token)
                .values(holder=holder, token=token, expires_at=at + ttl_s)
            )
            return Fence(name, token)

    def release_lease(self, fence: Fence, holder: str) -> None:
        """Give the lease up now (on a clean shutdown), so another holder need not wait for it to expire."""
        with self._tx() as conn:
            conn.execute(
                leases.update()
                .where(leases.c.name == fence.lease, leases.c.holder == holder, leases.c.token == fence.token)
                .values(expires_at=0.0)
            )

    def _check_fence(self, conn: Connection, fence: Fence) -> None:
        # FOR SHARE: a new leader's takeover (an UPDATE of this row) waits until this write commits
        current = conn.execute(
            sa.select(leases.c.token).where(leases.c.name == fence.lease).with_for_update(read=True)
        ).scalar()
        if current != fence.token:
            raise Fenced(
                f"lease {fence.lease!r} has passed to token {current}; a write with token {fence.token} is refused"
            )
