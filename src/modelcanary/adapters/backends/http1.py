"""A lean HTTP/1.1 keep-alive client for forwarding predictions: one POST at a time per connection,
connections pooled per server, responses parsed by ``httptools`` (the parser uvicorn uses).

Forwarding to a remote V2 server is the gateway's hot path, and aiohttp's client, while correct
and fast next to httpx, spent about 70 µs of the gateway's ~170 µs a forwarded request here
(docs/backends.md): request and response objects, header multidicts, tracing hooks, a timeout
task. This client does what forwarding needs and no more: it writes one request, reads one
response (Content-Length or chunked), and puts the connection back unless either side said
``Connection: close``. A connection the server closed while it was idle in the pool is noticed
when a request on it gets no response at all; that request is sent once more on a new
connection (an inference request may be sent twice; a server that never answered it did not
act on it, or acted without telling anyone).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httptools


class HttpError(Exception):
    """The server could not be reached, closed the connection, sent what is not HTTP, or did not
    answer in time."""


class HttpClosed(HttpError):
    """The server closed the connection before any of the response arrived."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.chunks: list[bytes] = []
        self.closed = False
        self.keep_alive = True
        self.answered = False  # any byte of a response arrived for the request under way

    # -- asyncio.Protocol
    def connection_made(self, transport: Any) -> None:  # asyncio's Transport, or uvloop's (not a subclass)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"not an HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        why = f"the server closed the connection{f': {exc}' if exc else ''}"
        self._fail(HttpError(why) if self.answered else HttpClosed(why))

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.chunks = []
        self.keep_alive = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"connection" and value.strip().lower() == b"close":
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.keep_alive and self.parser.should_keep_alive()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.chunks)))

    # -- use
    def send(self, request: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None and self.waiter is None
        self.answered = False
        self.waiter = loop.create_future()
        self.transport.write(request)
        return self.waiter

    def _fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """Keep-alive connections to one server (``host``:``port``, TLS when ``tls``), at most
    ``limit`` open at once; requests beyond that wait for one to come free."""

    def __init__(self, host: str, port: int, *, tls: bool, limit: int = 256, timeout_s: float = 30.0) -> None:
        self.host, self.port = host, port
        self.timeout_s = timeout_s
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if tls else None
        self._host_header = host if port in (80, 443) else f"{host}:{port}"
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self.opened = 0  # connections made, for tests and the curious

    async def post(self, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
        """POST ``body`` to ``path``; the response's status and body. ``HttpError`` if there is none
        within ``timeout_s`` (the connection is dropped) or the server is unreachable."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host_header}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        request = head.encode("latin-1") + body
        loop = asyncio.get_running_loop()
        async with self._slots:
            connection = None
            while self._idle and connection is None:
                connection = self._idle.pop()
                if connection.closed:
                    connection = None
            reused = connection is not None
            if connection is None:
                connection = await self._connect(loop)
            try:
                try:
                    status, raw = await self._exchange(connection, request, loop)
                except HttpClosed:
                    if not reused:
                        raise
                    connection = await self._connect(loop)  # it had gone stale in the pool: once more, afresh
                    status, raw = await self._exchange(connection, request, loop)
            except BaseException:  # an error, a timeout, or the caller gave up (a deadline): never reused
                connection.close()
                raise
            if connection.keep_alive and not connection.closed:
                self._idle.append(connection)
            else:
                connection.close()
            return status, raw

    async def _exchange(
        self, connection: _Connection, request: bytes, loop: asyncio.AbstractEventLoop
    ) -> tuple[int, bytes]:
        waiter = connection.send(request, loop)
        timer = loop.call_later(self.timeout_s, _expire, waiter, self.timeout_s)
        try:
            return await waiter
        finally:
            timer.cancel()

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port, ssl=self._ssl), self.timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}") from exc
        self.opened += 1
        return connection

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def _expire(waiter: asyncio.Future[Any], timeout_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(HttpError(f"no response within {timeout_s:g} s"))
