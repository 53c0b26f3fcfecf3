"""The gateway's entry, for ASGI servers (``Entry.__call__``: uvicorn, the default) and RSGI ones
(``Entry.__rsgi__``: granian's own interface, for ``--server granian``; ``gateway/server.py``).

Predictions take a path of their own, straight from the server to their handler: no router, no
middleware, no request or response objects — that machinery cost the gateway ~30 µs a request, a
quarter of a light model's whole cost — and under RSGI not even ASGI's messages: granian parses
HTTP in Rust and hands over the path, the headers and the body (docs/gateway-benchmark.md).
Everything else (metadata, health, labels, metrics) goes to the Starlette app, over ASGI.

>>> match_prediction("/v2/models/fraud/versions/3/infer")
('infer', 'fraud', '3')
>>> match_prediction("/v1/endpoints/fraud/invocations"), match_prediction("/v2/models/fraud")
(('invocations', 'fraud', None), None)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from modelcanary.domain.errors import RequestError

log = logging.getLogger("modelcanary.gateway")

RawHeaders = list[tuple[bytes, bytes]]
Reply = tuple[int, bytes, RawHeaders]  # status, body, headers beyond content-type and length
# (endpoint, version or None, the request's headers, its body) -> the reply
Handler = Callable[[str, str | None, Mapping[str, str], bytes], Awaitable[Reply]]

JSON = b"application/json"
OCTETS = b"application/octet-stream"
NOT_POST: Reply = 405, b'{"error": "method not allowed; use POST", "field": "method"}', [(b"allow", b"POST")]
INTERNAL: Reply = 500, b'{"error": "internal error; the gateway logged it", "field": null}', []


def match_prediction(path: str) -> tuple[str, str, str | None] | None:
    """Which prediction route a path is, with its endpoint and version; None for any other path."""
    parts = path.split("/")
    if len(parts) == 5 and parts[1] == "v2" and parts[2] == "models" and parts[4] == "infer" and parts[3]:
        return "infer", parts[3], None
    if len(parts) == 7 and parts[1:3] == ["v2", "models"] and parts[4] == "versions" and parts[6] == "infer":
        return ("infer", parts[3], parts[5]) if parts[3] and parts[5] else None
    if len(parts) == 5 and parts[1] == "v1" and parts[2] == "endpoints" and parts[4] == "invocations" and parts[3]:
        return "invocations", parts[3], None
    return None


def error_reply(exc: RequestError) -> Reply:
    return exc.status, orjson.dumps({"error": str(exc), "field": exc.field}), []


def header_map(raw: RawHeaders) -> dict[str, str]:
    """The request's headers by name (ASGI servers give names lowercased); the first of a repeated
    one counts, as in Starlette. A dict: looked up a few times a request, in O(1).

    >>> header_map([(b"x-user-id", b"u1"), (b"x-user-id", b"u2")])
    {'x-user-id': 'u1'}
    """
    headers: dict[str, str] = {}
    for name, value in raw:
        headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return headers


def _refuse_declared(headers: Mapping[str, str], limit: int) -> bool:
    """Raise 413 if the body's Content-Length passes ``limit``; whether it declared one at all."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"body larger than {limit} bytes", field="body", status=413)
    return declared is not None


async def _gather(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """A streamed body (RSGI's), refused (413) at the chunk that takes it past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise RequestError(f"body larger than {limit} bytes", field="body", status=413)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The whole body, refused (413) as soon as it is known to pass ``limit`` bytes: from its
    Content-Length before anything is read, or while a chunked body streams in. The loop is
    ``_gather``'s, written out: an async generator feeding it cost 0.8 µs more a request."""
    _refuse_declared(headers, limit)
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError("the client went away before its body arrived", field="body", status=400)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(f"body larger than {limit} bytes", field="body", status=413)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_reply(send: Send, reply: Reply, content_type: bytes = JSON) -> None:
    status, body, extra = reply
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Entry:
    """``app`` with the prediction routes (``handlers`` by route kind) answered before it sees them,
    under either interface."""

    def __init__(self, app: ASGIApp, handlers: dict[str, Handler], *, max_body_bytes: int) -> None:
        self.app = app
        self._handlers = handlers
        self._limit = max_body_bytes

    async def _answer(
        self, matched: tuple[str, str, str | None], headers: Mapping[str, str], body: Awaitable[bytes], where: str
    ) -> tuple[Reply, bytes]:
        """The reply to a matched POST, and its content type; errors become replies, never escape."""
        kind, endpoint, version = matched
        try:
            reply = await self._handlers[kind](endpoint, version, headers, await body)
        except RequestError as exc:
            reply = error_reply(exc)
        except Exception:
            log.exception("POST %s failed", where)
            reply = INTERNAL
        binary = any(name == b"inference-header-content-length" for name, _value in reply[2])
        return reply, OCTETS if binary else JSON

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = match_prediction(scope["path"]) if scope["type"] == "http" else None
        if matched is None:
            await self.app(scope, receive, send)
        elif scope["method"] != "POST":
            await send_reply(send, NOT_POST)
        else:
            headers = header_map(scope["headers"])
            reply, content_type = await self._answer(
                matched, headers, read_body(receive, headers, self._limit), scope["path"]
            )
            await send_reply(send, reply, content_type)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        matched = match_prediction(scope.path)
        if matched is None:
            from modelcanary.gateway.server import asgi_over_rsgi

            await asgi_over_rsgi(self.app, scope, protocol)
            return
        if scope.method != "POST":
            reply, content_type = NOT_POST, JSON
        else:
            headers = scope.headers  # granian's: get() gives the first of a repeated header, as above
            reply, content_type = await self._answer(matched, headers, self._rsgi_body(headers, protocol), scope.path)
        status, body, extra = reply
        names = [("content-type", content_type.decode())]
        if status == 413:  # the body was left unread, maybe mid-stream: the connection cannot carry the next request
            names.append(("connection", "close"))
        protocol.response_bytes(status, names + [(k.decode("latin-1"), v.decode("latin-1")) for k, v in extra], body)

    async def _rsgi_body(self, headers: Mapping[str, str], protocol: Any) -> bytes:
        if _refuse_declared(headers, self._limit):
            body: bytes = await protocol()  # its length is known and within the limit: read at once
            return body
        return await _gather(protocol, self._limit)  # chunked: counted as it streams in
