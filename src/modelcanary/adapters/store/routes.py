"""The routing table in the SQL store: one route per endpoint, each numbered by a store-wide
version that grows with every change, so a gateway polling ``routes_version`` reads the table
again only when something changed. A decision's save writes its route in its own transaction."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelcanary.adapters.store.schema import chunks, routes
from modelcanary.domain.state import Route


class RouteTable:
    """The routing-table methods of ``SqlStore`` (which brings ``_tx``)."""

    if TYPE_CHECKING:

        def _tx(self) -> AbstractContextManager[Connection]: ...

    def _put_route(self, conn: Connection, route: Route) -> None:
        self._put_routes(conn, [route])

    def _put_routes(self, conn: Connection, changed: Sequence[Route]) -> None:
        """Each route under the next store-wide version, in order: one read of the version, one
        update of the endpoints that have a route and one insert of those that have none."""
        version = conn.execute(sa.select(sa.func.max(routes.c.version))).scalar() or 0
        numbered = [(version + offset, route) for offset, route in enumerate(changed, start=1)]
        endpoints = [route.endpoint for route in changed]
        if len(set(endpoints)) != len(endpoints):  # one endpoint twice: each in turn, the last one wins
            for number, route in numbered:
                self._upsert_route(conn, number, route)
            return
        existing: set[str] = set()
        for chunk in chunks(endpoints):
            existing.update(conn.execute(sa.select(routes.c.endpoint).where(routes.c.endpoint.in_(chunk))).scalars())
        updates = [
            {"b_endpoint": r.endpoint, "b_version": n, "b_route": r.model_dump_json()}
            for n, r in numbered
            if r.endpoint in existing
        ]
        if updates:
            conn.execute(
                routes.update()
                .where(routes.c.endpoint == sa.bindparam("b_endpoint"))
                .values(version=sa.bindparam("b_version"), route=sa.bindparam("b_route")),
                updates,
            )
        inserts = [
            {"endpoint": r.endpoint, "version": n, "route": r.model_dump_json()}
            for n, r in numbered
            if r.endpoint not in existing
        ]
        if inserts:
            conn.execute(routes.insert(), inserts)

    def _upsert_route(self, conn: Connection, version: int, route: Route) -> None:
        body = route.model_dump_json()
        if (
            conn.execute(
                routes.update().where(routes.c.endpoint == route.endpoint).values(version=version, route=body)
            ).rowcount
            == 0
        ):
            conn.execute(routes.insert().values(endpoint=route.endpoint, version=version, route=body))

    def put_route(self, route: Route) -> None:
        with self._tx() as conn:
            self._put_route(conn, route)

    def routes_version(self) -> int:
        with self._tx() as conn:
            return int(conn.execute(sa.select(sa.func.max(routes.c.version))).scalar() or 0)

    def routes(self) -> dict[str, Route]:
        with self._tx() as conn:
            return {row.endpoint: Route.model_validate_json(row.route) for row in conn.execute(sa.select(routes))}
