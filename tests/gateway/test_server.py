"""``gateway.server``: an app served by a real granian server in its own process, over loopback.
Predictions take the RSGI path of ``Entry``; every other path reaches the ASGI app behind it; the
app's lifespan runs around the server, its shutdown after SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

APP = """
import asyncio, pathlib, sys
from contextlib import asynccontextmanager

import orjson
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from modelcanary.domain.errors import RequestError
from modelcanary.gateway import server
from modelcanary.gateway.entry import Entry

port, folder, fail = int(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3] == "fail"


@asynccontextmanager
async def lifespan(app):
    if fail:
        raise RuntimeError("no model to load")
    (folder / "started").write_text("yes")
    yield
    await asyncio.sleep(0.2)  # async work at shutdown, as the gateway's last telemetry flush
    (folder / "stopped").write_text("yes")


async def other(request):
    body = await request.body()
    return JSONResponse({"method": request.method, "path": request.url.path, "query": request.url.query,
                         "size": len(body), "user": request.headers.get("x-user-id"), "client": request.client.host})


async def stream(request):
    async def parts():
        for i in range(3):
            yield f"part{i};".encode()
    return StreamingResponse(parts(), media_type="text/plain")


async def broken(request):
    raise ZeroDivisionError("a bug behind the prediction path")


async def echo(endpoint, version, headers, raw):
    if endpoint == "broken":
        raise ZeroDivisionError("a bug")
    if endpoint == "refused":
        raise RequestError("no such thing", field="inputs[0].name")
    if endpoint == "binary":
        return 200, b"\\x00\\x01", [(b"inference-header-content-length", b"2")]
    content = {"endpoint": endpoint, "version": version, "user": headers.get("x-user-id"), "size": len(raw)}
    return 200, orjson.dumps(content), [(b"x-modelcanary-variant", b"baseline")]


routes = [Route("/other", other, methods=["GET", "POST"]), Route("/stream", stream), Route("/broken", broken)]
app = Starlette(routes=routes, lifespan=lifespan)
server.run(Entry(app, {"infer": echo, "invocations": echo}, max_body_bytes=100), "127.0.0.1", port, server="granian")
"""


def _start(folder: Path, mode: str = "ok") -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    script = folder / "app.py"
    script.write_text(APP)
    log = (folder / "stderr.log").open("w")
    process = subprocess.Popen([sys.executable, str(script), str(port), str(folder), mode], stderr=log)
    return process, f"http://127.0.0.1:{port}"


def _up(process: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited before it served"
        try:
            httpx.get(f"{base}/other", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"nothing answered on {base}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, base = _start(tmp_path_factory.mktemp("served"))
    try:
        _up(process, base)
        yield base
    finally:
        if process.poll() is None:
            process.kill()


def test_predictions_reach_their_handler_over_rsgi(served: str) -> None:
    base = served
    with httpx.Client(base_url=base) as client:
        response = client.post(
            "/v2/models/fraud/versions/3/infer", content=b"abcd", headers=[("x-user-id", "u1"), ("x-user-id", "u2")]
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-modelcanary-variant"] == "baseline"
        assert response.json() == {"endpoint": "fraud", "version": "3", "user": "u1", "size": 4}  # first header
        assert client.post("/v1/endpoints/fraud/invocations", content=b"x").json()["version"] is None
        binary = client.post("/v2/models/binary/infer", content=b"")
        assert (binary.headers["content-type"], binary.content) == ("application/octet-stream", b"\x00\x01")


def test_errors_become_replies_that_name_their_field(served: str) -> None:
    base = served
    with httpx.Client(base_url=base) as client:
        refused = client.post("/v2/models/refused/infer", content=b"")
        assert (refused.status_code, refused.json()["field"]) == (400, "inputs[0].name")
        broken = client.post("/v2/models/broken/infer", content=b"")
        assert broken.status_code == 500 and "logged" in broken.json()["error"]
        wrong = client.get("/v2/models/fraud/infer")
        assert (wrong.status_code, wrong.headers["allow"], wrong.json()["field"]) == (405, "POST", "method")
        # the server still answers after each of them
        assert client.post("/v2/models/fraud/infer", content=b"ok").status_code == 200


def test_bodies_over_the_limit_are_refused_declared_or_streamed(served: str) -> None:
    base = served
    with httpx.Client(base_url=base) as client:
        declared = client.post("/v2/models/fraud/infer", content=b"x" * 101)
        assert (declared.status_code, declared.json()["field"]) == (413, "body")

        def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
            yield from [b"x" * 60] * 3

        streamed = client.post("/v2/models/fraud/infer", content=chunks())
        assert (streamed.status_code, streamed.json()["field"]) == (413, "body")
        under = client.post("/v2/models/fraud/infer", content=iter([b"x" * 40, b"y" * 40]))
        assert under.json()["size"] == 80
        # refused a few chunks in, the rest of a long body unread: the next request on the same client
        # is answered, as the refusal closed the connection (the next request on it was lost)
        for _ in range(5):
            long = client.post("/v2/models/fraud/infer", content=iter([b"x" * 100] * 200))
            assert (long.status_code, long.headers["connection"]) == (413, "close")
            assert client.post("/v2/models/fraud/infer", content=b"ok").status_code == 200


def test_other_paths_reach_the_asgi_app_with_query_body_headers_and_client(served: str) -> None:
    base = served
    with httpx.Client(base_url=base) as client:
        answer = client.post("/other?a=1&b=two", content=b"hello", headers={"x-user-id": "u9"}).json()
        assert answer == {"method": "POST", "path": "/other", "query": "a=1&b=two", "size": 5, "user": "u9",
                          "client": "127.0.0.1"}  # fmt: skip
        assert client.get("/stream").text == "part0;part1;part2;"  # a streamed reply arrives whole
        assert client.get("/broken").status_code == 500
        assert client.get("/no-such-path").status_code == 404
        assert client.get("/other").json()["method"] == "GET"


def test_sigterm_runs_the_lifespan_shutdown_after_serving(tmp_path: Path) -> None:
    process, base = _start(tmp_path)  # its own process: the module's stays up for the other tests
    try:
        _up(process, base)
        assert (tmp_path / "started").read_text() == "yes"
        assert httpx.post(f"{base}/v2/models/fraud/infer", content=b"x").status_code == 200
        assert not (tmp_path / "stopped").exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        assert (tmp_path / "stopped").read_text() == "yes"  # its async shutdown ran to the end
    finally:
        if process.poll() is None:
            process.kill()


def test_a_failed_startup_serves_nothing_and_exits_non_zero(tmp_path: Path) -> None:
    process, base = _start(tmp_path, "fail")
    assert process.wait(30) != 0
    assert "no model to load" in (tmp_path / "stderr.log").read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/other", timeout=1)
