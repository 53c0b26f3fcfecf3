"""The dashboard: static files under ``/ui`` (HTML, vanilla JS, CSS; nothing from a CDN), and the
two API routes it needs beyond the contract's: ``whoami`` (which buttons to show) and a rollout's
post-mortem report as HTML.

The static files hold no data and no secret, and still need a token, like every path but health:
without one a browser gets ``sign_in_page``, a 401 whose form checks the token against the API and
keeps it in the tab's sessionStorage (sent as a bearer token with every API call) and in a cookie
(which the server accepts for reads only, so the browser can load these files). A token sees in the
dashboard what it sees through the API.
The pages are served with a content security policy that allows nothing from elsewhere.
"""

import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.api.auth import CHALLENGE, require
from modelcanary.api.problems import responses
from modelcanary.api.report_html import report_html
from modelcanary.domain.access import Role, TokenInfo
from modelcanary.domain.errors import NotFound

# No ``from __future__ import annotations``: FastAPI reads the handlers' annotations at run time.

STATIC = Path(__file__).with_name("static")
PREFIX = "/api/v1"
# the report page has inline styles; the dashboard none, and neither runs anything from elsewhere
POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
Viewer = Annotated[TokenInfo, Depends(require(Role.VIEWER))]


class Whoami(BaseModel):
    name: str
    role: Role
    endpoints: list[str] | None


class _Guarded(StaticFiles):
    """Static files sent with the content security policy and without caching (a new release's
    JS must not meet an old page)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"content-security-policy", POLICY.encode()),
                    (b"cache-control", b"no-cache"),
                ]
            await send(message)

        await super().__call__(scope, receive, with_headers)


def api_routes(store: SqlStore) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["dashboard"])

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
        writes): spec, timeline, evidence at each decision, actors, audit trail."""
        state, _ = store.get(rollout_id)
        if not token.sees(state.endpoint):
            raise NotFound(f"no rollout {rollout_id!r}")
        return HTMLResponse(
            report_html(store, rollout_id),
            headers={"content-security-policy": POLICY, "content-disposition": f'inline; filename="{state.id}.html"'},
        )

    return router


_SIGN_IN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelcanary: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main id="main"><form id="login" autocomplete="off">
<h1>Sign in</h1>
<p>Paste an API token (from <code>modelcanary token create</code>). It is kept in this tab only.</p>
<label>Token <input id="token" name="token" type="password" required spellcheck="false"></label>
<button type="submit">Sign in</button>
<p id="login-error" role="alert"></p>
</form></main>
<script nonce="NONCE">
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = document.getElementById("token").value.trim();
  const answer = await fetch("/api/v1/whoami", {headers: {Authorization: `Bearer ${token}`}});
  if (!answer.ok) {
    document.getElementById("login-error").textContent =
      "The API refused this token (unknown or revoked): sign in again.";
    return;
  }
  sessionStorage.setItem("modelcanary.token", token);
  document.cookie = `mc_token=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
  location.reload();
});
</script></body></html>
"""


def sign_in_page() -> HTMLResponse:
    """The 401 a browser gets for a dashboard page without a token: a form (its script allowed by
    a one-time nonce, nothing else inline)."""
    nonce = secrets.token_urlsafe(16)
    policy = POLICY.replace("default-src 'self'", f"default-src 'self'; script-src 'nonce-{nonce}'")
    headers = {"content-security-policy": policy, "cache-control": "no-store", **CHALLENGE}
    return HTMLResponse(_SIGN_IN.replace("NONCE", nonce), status_code=401, headers=headers)


def routes(store: SqlStore) -> list[BaseRoute]:
    """What the control API mounts: the dashboard's API routes (behind its bearer auth, as every
    path under ``/api/v1`` is) and the static pages at ``/ui``."""
    return [*api_routes(store).routes, Mount("/ui", app=_Guarded(directory=STATIC, html=True), name="ui")]
