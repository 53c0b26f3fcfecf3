"""Bounded reads over the real app and a real SQLite store: the audit log and the rollout list come
a page at a time (a default and a cap on ``limit``, a cursor to the next page), a token limited to
endpoints has its audit events filtered by the database, and the report page does not walk the
whole audit chain again while the chain's head stays put."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from modelcanary.adapters.store.schema import audit
from modelcanary.domain.access import Role

from .api_support import Api, spec_for

PAGE = 500  # the default page, as docs/control-api.md gives it
MAX_PAGE = 5000  # the largest page a caller may ask for


def _notes(api: Api, count: int, rollout_id: str | None = None) -> None:
    for number in range(count):
        api.store.append_audit(at=time.time(), actor="ops", action="note", rollout_id=rollout_id, detail={"n": number})


def _walk(api: Api, who: str, params: dict[str, Any], cursor: str) -> list[int]:
    """Every event id, page by page: each next page from the last id of the one before."""
    seen: list[int] = []
    while True:
        query = {**params, **({cursor: seen[-1]} if seen else {})}
        page = api.call(who, "GET", "/api/v1/audit", params=query)
        assert page.status_code == 200, page.text
        ids = [event["id"] for event in page.json()]
        seen += ids
        if len(ids) < params["limit"]:
            return seen


def test_the_audit_log_comes_a_page_at_a_time(api: Api) -> None:
    _notes(api, PAGE + 20)
    every = [event["id"] for event in api.store.audit_events()]
    assert len(every) > PAGE

    first = api.call("viewer", "GET", "/api/v1/audit").json()
    assert [event["id"] for event in first] == every[:PAGE]  # the default page, oldest first
    assert len(api.call("viewer", "GET", "/api/v1/audit", params={"limit": 7}).json()) == 7
    for limit in (0, MAX_PAGE + 1):
        refused = api.call("viewer", "GET", "/api/v1/audit", params={"limit": limit})
        assert (refused.status_code, refused.json()["field"]) == (422, "query.limit")

    assert _walk(api, "viewer", {"limit": 100}, "after") == every
    newest = _walk(api, "viewer", {"limit": 100, "order": "newest"}, "before")
    assert newest == every[::-1]
    assert [
        e["id"] for e in api.call("viewer", "GET", "/api/v1/audit", params={"order": "newest", "limit": 3}).json()
    ] == (every[:-4:-1])


def test_a_limited_tokens_audit_events_are_filtered_by_the_database(api: Api) -> None:
    """A token limited to endpoints gets its rollouts' events, a page at a time, without the server
    reading every rollout's state (or every event) to filter them."""
    fraud = api.start("admin")
    churn = api.start("admin", spec_for("churn"))
    for _ in range(3):  # the two rollouts' events interleave
        _notes(api, 2, fraud)
        _notes(api, 2, churn)
    api.token("fraud-team", Role.VIEWER, endpoints=["fraud"])
    mine = [event["id"] for event in api.store.audit_events(fraud)]

    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    sa.event.listen(api.store.engine, "before_cursor_execute", record)
    try:
        walked = _walk(api, "fraud-team", {"limit": 3}, "after")
    finally:
        sa.event.remove(api.store.engine, "before_cursor_execute", record)
    assert walked == mine
    assert not [s for s in statements if "rollouts.state" in s]  # no rollout's state was read
    reads = [s for s in statements if "FROM audit" in s]
    assert reads and all("LIMIT" in s and "rollouts.endpoint IN" in s for s in reads)
    # events of no rollout (token changes) are the whole installation's: not a limited token's
    assert {e["rollout_id"] for e in api.call("fraud-team", "GET", "/api/v1/audit").json()} == {fraud}


def test_the_rollout_list_comes_a_page_at_a_time(api: Api) -> None:
    started = [api.start("admin", spec_for(f"endpoint-{number}")) for number in range(5)]
    every = [r["id"] for r in api.call("viewer", "GET", "/api/v1/rollouts").json()]
    assert sorted(every) == sorted(started)

    pages: list[list[str]] = []
    while not pages or len(pages[-1]) == 2:
        query: dict[str, Any] = {"limit": 2, **({"before": pages[-1][-1]} if pages else {})}
        pages.append([r["id"] for r in api.call("viewer", "GET", "/api/v1/rollouts", params=query).json()])
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [rollout_id for page in pages for rollout_id in page] == every

    # the cursor is the rollout itself: one that ended since still marks the place among active ones
    api.call("admin", "POST", f"/api/v1/rollouts/{every[1]}/abort")
    active = api.call("viewer", "GET", "/api/v1/rollouts", params={"active": "true", "before": every[1]}).json()
    assert [r["id"] for r in active] == every[2:]
    for limit in (0, MAX_PAGE + 1):
        assert api.call("viewer", "GET", "/api/v1/rollouts", params={"limit": limit}).status_code == 422
    # a cursor the token cannot see is no cursor: 404, as reading that rollout would be
    api.token("endpoint-0-team", Role.VIEWER, endpoints=["endpoint-0"])
    hidden = api.call("endpoint-0-team", "GET", "/api/v1/rollouts", params={"before": every[0]})
    assert (hidden.status_code, hidden.json()["detail"]) == (404, f"no rollout {every[0]!r}")
    assert api.call("viewer", "GET", "/api/v1/rollouts", params={"before": "nope"}).status_code == 404


def _counting(calls: list[int], walk: Callable[[], Any]) -> Callable[[], Any]:
    def counted() -> Any:
        calls.append(1)
        return walk()

    return counted


def test_the_report_page_walks_the_audit_chain_again_only_when_its_head_moved(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollout_id = api.start()
    walks: list[int] = []
    monkeypatch.setattr(api.store, "verify_audit", _counting(walks, api.store.verify_audit))
    path = f"/api/v1/rollouts/{rollout_id}/report.html"
    count = len(api.store.audit_events())

    for _ in range(3):
        page = api.call("viewer", "GET", path)
        assert page.status_code == 200 and f"Audit chain verified: {count} events" in page.text
    assert len(walks) == 1
    _notes(api, 1, rollout_id)  # the head moves: the next page walks again, and counts the new event
    assert f"Audit chain verified: {count + 1} events" in api.call("viewer", "GET", path).text
    assert len(walks) == 2
    # an explicit verify always walks: it is what finds a row edited without the head moving
    api.call("viewer", "GET", "/api/v1/audit/verify")
    assert len(walks) == 3


def test_a_kept_walk_vouches_for_the_chain_only_so_long(api: Api) -> None:
    """A row edited in the middle leaves the head as it was: the kept walk still vouches for the
    chain until it is ``max_age_s`` old, then a new walk finds the edit."""
    from modelcanary.api.dashboard import ChainCheck

    _notes(api, 3)
    now = [0.0]
    check = ChainCheck(api.store, max_age_s=60, clock=lambda: now[0])
    assert check() == (3 + len(Role), None)  # the fixture's token per role, then the notes
    with api.store.engine.begin() as conn:
        conn.execute(sa.update(audit).where(audit.c.id == api.store.audit_events()[1]["id"]).values(actor="mallory"))
    now[0] = 59.0
    assert check()[1] is None
    now[0] = 60.0
    broken = check()[1]
    assert broken is not None and broken.position == 1
