"""Who may do what through the control API: ordered roles, and API tokens limited to endpoints.

Roles are ordered, each allowing what the ones below it allow::

    viewer < operator < approver < admin
    (read)   (start, pause,  (approve,  (tokens)
              resume, abort)  promote)
"""

from __future__ import annotations

import enum
import re

from pydantic import BaseModel, ConfigDict

from modelcanary.domain.errors import RequestError

TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MAX_REASON_CHARS = 2000  # an operator's reason for a command, through the API or the CLI


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        """
        >>> Role.APPROVER.allows(Role.OPERATOR), Role.OPERATOR.allows(Role.APPROVER)
        (True, False)
        """
        return _RANK[self] >= _RANK[needed]


_RANK = {role: rank for rank, role in enumerate(Role)}


class TokenInfo(BaseModel):
    """An API token as the store keeps it: never its secret, only who it is and what it may do."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    role: Role
    endpoints: tuple[str, ...] | None = None  # None: every endpoint
    created_at: float
    revoked_at: float | None = None

    @property
    def actor(self) -> str:
        """How the audit log and a rollout's history name what this token did."""
        return f"token:{self.name}"

    def sees(self, endpoint: str) -> bool:
        """
        >>> TokenInfo(id="t", name="ci", role=Role.VIEWER, endpoints=("fraud",), created_at=0).sees("churn")
        False
        """
        return self.endpoints is None or endpoint in self.endpoints

    def covers(self, endpoints: tuple[str, ...] | None) -> bool:
        """Whether every endpoint in ``endpoints`` (None: all of them) is one this token sees."""
        if self.endpoints is None:
            return True
        return endpoints is not None and set(endpoints) <= set(self.endpoints)


def check_token_name(name: str) -> str:
    """A token's name goes into actors (``token:NAME``) and command lines: keep it plain.

    >>> check_token_name("ci bot")
    Traceback (most recent call last):
    ...
    modelcanary.domain.errors.RequestError: name: 'ci bot' is not a token name: 1-64 letters, digits, _ . @ -, \
starting with a letter or digit
    """
    if not TOKEN_NAME.fullmatch(name):
        raise RequestError(
            f"{name!r} is not a token name: 1-64 letters, digits, _ . @ -, starting with a letter or digit",
            field="name",
            status=422,
        )
    return name
