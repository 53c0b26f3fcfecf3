"""Bearer-token auth: who is calling (a ``TokenInfo`` from the store), and whether its role and
endpoints let it do what it asks. No token or an unknown or revoked one is 401; a role too low,
or an endpoint outside the token's list, is 403."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from modelcanary.domain.access import Role, TokenInfo
from modelcanary.ports import Tokens

bearer = HTTPBearer(
    auto_error=False,
    description="an API token from `modelcanary token create` (or POST /api/v1/tokens)",
)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="modelcanary"'}


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers=CHALLENGE)


def forbidden(detail: str) -> HTTPException:
    return HTTPException(403, detail)


class Auth:
    """Makes the FastAPI dependency each route declares: ``Depends(auth.require(Role.OPERATOR))``."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    def require(self, role: Role) -> Callable[[HTTPAuthorizationCredentials | None], TokenInfo]:
        def caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> TokenInfo:
            if credentials is None:
                raise unauthorized("this route needs a bearer token: Authorization: Bearer mc_...")
            token = self.tokens.token_by_secret(credentials.credentials)
            if token is None:
                raise unauthorized("the bearer token is unknown or revoked")
            if not token.role.allows(role):
                raise forbidden(f"token {token.name!r} is a {token.role.value}; this needs {role.value} or above")
            return token

        return caller


def check_endpoint(token: TokenInfo, endpoint: str) -> None:
    """An action on an endpoint outside the token's list is forbidden."""
    if not token.sees(endpoint):
        raise forbidden(f"token {token.name!r} may not act on endpoint {endpoint!r}")
