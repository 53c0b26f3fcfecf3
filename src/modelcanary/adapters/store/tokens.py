"""Control API tokens in the SQL store: created, looked up by secret, listed and revoked.

Only a SHA-256 of each secret is kept. A plain, unsalted hash is the right tool here, unlike for
passwords: the secrets are 256 random bits (``secrets.token_urlsafe(32)``), so there is nothing
to guess and a slow, salted KDF would buy no safety, while a deterministic hash lets a request
find its token with one indexed lookup. The ``mc_`` prefix makes a leaked token easy to spot
(secret scanners, logs). Creating and revoking a token are audited in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from modelcanary.adapters.store.schema import tokens
from modelcanary.domain.access import Role, TokenInfo, check_token_name
from modelcanary.domain.errors import Conflict, NotFound, RequestError
from modelcanary.domain.specbase import check_endpoint_name

PREFIX = "mc_"


def secret_hash(secret: str) -> str:
    """
    >>> secret_hash("mc_x") == hashlib.sha256(b"mc_x").hexdigest()
    True
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: Row[Any]) -> TokenInfo:
    endpoints = json.loads(row.endpoints) if row.endpoints is not None else None
    return TokenInfo(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        endpoints=tuple(endpoints) if endpoints is not None else None,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class TokenTable:
    """The ``Tokens`` port, mixed into ``SqlStore`` (which brings ``_tx`` and ``_audit``)."""

    if TYPE_CHECKING:

        def _tx(self) -> AbstractContextManager[Connection]: ...

        def _audit(
            self,
            conn: Connection,
            *,
            at: float,
            actor: str,
            action: str,
            rollout_id: str | None,
            detail: dict[str, Any],
        ) -> None: ...

    def create_token(
        self, *, name: str, role: Role, endpoints: Sequence[str] | None, actor: str, now: float | None = None
    ) -> tuple[TokenInfo, str]:
        check_token_name(name)
        if endpoints is not None:
            if not endpoints:
                raise RequestError("a list of endpoint names (or null for every endpoint)", field="endpoints")
            for index, endpoint in enumerate(endpoints):
                try:  # a misspelt one would make a token that silently sees nothing there
                    check_endpoint_name(endpoint)
                except ValueError as exc:
                    raise RequestError(str(exc), field=f"endpoints[{index}]", status=422) from exc
            endpoints = tuple(sorted(set(endpoints)))
        secret = PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(
            id=uuid.uuid4().hex[:16],
            name=name,
            role=role,
            endpoints=endpoints,
            created_at=time.time() if now is None else now,
        )
        with self._tx() as conn:
            if conn.execute(sa.select(tokens.c.id).where(tokens.c.name == name)).first() is not None:
                raise Conflict(f"a token named {name!r} already exists (names stay taken after a revoke)")
            if conn.execute(sa.select(tokens.c.id).where(tokens.c.id == name)).first() is not None:
                # revoking by name would then revoke that other token
                raise Conflict(f"{name!r} is another token's id; a name may not be one")
            conn.execute(
                tokens.insert().values(
                    id=info.id,
                    name=name,
                    role=role.value,
                    endpoints=json.dumps(list(endpoints)) if endpoints is not None else None,
                    hash=secret_hash(secret),
                    created_at=info.created_at,
                )
            )
            detail = {"id": info.id, "name": name, "role": role.value, "endpoints": endpoints}
            self._audit(conn, at=info.created_at, actor=actor, action="token.create", rollout_id=None, detail=detail)
        return info, secret

    def token_by_secret(self, secret: str) -> TokenInfo | None:
        query = sa.select(tokens).where(tokens.c.hash == secret_hash(secret), tokens.c.revoked_at.is_(None))
        with self._tx() as conn:
            row = conn.execute(query).first()
        return _info(row) if row is not None else None

    def list_tokens(self) -> list[TokenInfo]:
        with self._tx() as conn:
            return [_info(row) for row in conn.execute(sa.select(tokens).order_by(tokens.c.created_at, tokens.c.id))]

    def revoke_token(self, key: str, *, actor: str, now: float | None = None) -> TokenInfo:
        at = time.time() if now is None else now
        if "\x00" in key:  # no id or name holds one, and PostgreSQL refuses it in text (as ``get``)
            raise NotFound(f"no token {key!r}")
        with self._tx() as conn:
            found = conn.execute(sa.select(tokens).where((tokens.c.id == key) | (tokens.c.name == key))).all()
            if not found:
                raise NotFound(f"no token {key!r}")
            if len(found) > 1:
                raise Conflict(f"{key!r} is one token's id and another's name; revoke by the id of the one meant")
            row = found[0]
            if row.revoked_at is not None:
                raise Conflict(f"token {row.name!r} was already revoked")
            conn.execute(tokens.update().where(tokens.c.id == row.id).values(revoked_at=at))
            detail = {"id": row.id, "name": row.name, "role": row.role}
            self._audit(conn, at=at, actor=actor, action="token.revoke", rollout_id=None, detail=detail)
            return _info(row).model_copy(update={"revoked_at": at})
