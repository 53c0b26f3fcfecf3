"""The raw path predictions take (``gateway.entry``): under ASGI, driven with ASGI messages directly."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from modelcanary.domain.errors import RequestError
from modelcanary.gateway.entry import Entry, Reply


async def _fallback(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"starlette"})


def _call(app: Any, path: str, chunks: list[bytes], *, method: str = "POST", headers: Any = ()) -> tuple[int, Any, int]:
    """(status, JSON body or raw bytes, how many body chunks the app read)."""
    sent: list[dict[str, Any]] = []
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    asyncio.run(app(scope, receive, send))
    body = b"".join(message.get("body", b"") for message in sent[1:])
    try:
        content: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        content = body
    return sent[0]["status"], content, read


def _app(limit: int = 100) -> Any:
    async def echo(endpoint: str, version: str | None, headers: Mapping[str, str], raw: bytes) -> Reply:
        if endpoint == "broken":
            raise ZeroDivisionError("a bug")
        if endpoint == "refused":
            raise RequestError("no such thing", field="inputs[0].name")
        content = {"endpoint": endpoint, "version": version, "user": headers.get("x-user-id"), "size": len(raw)}
        return 200, orjson.dumps(content), []

    return Entry(_fallback, {"infer": echo, "invocations": echo}, max_body_bytes=limit)


def test_predictions_reach_their_handler_with_endpoint_version_headers_and_body() -> None:
    headers = [(b"x-user-id", b"u1"), (b"x-user-id", b"u2")]
    status, content, _ = _call(_app(), "/v2/models/fraud/versions/3/infer", [b"ab", b"cd"], headers=headers)
    assert status == 200
    assert content == {"endpoint": "fraud", "version": "3", "user": "u1", "size": 4}  # the first header counts
    assert _call(_app(), "/v1/endpoints/fraud/invocations", [b"x"])[1]["version"] is None


def test_other_paths_go_to_the_app_behind() -> None:
    for path in ("/v2/models/fraud", "/v2/models//infer", "/metrics", "/v2/models/fraud/infer/more"):
        assert _call(_app(), path, [b""], method="GET")[:2] == (299, b"starlette")


def test_a_body_over_the_limit_is_refused_as_it_streams_in() -> None:
    status, content, read = _call(_app(limit=100), "/v2/models/fraud/infer", [b"x" * 60] * 10)
    assert status == 413 and content["field"] == "body"
    assert read == 2  # refused at the chunk that crossed the limit, the rest never read
    declared = [(b"content-length", b"101")]
    status, _, read = _call(_app(limit=100), "/v2/models/fraud/infer", [b"x"], headers=declared)
    assert (status, read) == (413, 0)  # refused on its Content-Length, before any of it is read


def test_errors_name_their_field_and_a_bug_is_a_500_not_a_dropped_connection() -> None:
    assert _call(_app(), "/v2/models/refused/infer", [b""])[:2] == (
        400,
        {"error": "inputs[0].name: no such thing", "field": "inputs[0].name"},
    )
    status, content, _ = _call(_app(), "/v2/models/broken/infer", [b""])
    assert status == 500 and "logged" in content["error"]
    status, content, _ = _call(_app(), "/v2/models/fraud/infer", [b""], method="GET")
    assert status == 405 and content["field"] == "method"
