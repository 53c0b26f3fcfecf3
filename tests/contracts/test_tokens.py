"""The ``Tokens`` port on real SQLite and real PostgreSQL: secrets are shown once and stored only as
hashes, revoked tokens stop working, names stay unique, and creating or revoking is audited."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from modelcanary.adapters.store.schema import tokens
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.domain.access import Role
from modelcanary.domain.errors import Conflict, NotFound, RequestError


def test_a_token_is_found_by_its_secret_and_stored_only_as_its_hash(store: SqlStore) -> None:
    info, secret = store.create_token(name="ci", role=Role.OPERATOR, endpoints=["fraud"], actor="t", now=5.0)
    assert secret.startswith("mc_") and len(secret) > 40
    assert (info.name, info.role, info.endpoints, info.created_at, info.revoked_at) == (
        "ci",
        Role.OPERATOR,
        ("fraud",),
        5.0,
        None,
    )
    assert store.token_by_secret(secret) == info
    assert store.token_by_secret(secret + "x") is None
    assert store.token_by_secret("") is None
    with store.engine.connect() as conn:
        [row] = conn.execute(sa.select(tokens)).all()
    assert secret not in "".join(str(value) for value in row)
    assert row.hash == hashlib.sha256(secret.encode()).hexdigest()


def test_every_endpoint_is_null_and_secrets_differ(store: SqlStore) -> None:
    first, one = store.create_token(name="admin", role=Role.ADMIN, endpoints=None, actor="t")
    _, two = store.create_token(name="admin-2", role=Role.ADMIN, endpoints=None, actor="t")
    assert first.endpoints is None and first.sees("anything")
    assert one != two
    assert [info.name for info in store.list_tokens()] == ["admin", "admin-2"]


def test_a_revoked_token_stops_working_and_its_name_stays_taken(open_store: Callable[[], SqlStore]) -> None:
    store, other = open_store(), open_store()
    info, secret = store.create_token(name="ci", role=Role.VIEWER, endpoints=None, actor="t")
    revoked = other.revoke_token("ci", actor="token:admin", now=9.0)
    assert (revoked.id, revoked.revoked_at) == (info.id, 9.0)
    assert store.token_by_secret(secret) is None
    assert [t.revoked_at for t in store.list_tokens()] == [9.0]
    with pytest.raises(Conflict, match="already revoked"):
        store.revoke_token(info.id, actor="t")
    with pytest.raises(Conflict, match="already exists"):
        store.create_token(name="ci", role=Role.VIEWER, endpoints=None, actor="t")
    with pytest.raises(NotFound, match="no token 'nobody'"):
        store.revoke_token("nobody", actor="t")
    with pytest.raises(NotFound, match="no token"):  # not the store's failure on PostgreSQL
        store.revoke_token("ci\x00", actor="t")


def test_bad_names_and_endpoint_lists_are_refused_saying_which_field(store: SqlStore) -> None:
    with pytest.raises(RequestError) as caught:
        store.create_token(name="has space", role=Role.VIEWER, endpoints=None, actor="t")
    assert caught.value.field == "name"
    with pytest.raises(RequestError) as caught:
        store.create_token(name="ok", role=Role.VIEWER, endpoints=[], actor="t")
    assert caught.value.field == "endpoints"
    assert store.list_tokens() == []


def test_creating_and_revoking_are_audited_in_the_chain(store: SqlStore) -> None:
    info, secret = store.create_token(name="ci", role=Role.APPROVER, endpoints=["b", "a"], actor="cli:ann")
    store.revoke_token(info.id, actor="token:root")
    events = store.audit_events()
    assert [(e["actor"], e["action"], e["rollout_id"]) for e in events] == [
        ("cli:ann", "token.create", None),
        ("token:root", "token.revoke", None),
    ]
    assert events[0]["detail"] == {"id": info.id, "name": "ci", "role": "approver", "endpoints": ["a", "b"]}
    assert secret not in str(events)
    assert store.verify_audit() == (2, None)
