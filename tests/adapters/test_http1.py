"""The forwarding client against a real server on loopback that misbehaves on request: keep-alive
reuse, chunked bodies, ``Connection: close``, connections the server drops while they sit idle,
slow and garbled answers. On asyncio's loop and on uvloop's (the gateway's, under uvicorn)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from modelcanary.adapters.backends.http1 import Http1Pool, HttpError

Reply = Callable[[bytes], Awaitable[bytes | None]]  # the request's body -> raw response bytes (None: hang up)


def _ok(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{header}\r\n" for header in headers)
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode() + body


class Server:
    """An HTTP/1.1 server that answers each request on a connection with ``reply`` (which sees
    its body), counting connections and requests."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.close_after: set[bytes] = set()  # bodies after whose answer the server closes the connection
        self.connections = 0
        self.requests = 0
        self.heads: list[bytes] = []  # each request's line and headers, as received
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = await reader.readexactly(length)
                self.requests += 1
                answer = await self.reply(body)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if body in self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    def runner(coroutine: Awaitable[Any]) -> Any:
        if request.param == "uvloop":
            return uvloop.run(coroutine)  # type: ignore[arg-type]
        return asyncio.run(coroutine)  # type: ignore[arg-type]

    return runner


def test_connections_are_kept_alive_and_reused(run: Any) -> None:
    async def echo(body: bytes) -> bytes:
        return _ok(b"got " + body)

    async def scenario() -> None:
        server = Server(echo)
        pool = Http1Pool("127.0.0.1", await server.start(), tls=False, limit=4)
        answers = await asyncio.gather(*(pool.post("/infer", f"{i}".encode()) for i in range(40)))
        assert answers == [(200, f"got {i}".encode()) for i in range(40)]
        assert server.requests == 40 and server.connections <= 4 == pool.opened
        pool.close()
        server.close()

    run(scenario())


def test_headers_go_with_the_request_and_a_line_break_in_one_is_refused(run: Any) -> None:
    async def echo(body: bytes) -> bytes:
        return _ok(body)

    async def scenario() -> None:
        server = Server(echo)
        pool = Http1Pool("127.0.0.1", await server.start(), tls=False)
        assert await pool.post("/infer", b"1", headers={"X-User-Id": "u1", "Traceparent": "00-ab-cd-01"}) == (200, b"1")
        lines = server.heads[0].split(b"\r\n")
        assert b"X-User-Id: u1" in lines and b"Traceparent: 00-ab-cd-01" in lines
        with pytest.raises(ValueError, match="line break"):
            await pool.post("/infer", b"2", headers={"X-User-Id": "u1\r\nX-Admin: yes"})
        assert server.requests == 1  # nothing of the refused request was sent
        pool.close()
        server.close()

    run(scenario())


def test_a_chunked_body_and_a_closing_answer(run: Any) -> None:
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            _ok(b"bye", "connection: close"),
            _ok(b"again"),
        ]
    )

    async def scripted(_body: bytes) -> bytes:
        return next(answers)

    async def scenario() -> None:
        server = Server(scripted)
        pool = Http1Pool("127.0.0.1", await server.start(), tls=False)
        assert await pool.post("/a", b"x") == (200, b"hello world")
        assert await pool.post("/a", b"x") == (200, b"bye")
        assert await pool.post("/a", b"x") == (200, b"again")  # on a new connection: the last one said close
        assert (server.connections, pool.opened) == (2, 2)
        server.close()

    run(scenario())


def test_a_connection_dropped_while_idle_is_replaced_and_the_request_sent_once_more(run: Any) -> None:
    async def answer_then_hang_up(body: bytes) -> bytes | None:
        return _ok(body) if body != b"drop" else None

    async def scenario() -> None:
        server = Server(answer_then_hang_up)
        server.close_after.add(b"one")  # as a server does to a connection idle too long
        pool = Http1Pool("127.0.0.1", await server.start(), tls=False, limit=1)
        assert await pool.post("/a", b"one") == (200, b"one")
        await asyncio.sleep(0.05)
        assert await pool.post("/a", b"two") == (200, b"two")
        assert pool.opened == 2
        # and if the client only learns it when it sends: the request goes once more, afresh
        (stale,) = pool._idle
        stale.closed = False  # as if the hang-up had not reached the client yet
        stale.transport.close()
        assert await pool.post("/a", b"three") == (200, b"three")
        assert pool.opened == 3
        # a connection that was new when the server hung up is an error, not a retry
        with pytest.raises(HttpError, match="closed the connection"):
            await Http1Pool("127.0.0.1", pool.port, tls=False).post("/a", b"drop")
        server.close()

    run(scenario())


def test_no_answer_in_time_no_server_and_not_http_are_errors_and_the_connection_is_not_reused(run: Any) -> None:
    async def scripted(body: bytes) -> bytes:
        if body == b"slow":
            await asyncio.sleep(1.0)
        if body == b"garbage":
            return b"SMTP ready\r\n\r\n"
        return _ok(body)

    async def scenario() -> None:
        server = Server(scripted)
        port = await server.start()
        pool = Http1Pool("127.0.0.1", port, tls=False, timeout_s=0.2)
        with pytest.raises(HttpError, match=r"no response within 0\.2 s"):
            await pool.post("/a", b"slow")
        with pytest.raises(HttpError, match="not an HTTP response"):
            await pool.post("/a", b"garbage")
        assert await pool.post("/a", b"fine") == (200, b"fine")
        assert pool.opened == 3  # the slow answer's connection and the garbled one were dropped
        server.close()
        with pytest.raises(HttpError, match="cannot connect"):
            await Http1Pool("127.0.0.1", port, tls=False).post("/a", b"x")

    run(scenario())


def test_a_response_past_the_size_bound_is_refused_whatever_its_framing_and_a_timeout_is_a_timeout(
    run: Any,
) -> None:
    """A broken server streaming without end must not grow the gateway's memory without end: the
    answer is refused at the chunk that passes the bound, and its connection dropped."""
    big = b"x" * 1500
    answers = {
        b"sized": _ok(big),
        b"chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(b"100\r\n" + b"y" * 256 + b"\r\n" for _ in range(6))
        + b"0\r\n\r\n",
        b"until-close": b"HTTP/1.0 200 OK\r\n\r\n" + big,
        b"fits": _ok(b"z" * 1000),
    }

    async def scripted(body: bytes) -> bytes:
        if body == b"slow":
            await asyncio.sleep(1.0)
        return answers[body]

    async def scenario() -> None:
        server = Server(scripted)
        server.close_after.add(b"until-close")
        pool = Http1Pool("127.0.0.1", await server.start(), tls=False, max_response_bytes=1024, timeout_s=0.3)
        for framing in (b"sized", b"chunked", b"until-close"):
            with pytest.raises(HttpError, match="the response is larger than 1024 bytes"):
                await pool.post("/a", framing)
        assert await pool.post("/a", b"fits") == (200, b"z" * 1000)
        assert pool.opened == 4  # each refused answer's connection was dropped
        with pytest.raises(HttpError, match=r"no response within 0\.3 s") as caught:
            await pool.post("/a", b"slow")
        assert isinstance(caught.value, TimeoutError)  # so the gateway answers 504, not 502
        server.close()

    run(scenario())


def test_a_caller_that_gives_up_leaves_no_connection_behind(run: Any) -> None:
    async def slow(body: bytes) -> bytes:
        await asyncio.sleep(0.3)
        return _ok(body)

    async def scenario() -> None:
        server = Server(slow)
        pool = Http1Pool("127.0.0.1", await server.start(), tls=False)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.post("/a", b"late"), 0.05)  # a candidate's deadline
        assert await pool.post("/a", b"next") == (200, b"next")  # not on the abandoned connection
        assert pool.opened == 2
        server.close()

    run(scenario())


def test_interim_answers_are_skipped_and_a_body_may_end_with_the_connection(run: Any) -> None:
    answers = iter(
        [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + _ok(b"first"),
            b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"until": "close"}',
            _ok(b"third"),
        ]
    )

    async def scripted(_body: bytes) -> bytes:
        return next(answers)

    async def scenario() -> None:
        server = Server(scripted)
        server.close_after.add(b"2")
        pool = Http1Pool("127.0.0.1", await server.start(), tls=False)
        assert await pool.post("/a", b"1") == (200, b"first")
        assert await pool.post("/a", b"2") == (200, b'{"until": "close"}')
        assert await pool.post("/a", b"3") == (200, b"third")
        assert pool.opened == 2  # the HTTP/1.0 answer's connection ended with it
        server.close()

    run(scenario())


def test_a_server_that_hangs_up_as_it_accepts_is_an_error_the_gateway_handles(run: Any) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        pool = Http1Pool("127.0.0.1", server.sockets[0].getsockname()[1], tls=False)
        for _ in range(20):  # on uvloop the write could raise RuntimeError, not an HttpError
            with pytest.raises(HttpError):
                await pool.post("/a", b"x")
        server.close()

    run(scenario())


def test_stray_bytes_on_an_idle_connection_and_old_idle_connections_are_not_reused(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def double(body: bytes) -> bytes:
        return _ok(body) + (_ok(b"stray") if body == b"twice" else b"")

    async def scenario() -> None:
        server = Server(double)
        pool = Http1Pool("127.0.0.1", await server.start(), tls=False)
        assert await pool.post("/a", b"twice") == (200, b"twice")
        await asyncio.sleep(0.05)
        assert await pool.post("/a", b"next") == (200, b"next")  # not the stray answer
        assert pool.opened == 2
        monkeypatch.setattr("modelcanary.adapters.backends.http1.IDLE_S", 0.0)
        assert await pool.post("/a", b"later") == (200, b"later")
        assert pool.opened == 3  # idle past IDLE_S: closed, not reused
        server.close()

    run(scenario())


def test_the_host_header_names_the_port_unless_it_is_the_schemes_and_brackets_ipv6() -> None:
    headers = [
        Http1Pool(host, port, tls=tls)._host_header
        for host, port, tls in (
            ("a.example", 80, False),
            ("a.example", 443, True),
            ("a.example", 8080, False),
            ("::1", 8000, False),
        )
    ]
    assert headers == ["a.example", "a.example", "a.example:8080", "[::1]:8000"]
