"""The gateway's ASGI entry. Predictions take a path of their own, straight from the server to
their handler: no router, no middleware, no request or response objects — that machinery cost
the gateway ~30 µs a request, a quarter of a light model's whole cost (docs/gateway-benchmark.md).
Everything else (metadata, health, labels, metrics) goes to the Starlette app as before.

>>> match_prediction("/v2/models/fraud/versions/3/infer")
('infer', 'fraud', '3')
>>> match_prediction("/v1/endpoints/fraud/invocations"), match_prediction("/v2/models/fraud")
(('invocations', 'fraud', None), None)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from modelcanary.domain.errors import RequestError

log = logging.getLogger("modelcanary.gateway")

RawHeaders = list[tuple[bytes, bytes]]
Reply = tuple[int, bytes, RawHeaders]  # status, body, headers beyond content-type and length
# (endpoint, version or None, the request's headers, its body) -> the reply
Handler = Callable[[str, str | None, Mapping[str, str], bytes], Awaitable[Reply]]

JSON = b"application/json"


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


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The whole body, refused (413) as soon as it is known to pass ``limit`` bytes: from its
    Content-Length before anything is read, or while a chunked body streams in."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"body larger than {limit} bytes", field="body", status=413)
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


def with_predictions(app: ASGIApp, handlers: dict[str, Handler], *, max_body_bytes: int) -> ASGIApp:
    """``app`` with the prediction routes (``handlers`` by route kind) answered before it sees them."""

    async def entry(scope: Scope, receive: Receive, send: Send) -> None:
        matched = match_prediction(scope["path"]) if scope["type"] == "http" else None
        if matched is None:
            await app(scope, receive, send)
            return
        if scope["method"] != "POST":
            reply: Reply = 405, b'{"error": "method not allowed; use POST", "field": "method"}', [(b"allow", b"POST")]
            await send_reply(send, reply)
            return
        kind, endpoint, version = matched
        headers = header_map(scope["headers"])
        try:
            reply = await handlers[kind](endpoint, version, headers, await read_body(receive, headers, max_body_bytes))
        except RequestError as exc:
            reply = error_reply(exc)
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            reply = 500, b'{"error": "internal error; the gateway logged it", "field": null}', []
        binary = any(name == b"inference-header-content-length" for name, _value in reply[2])
        await send_reply(send, reply, b"application/octet-stream" if binary else JSON)

    return entry
