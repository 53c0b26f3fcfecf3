"""A lean HTTP/1.1 keep-alive client for forwarding predictions: one POST at a time per connection,
connections pooled per server, responses parsed by ``httptools`` (the parser uvicorn uses).

Forwarding to a remote V2 server is the gateway's hot path, and aiohttp's client, while correct
and fast next to httpx, spent about 70 µs of the gateway's ~170 µs a forwarded request here
(docs/backends.md): request and response objects, header multidicts, tracing hooks, a timeout
task. This client does what forwarding needs and no more: it writes one request, reads one
response (Content-Length, chunked, or up to the close), skips 1xx interim answers, and puts the
connection back unless either side said ``Connection: close``. A request is never sent twice:
it goes again on a new connection only when the pooled one turned out closed before it was
written, and pooled connections idle for ``IDLE_S`` are dropped before a server's keep-alive
timeout closes them under a request. Bytes that arrive when no request is waiting close the
connection (they cannot be matched to any request). A response is read into memory whole, so one
larger than ``max_response_bytes`` is refused as it streams in, and its connection dropped.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Mapping
from typing import Any

import httptools

IDLE_S = 4.0  # under uvicorn's keep-alive timeout (5 s), the shortest of the V2 servers' here
# A response's body at most: predictions for the gateway's largest request (10,000 rows) of a few
# hundred values each, as JSON, with room to spare; a server sending more is broken, not answering.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class HttpError(Exception):
    """The server could not be reached, closed the connection, sent what is not HTTP, or did not
    answer in time."""


class HttpClosed(HttpError):
    """The connection was closed before the request went out: nothing was sent, so it may go again."""


class HttpTimeout(HttpError, TimeoutError):
    """No connection or no response within the timeout. A ``TimeoutError`` too, so that whoever wraps
    it (``BackendError(...) from exc``) can still tell a timeout from a failure."""


class _Connection(asyncio.Protocol):
    def __init__(self, max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0  # of the body under way
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.chunks: list[bytes] = []
        self.closed = False
        self.keep_alive = True
        self.sized = False  # the response under way has a Content-Length or is chunked
        self.headers_done = False
        self.idle_since = 0.0  # when it went back to the pool (loop time)

    # -- asyncio.Protocol
    def connection_made(self, transport: Any) -> None:  # asyncio's Transport, or uvloop's (not a subclass)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing was asked: a stray or late answer; the stream is not ours to trust
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"not an HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done() and self.headers_done and not self.sized:
            # a body without a length ends where the connection does (HTTP/1.0, or Connection: close)
            self.waiter = None
            self.keep_alive = False
            waiter.set_result((self.parser.get_status_code(), b"".join(self.chunks)))
            return
        self._fail(HttpError(f"the server closed the connection{f': {exc}' if exc else ''}"))

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.chunks = []
        self.size = 0
        self.keep_alive = True
        self.sized = False
        self.headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"connection" and value.strip().lower() == b"close":
            self.keep_alive = False
        elif name == b"content-length" or name == b"transfer-encoding":
            self.sized = True

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.parser.get_status_code() in (204, 304):
            self.sized = True  # no body, whatever the headers say

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_bytes:
            # the rest of this answer cannot be skipped without reading it: the connection goes
            self.chunks = []
            if self.waiter is not None:
                self._fail(HttpError(f"the response is larger than {self.max_bytes} bytes"))
                self.close()
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the answer is still to come
            return
        self.keep_alive = self.keep_alive and self.parser.should_keep_alive()
        waiter, self.waiter = self.waiter, None
        if waiter is None:  # a second answer to one request: nothing after it can be trusted
            self.close()
        elif not waiter.done():
            waiter.set_result((status, b"".join(self.chunks)))

    # -- use
    def send(self, request: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[tuple[int, bytes]]:
        """The request written; its answer to come. ``HttpClosed`` when the connection is closed
        already, so nothing was sent."""
        assert self.transport is not None and self.waiter is None
        if self.closed or self.transport.is_closing():
            raise HttpClosed("the server closed the connection before the request was sent")
        self.waiter = loop.create_future()
        try:
            self.transport.write(request)
        except (RuntimeError, OSError) as exc:  # uvloop: "handler is closed", raced with the close
            self.waiter = None
            self.close()
            raise HttpClosed(f"the connection closed as the request was sent: {exc}") from exc
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

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool,
        limit: int = 256,
        timeout_s: float = 30.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.host, self.port = host, port
        self.timeout_s = timeout_s
        self._protocol = functools.partial(_Connection, max_response_bytes)
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if tls else None
        named = f"[{host}]" if ":" in host else host  # an IPv6 address
        self._host_header = named if port == (443 if tls else 80) else f"{named}:{port}"
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self.opened = 0  # connections made, for tests and the curious

    async def post(
        self, path: str, body: bytes, content_type: str = "application/json", headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        """POST ``body`` to ``path`` (with ``headers`` besides Host, Content-Type and Content-Length);
        the response's status and body. ``HttpError`` if the server is unreachable or its response
        is not one (``HttpTimeout`` if there is none within ``timeout_s``); the connection is dropped."""
        extra = ""
        for name, value in (headers or {}).items():
            if any(c in name or c in value for c in "\r\n"):
                raise ValueError(f"header {name!r}: a line break in a header would end it early")
            extra += f"{name}: {value}\r\n"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host_header}\r\nContent-Type: {content_type}\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n"
        )
        request = head.encode("latin-1") + body
        loop = asyncio.get_running_loop()
        async with self._slots:
            connection = self._pooled(loop.time())
            if connection is None:
                connection = await self._connect(loop)
            try:
                try:
                    status, raw = await self._exchange(connection, request, loop)
                except HttpClosed:  # closed while it sat in the pool, and nothing was sent: once more, afresh
                    connection = await self._connect(loop)
                    status, raw = await self._exchange(connection, request, loop)
            except BaseException:  # an error, a timeout, or the caller gave up (a deadline): never reused
                connection.close()
                raise
            if connection.keep_alive and not connection.closed:
                connection.idle_since = loop.time()
                self._idle.append(connection)
            else:
                connection.close()
            return status, raw

    def _pooled(self, now: float) -> _Connection | None:
        """The most recently used idle connection still open and not idle for longer than
        ``IDLE_S`` (the server may be about to close it: a request it never answers cannot be
        sent again, as the server may have acted on it)."""
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_S:
                return connection
            connection.close()
        return None

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
                loop.create_connection(self._protocol, self.host, self.port, ssl=self._ssl), self.timeout_s
            )
        except (OSError, TimeoutError) as exc:
            kind = HttpTimeout if isinstance(exc, TimeoutError) else HttpError
            raise kind(f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}") from exc
        self.opened += 1
        return connection

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def _expire(waiter: asyncio.Future[Any], timeout_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(HttpTimeout(f"no response within {timeout_s:g} s"))
