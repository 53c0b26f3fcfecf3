"""Serving the gateway: on uvicorn (the default) or on granian, a Rust HTTP server (``--server
granian``), in this process's own event loop.

Which to pick is a trade measured side by side (docs/gateway.md, "The server";
``python -m bench.gateway.servers_latency``): on granian over its RSGI interface the gateway
carries ~18% more at saturation (0.87x the bare uvicorn app where it carries 0.73x on uvicorn), as
granian parses HTTP and writes replies in Rust, off the interpreter; but at 3,000 requests a
second, 60-70% of its capacity, its p50 is twice uvicorn's (2.3 against 1.1 ms) and its p99 four
times (10 against 2.4 ms), likely because granian's thread must take the interpreter's lock to
hand over each request while the loop's thread is busy. A gateway usually runs below saturation,
so uvicorn is the default.

On granian, predictions take ``Entry.__rsgi__``; every other path (metadata, health, labels,
metrics, the control API in ``modelcanary serve``) is handed to the ASGI app by
``asgi_over_rsgi``, and the app's lifespan (model loading, background tasks, the last telemetry
flush) runs around the server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, cast

from starlette.types import ASGIApp, Message

log = logging.getLogger("modelcanary.gateway")


def _address(value: str | None) -> tuple[str, int] | None:
    """granian's "host:port" as ASGI's (host, port)."""
    if not value:
        return None
    host, _, port = value.rpartition(":")
    return (host, int(port)) if port.isdigit() else (value, 0)


async def asgi_over_rsgi(app: ASGIApp, scope: Any, protocol: Any) -> None:
    """Answer one RSGI HTTP request with an ASGI app: its body streams in as ``http.request``
    messages, its reply goes out whole, or streamed when the app streams it (``more_body``)."""
    chunks = aiter(protocol)
    body_done = False
    started: dict[str, Any] = {}
    stream: Any = None
    finished = False

    async def receive() -> Message:
        nonlocal body_done
        if not body_done:
            try:
                return {"type": "http.request", "body": await anext(chunks), "more_body": True}
            except StopAsyncIteration:
                body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
        await protocol.client_disconnect()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal stream, finished
        if message["type"] == "http.response.start":
            started["status"] = message["status"]
            started["headers"] = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())]
        elif message["type"] == "http.response.body" and not finished:
            body, more = message.get("body", b""), message.get("more_body", False)
            if stream is None and not more:
                protocol.response_bytes(started["status"], started["headers"], body)
                finished = True
                return
            if stream is None:
                headers = [(k, v) for k, v in started["headers"] if k.lower() != "content-length"]
                stream = protocol.response_stream(started["status"], headers)
            if body:
                await stream.send_bytes(body)
            finished = not more

    asgi_scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": scope.path,
        "raw_path": scope.path.encode(),
        "query_string": scope.query_string.encode("latin-1"),
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()],
        "client": _address(scope.client),
        "server": _address(scope.server),
    }
    try:
        await app(asgi_scope, receive, send)
    except Exception:
        log.exception("%s %s failed", scope.method, scope.path)
        if stream is None and not finished:
            protocol.response_bytes(500, [("content-type", "text/plain")], b"internal error; the gateway logged it")
        return
    if stream is None and not finished:  # the app ended without finishing its reply, or beginning one
        protocol.response_bytes(started.get("status", 500), started.get("headers", []), b"")


async def serve_granian(app: Any, host: str, port: int) -> None:
    """Serve ``app`` (ASGI, and RSGI where it has ``__rsgi__``) on granian on host:port until SIGINT or
    SIGTERM; its lifespan's startup runs before the socket opens and its shutdown after the last
    request. A startup that fails raises, and nothing is served."""
    from granian.asgi import LifespanProtocol
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    lifespan: Any = cast(Any, LifespanProtocol)(app)  # granian's driver of the ASGI lifespan messages
    await lifespan.startup()
    if lifespan.interrupt:
        raise RuntimeError("the app failed to start") from lifespan.exc
    rsgi = hasattr(app, "__rsgi__")
    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.RSGI if rsgi else Interfaces.ASGINL,
        websockets=False,
        backlog=1024,
        log_level=LogLevels.error,  # granian warns on every start that its embedded mode is "experimental"
    )
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, server.stop)
    try:
        await server.serve()
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)
        await lifespan.shutdown()


SERVERS = ("uvicorn", "granian")


def run(app: Any, host: str, port: int, *, server: str = "uvicorn") -> None:
    """Serve ``app`` on ``server`` (one of ``SERVERS``), blocking until SIGINT or SIGTERM; both run
    it on uvloop."""
    if server == "granian":
        import uvloop

        uvloop.run(serve_granian(app, host, port))
        return
    if server != "uvicorn":
        raise ValueError(f"server must be one of {', '.join(SERVERS)}, not {server!r}")
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
