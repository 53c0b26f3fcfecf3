"""Bearer-token auth: who is calling (a ``TokenInfo`` from the store), and whether its role and
endpoints let it do what it asks. No token or an unknown or revoked one is 401; a role too low,
or an endpoint outside the token's list, is 403.

The token comes from the ``Authorization`` header only, never from a cookie: a browser sends a
cookie by itself, to every port of the host, so one would hand the token to other services there.

The 401 check is ASGI middleware over every path under the API's prefix (all but health), not a
route dependency:
FastAPI parses a request's JSON body before it runs dependencies, so a dependency alone would let
a caller without a token learn that its body was malformed (422) rather than that it may not ask.
The middleware also covers paths that match no route. Routes then only check the role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from modelcanary.api.problems import detail_of, problem, status_of
from modelcanary.domain.access import Role, TokenInfo
from modelcanary.domain.errors import ModelcanaryError
from modelcanary.ports import Tokens

# declared on every route that needs a token, so the OpenAPI schema says so; the check is BearerAuth's
bearer = HTTPBearer(
    auto_error=False,
    description="an API token from `modelcanary token create` (or POST /api/v1/tokens)",
)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="modelcanary"'}
STATE_KEY = "token"  # where BearerAuth leaves the caller's token: request.state.token


def forbidden(detail: str) -> HTTPException:
    return HTTPException(403, detail)


def _secret(scope: Scope) -> str | None:
    """The bearer token of the request's ``Authorization`` header, if it has one."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, secret = value.decode("latin-1").partition(" ")
            return (secret.strip() or None) if scheme.lower() == "bearer" else None
    return None


class BearerAuth:
    """ASGI middleware: a request under ``prefix`` (but for the ``public`` paths) goes on only with
    a live token, which it leaves in ``request.state.token``; any other gets a 401 problem."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: Tokens,
        prefixes: tuple[str, ...],
        public: frozenset[str],
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.prefixes = prefixes
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefixes) or path in self.public:
            await self.app(scope, receive, send)
            return
        secret = _secret(scope)
        try:
            token = await run_in_threadpool(self.tokens.token_by_secret, secret) if secret else None
        except ModelcanaryError as exc:  # the store is down: say so, do not crash
            await problem(status_of(exc), detail_of(exc))(scope, receive, send)
            return
        if token is None:
            detail = (
                "the bearer token is unknown or revoked"
                if secret
                else "this route needs a bearer token: Authorization: Bearer mc_..."
            )
            await problem(401, detail, headers=CHALLENGE)(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = token
        await self.app(scope, receive, send)


def require(role: Role) -> Callable[..., TokenInfo]:
    """The dependency a route declares: ``Depends(require(Role.OPERATOR))`` gives the caller's token."""

    def caller(
        request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> TokenInfo:
        token = getattr(request.state, STATE_KEY, None)
        if not isinstance(token, TokenInfo):  # a route outside BearerAuth's prefix: never let it through
            raise HTTPException(401, "no bearer token was checked for this route", headers=CHALLENGE)
        if not token.role.allows(role):
            raise forbidden(f"token {token.name!r} is a {token.role.value}; this needs {role.value} or above")
        return token

    return caller


def check_endpoint(token: TokenInfo, endpoint: str) -> None:
    """An action on an endpoint outside the token's list is forbidden."""
    if not token.sees(endpoint):
        raise forbidden(f"token {token.name!r} may not act on endpoint {endpoint!r}")
