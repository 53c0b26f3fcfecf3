"""The control API's routes under ``/api/v1``: rollouts (start, read, steer), their reports and
telemetry, the audit log, and tokens. Every route but health needs a bearer token (see auth.py);
every error is problem+json (see problems.py). Handlers are plain functions, which FastAPI runs
in its thread pool, because the store is synchronous.

The gateway's data plane does not pass through here: ``modelcanary serve`` mounts this app
behind the gateway's own routes (``gateway.app.create_app(..., beside=...)``).

No ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations at run
time, and those made inside a function (a command's role) cannot be resolved from strings."""

import importlib.util
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query
from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.api import models
from modelcanary.api.auth import BearerAuth, check_endpoint, forbidden, require
from modelcanary.api.headers import PrivateResponses
from modelcanary.api.problems import MEDIA_TYPE, BodyLimit, install, responses
from modelcanary.controller.operations import run_command, start_rollout
from modelcanary.controller.report import rollout_report
from modelcanary.domain.access import Role, TokenInfo
from modelcanary.domain.errors import NotFound
from modelcanary.domain.spec import load_spec
from modelcanary.domain.state import RolloutState
from modelcanary.engine.analysis import pair
from modelcanary.engine.decide import Command
from modelcanary.ports import Registry

PREFIX = "/api/v1"
# the role each command needs
COMMANDS = {
    Command.PAUSE: Role.OPERATOR,
    Command.RESUME: Role.OPERATOR,
    Command.ABORT: Role.OPERATOR,
    Command.PROMOTE: Role.APPROVER,
    Command.APPROVE: Role.APPROVER,
}
Viewer = Annotated[TokenInfo, Depends(require(Role.VIEWER))]
Operator = Annotated[TokenInfo, Depends(require(Role.OPERATOR))]
Admin = Annotated[TokenInfo, Depends(require(Role.ADMIN))]
AUTHED = (401, 403, 422)  # what any route behind auth may answer, besides its own
# a list answers a page: this many items unless the caller asks for fewer or more, never more than
# MAX_PAGE (the whole audit log of a busy installation is tens of megabytes)
PAGE = 500
MAX_PAGE = 5000
MAX_ID = 2**63 - 1  # an audit id bound past any the store makes, and one every database can compare
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"at most this many (default {PAGE}, at most {MAX_PAGE})")]
BODY = 400  # a request body that is not even text (FastAPI: "There was an error parsing the body")


def _shown(state: RolloutState) -> dict[str, Any]:
    return state.model_dump(mode="json", exclude={"judge_memory"})


def rollout_routes(store: SqlStore, registry: Registry, policy_dir: str | None = None) -> APIRouter:
    router = APIRouter(prefix=f"{PREFIX}/rollouts", tags=["rollouts"])

    def visible(token: TokenInfo, rollout_id: str) -> tuple[RolloutState, str]:
        """A rollout the token may see; one on another endpoint does not exist for it."""
        state, text = store.get(rollout_id)
        if not token.sees(state.endpoint):
            raise NotFound(f"no rollout {rollout_id!r}")
        return state, text

    @router.get("", response_model=list[models.Rollout], responses=responses(*AUTHED, 404))
    def list_rollouts(
        token: Viewer,
        active: Annotated[bool | None, Query(description="true: only active ones; false: only ended ones")] = None,
        limit: Limit = PAGE,
        before: Annotated[
            str | None, Query(description="a rollout's id: only those older than it (the last of the page before)")
        ] = None,
    ) -> Any:
        """Rollouts, newest first, of the endpoints the token sees, a page at a time: the next page
        is ``before`` the last id of this one; a page shorter than ``limit`` is the last."""
        if before is not None:
            visible(token, before)  # a cursor on an endpoint the token does not see does not exist for it
        listed = store.list_rollouts(active=active, endpoints=token.endpoints, before=before, limit=limit)
        return [_shown(state) for state in listed]

    @router.post("", status_code=201, response_model=models.Rollout, responses=responses(*AUTHED, BODY, 409))
    def start(token: Operator, request: models.StartRequest) -> Any:
        """Validate the spec, resolve its models and save the rollout as pending. A bad spec is 422
        with every field at fault and its line; 409 if the endpoint already has an active rollout."""
        source = request.source or "<request body>"
        check_endpoint(token, load_spec(request.spec, source=source).spec.endpoint)
        started = start_rollout(
            store, registry, request.spec, source=source, actor=token.actor, policy_dir=policy_dir, confined=True
        )
        return _shown(started)

    @router.get("/{rollout_id}", response_model=models.RolloutDetail, responses=responses(*AUTHED, 404))
    def get_rollout(token: Viewer, rollout_id: str) -> Any:
        state, text = visible(token, rollout_id)
        return {"rollout": _shown(state), "spec": text}

    @router.get("/{rollout_id}/report", response_model=models.Report, responses=responses(*AUTHED, 404))
    def report(token: Viewer, rollout_id: str) -> Any:
        """State, judgement (every metric's estimate, limit, bound, e-value, samples, verdict and
        reason), request and label counts, and the decision history."""
        visible(token, rollout_id)
        return rollout_report(store, rollout_id).to_json()

    @router.get(
        "/{rollout_id}/telemetry",
        response_model=models.Telemetry,
        response_model_exclude_unset=True,  # segments and shadow only where the gateway keeps them
        responses=responses(*AUTHED, 404),
    )
    def telemetry(token: Viewer, rollout_id: str) -> Any:
        """Each variant's cumulative counts, summed over every gateway."""
        visible(token, rollout_id)
        summed = pair(store.read_telemetry(rollout_id))
        return {"baseline": summed.baseline.to_json(), "candidate": summed.candidate.to_json()}

    for command, role in COMMANDS.items():
        _command_route(router, store, command, role)
    return router


def _command_route(router: APIRouter, store: SqlStore, command: Command, role: Role) -> None:
    def steer(
        token: Viewer,
        rollout_id: str,
        request: Annotated[models.CommandRequest | None, Body()] = None,
    ) -> Any:
        state, _text = store.get(rollout_id)
        # a rollout on another endpoint does not exist for the token, as on every route; one it
        # sees but may not steer is 403
        if not token.sees(state.endpoint):
            raise NotFound(f"no rollout {rollout_id!r}")
        if not token.role.allows(role):
            raise forbidden(f"token {token.name!r} is a {token.role.value}; this needs {role.value} or above")
        reason = request.reason if request is not None else None
        # an approval step's role is checked by run_command, on the state it saves
        return _shown(run_command(store, rollout_id, command, actor=token.actor, reason=reason, role=token.role))

    steer.__doc__ = (
        f"{command.value.capitalize()} the rollout ({role.value} or above); 409 if that does not fit its phase."
    )
    router.add_api_route(
        f"/{{rollout_id}}/{command.value}",
        steer,
        methods=["POST"],
        name=command.value,
        response_model=models.Rollout,
        responses=responses(*AUTHED, BODY, 404, 409),
    )


def audit_routes(store: SqlStore) -> APIRouter:
    router = APIRouter(prefix=f"{PREFIX}/audit", tags=["audit"])

    @router.get("", response_model=list[models.AuditEvent], responses=responses(*AUTHED, 404))
    def events(
        token: Viewer,
        rollout: Annotated[str | None, Query(description="only this rollout's")] = None,
        limit: Limit = PAGE,
        after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="only events with a greater id")] = None,
        before: Annotated[int | None, Query(ge=0, le=MAX_ID, description="only events with a smaller id")] = None,
        order: Annotated[models.Order, Query(description="oldest first (the default) or newest first")] = (
            models.Order.OLDEST
        ),
    ) -> Any:
        """Audit events, a page at a time: oldest first, the next page ``after`` the last id of
        this one; or newest first, the next page ``before`` it. A page shorter than ``limit`` is the
        last. A token limited to endpoints sees only their rollouts' events."""
        if rollout is not None and not token.sees(store.get(rollout)[0].endpoint):
            raise NotFound(f"no rollout {rollout!r}")
        # the database filters by the token's endpoints (one rollout's events need no more filtering)
        endpoints = token.endpoints if rollout is None else None
        return store.audit_events(
            rollout,
            endpoints=endpoints,
            after=after,
            before=before,
            limit=limit,
            newest_first=order is models.Order.NEWEST,
        )

    @router.get("/verify", response_model=models.AuditVerify, responses=responses(*AUTHED))
    def verify(token: Viewer) -> Any:
        """Recompute the whole hash chain: whether it holds, and its first broken link if not. A
        token limited to endpoints learns only whether it holds: the chain's length and where it
        broke are the whole log's, most of it other endpoints'."""
        count, broken = store.verify_audit()
        if token.endpoints is not None:
            return {"ok": broken is None, "count": None, "broken": None}
        link = None if broken is None else {"id": broken.id, "position": broken.position, "reason": broken.reason}
        return {"ok": broken is None, "count": count, "broken": link}

    return router


def _token_view(info: TokenInfo) -> dict[str, Any]:
    return info.model_dump(mode="json")


def token_routes(store: SqlStore) -> APIRouter:
    router = APIRouter(prefix=f"{PREFIX}/tokens", tags=["tokens"])

    @router.post("", status_code=201, response_model=models.NewToken, responses=responses(*AUTHED, BODY, 409))
    def create(token: Admin, request: models.TokenRequest) -> Any:
        """A new token; its secret is in this response only. An admin limited to endpoints may make
        tokens only for those endpoints."""
        endpoints = tuple(request.endpoints) if request.endpoints is not None else None
        if not token.covers(endpoints):
            raise forbidden(f"token {token.name!r} may only make tokens for endpoints {list(token.endpoints or ())}")
        info, secret = store.create_token(
            name=request.name, role=request.role, endpoints=request.endpoints, actor=token.actor
        )
        return {**_token_view(info), "token": secret}

    @router.get("", response_model=list[models.Token], responses=responses(*AUTHED))
    def list_tokens(token: Admin) -> Any:
        """Every token the caller's endpoints cover, revoked ones too; never a secret."""
        return [_token_view(info) for info in store.list_tokens() if token.covers(info.endpoints)]

    @router.delete("/{token_id}", response_model=models.Token, responses=responses(*AUTHED, 404, 409))
    def revoke(token: Admin, token_id: str) -> Any:
        """Revoke a token (by id): it stops working at once. Its name stays taken."""
        for info in store.list_tokens():
            if token_id in (info.id, info.name) and not token.covers(info.endpoints):
                raise forbidden(f"token {token.name!r} may not revoke token {info.name!r}")
        return _token_view(store.revoke_token(token_id, actor=token.actor))

    return router


class ControlApi(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema, with each error response under the problem+json media type it is sent with."""
        if self.openapi_schema is None:
            schema = get_openapi(
                title=self.title, version=self.version, description=self.description, routes=self.routes
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    for status, response in operation.get("responses", {}).items():
                        if str(status)[0] in "45" and "content" in response:
                            response["content"] = {MEDIA_TYPE: next(iter(response["content"].values()))}
            self.openapi_schema = schema
        return self.openapi_schema


def create_api(
    store: SqlStore, registry: Registry, *, routers: Sequence[APIRouter] = (), policy_dir: str | None = None
) -> FastAPI:
    """The control API on ``store`` and ``registry``. ``routers`` are added as they are (the
    dashboard's, say: under ``/api/v1`` they are behind the same auth, and their handlers get the
    caller with ``Depends(auth.require(role))``); a ``modelcanary.api.dashboard`` module with
    ``routes()`` is mounted too. Every path under ``/api/v1`` but health needs a token, the schema
    included; the dashboard's static files at ``/ui`` hold no data and need none. There is no docs
    page: FastAPI's loads its script from a CDN, on this origin. A started spec's gates may name
    policy files only inside ``policy_dir`` (None: built-in policies only)."""
    from modelcanary import __version__

    app = ControlApi(
        title="modelcanary control API",
        version=__version__,
        description="Start, watch and steer canary rollouts of ML models; read and verify the audit log.",
        openapi_url=f"{PREFIX}/openapi.json",
        # no Swagger UI or ReDoc page: they load unpinned script from a CDN; the schema at
        # openapi.json reads in any OpenAPI viewer
        docs_url=None,
        redoc_url=None,
    )
    install(app)
    app.add_middleware(BodyLimit)  # inside the auth: a caller without a token is refused unread
    app.add_middleware(BearerAuth, tokens=store, prefixes=(PREFIX,), public=frozenset({f"{PREFIX}/health"}))
    app.add_middleware(PrivateResponses, prefix=PREFIX)  # outermost: a 401 carries the headers too

    @app.get(f"{PREFIX}/health", response_model=models.Health, tags=["health"])
    def health() -> Any:
        """Up and answering (no token needed)."""
        return {"ok": True}

    app.include_router(rollout_routes(store, registry, policy_dir))
    app.include_router(audit_routes(store))
    app.include_router(token_routes(store))
    for router in routers:
        app.include_router(router)
    app.router.routes.extend(_dashboard_routes(store))
    return app


def _dashboard_routes(store: SqlStore) -> list[BaseRoute]:
    """The dashboard's routes (``/ui``), if this installation has the dashboard module."""
    if importlib.util.find_spec("modelcanary.api.dashboard") is None:
        return []
    dashboard = importlib.import_module("modelcanary.api.dashboard")
    return list(dashboard.routes(store))
