"""The dashboard: static files under ``/ui`` (HTML, vanilla JS, CSS; nothing from a CDN), and the
two API routes it needs beyond the contract's: ``whoami`` (which buttons to show) and a rollout's
post-mortem report as HTML.

The static files hold no data and no secret, so they are served without a token: a browser loads
the page, whose form checks a token against the API and keeps it in the tab's sessionStorage, and
sends it as a bearer token with every API call. It is never put in a cookie: a browser sends a
cookie by itself, to every service on the host whatever its port, and keeps it past the tab. So
whatever a browser would load by itself (the HTML report) the page fetches with the header instead,
and saves as a file. A token sees in the dashboard what it sees through the API.
The pages are served with a content security policy that allows nothing from elsewhere.
"""

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from modelcanary.adapters.store.audit import BrokenLink
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.api.auth import require
from modelcanary.api.problems import responses
from modelcanary.api.report_html import report_html
from modelcanary.domain.access import Role, TokenInfo
from modelcanary.domain.errors import NotFound

# No ``from __future__ import annotations``: FastAPI reads the handlers' annotations at run time.

STATIC = Path(__file__).with_name("static")
PREFIX = "/api/v1"
# the report page has inline styles; the dashboard none, and neither runs anything from elsewhere
POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
# how long a walk of an unchanged audit chain vouches for it on the report page: a row edited in
# the middle leaves the head as it was, so only a new walk would see it
CHAIN_MAX_AGE_S = 300.0
Viewer = Annotated[TokenInfo, Depends(require(Role.VIEWER))]


class Whoami(BaseModel):
    name: str
    role: Role
    endpoints: list[str] | None


class _Guarded(StaticFiles):
    """Static files sent with the content security policy, as the type they are (nosniff), and
    without caching (a new release's JS must not meet an old page)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"content-security-policy", POLICY.encode()),
                    (b"cache-control", b"no-cache"),
                    (b"x-content-type-options", b"nosniff"),
                ]
            await send(message)

        await super().__call__(scope, receive, with_headers)


class ChainCheck:
    """The audit chain's verification for the report page, walked again only when the chain's head
    (its length and last hash) has moved or the last walk is ``max_age_s`` old: a whole walk takes
    seconds on a long log, and every report page would start one. One walk at a time; a caller that
    waited for it takes its answer. ``GET /api/v1/audit/verify`` always walks."""

    def __init__(
        self, store: SqlStore, *, max_age_s: float = CHAIN_MAX_AGE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last: tuple[tuple[int, str], float, tuple[int, BrokenLink | None]] | None = None

    def __call__(self) -> tuple[int, BrokenLink | None]:
        with self._lock:
            # the head before the walk: an append during it moves the head, so the next call walks again
            head = self.store.audit_head()
            if self._last is not None:
                seen, at, found = self._last
                if seen == head and self.clock() - at < self.max_age_s:
                    return found
            found = self.store.verify_audit()
            self._last = (head, self.clock(), found)
            return found


def api_routes(store: SqlStore) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["dashboard"])
    chain = ChainCheck(store)

    @router.get("/whoami", response_model=Whoami, responses=responses(401))
    def whoami(token: Viewer) -> Any:
        """The caller's token: its name, role and endpoints (null: every endpoint). The dashboard
        shows only the buttons this role may use."""
        return {"name": token.name, "role": token.role, "endpoints": token.endpoints}

    @router.get(
        "/rollouts/{rollout_id}/report.html",
        response_class=HTMLResponse,
        responses={200: {"content": {"text/html": {}}}, **responses(401, 404)},
    )
    def report_page(token: Viewer, rollout_id: str) -> HTMLResponse:
        """The rollout's whole story as one self-contained HTML page (what ``modelcanary report``
        writes): spec, timeline, evidence at each decision, actors, audit trail. For a token
        limited to endpoints, the audit chain's verdict without its length or where it broke."""
        state, _ = store.get(rollout_id)
        if not token.sees(state.endpoint):
            raise NotFound(f"no rollout {rollout_id!r}")
        return HTMLResponse(
            report_html(store, rollout_id, chain=chain(), whole_log=token.endpoints is None),
            headers={"content-security-policy": POLICY, "content-disposition": f'inline; filename="{state.id}.html"'},
        )

    return router


def routes(store: SqlStore) -> list[BaseRoute]:
    """What the control API mounts: the dashboard's API routes (behind its bearer auth, as every
    path under ``/api/v1`` is) and the static pages at ``/ui`` (outside it: they hold no data)."""
    return [*api_routes(store).routes, Mount("/ui", app=_Guarded(directory=STATIC, html=True), name="ui")]
