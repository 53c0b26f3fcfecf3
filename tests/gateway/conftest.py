"""A real uvicorn server on loopback for a gateway, in a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest

from modelcanary.adapters.testing import FunctionModel
from modelcanary.domain.state import ModelVersion
from modelcanary.gateway.app import Gateway, create_app
from modelcanary.ports import Model

T = TypeVar("T")
START_TIMEOUT_S = 30.0


@dataclass
class RunningGateway:
    """One gateway served over HTTP: its base URL, and a way to run coroutines on its event loop
    (the recorder belongs to that loop's thread, so flushes must run there too)."""

    url: str
    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    server: Any
    thread: threading.Thread

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    def flush(self) -> None:
        self.call(self.gateway.flush())

    def client(self) -> httpx.Client:
        """A client on this gateway. TCP_NODELAY: httpx writes a request's headers and body separately,
        and Nagle's algorithm would hold the body back for the server's delayed ACK."""
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        return httpx.Client(base_url=self.url, transport=transport, timeout=30)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Servers:
    running: list[RunningGateway] = field(default_factory=list)

    def start(self, gateway: Gateway) -> RunningGateway:
        import uvicorn

        # The kernel picks a free port and uvicorn serves on this very socket (no race for the port).
        # IPPROTO_TCP must be explicit: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # says TCP, and without it every response waits ~40 ms on a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(gateway), host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False
        )
        server = uvicorn.Server(config)
        loop = asyncio.new_event_loop()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.serve(sockets=[sock]))
            except BaseException as exc:  # surfaced by start() below
                failure.append(exc)
            finally:
                loop.close()
                sock.close()

        thread = threading.Thread(target=serve, name=f"gateway-{port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError(f"the gateway did not start: {failure or 'timeout'}")
            time.sleep(0.01)
        running = RunningGateway(
            url=f"http://127.0.0.1:{port}", gateway=gateway, loop=loop, server=server, thread=thread
        )
        self.running.append(running)
        return running

    def stop_all(self) -> None:
        for running in self.running:
            running.stop()
        self.running.clear()


@pytest.fixture
def serve() -> Iterator[Servers]:
    """``serve.start(gateway)`` runs it on loopback until the test ends."""
    servers = Servers()
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture(scope="module")
def serve_module() -> Iterator[Servers]:
    """As ``serve``, for a server shared by a module's tests."""
    servers = Servers()
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture
def long_rollout_spec() -> str:
    """A rollout on ``fraud`` (champion to challenger) that sits at 50% for an hour: for tests about
    serving and storing, not deciding."""
    return """\
apiVersion: modelcanary/v1
kind: Rollout
spec:
  endpoint: fraud
  baseline: models:/fraud@champion
  candidate: models:/fraud@challenger
  traffic:
    stickyKey: {header: x-user-id}
    steps: [{weight: 50, minRequests: 1000000, minDuration: 1h, maxDuration: 2h}]
  analysis:
    metrics: [{kind: error_rate}]
"""


class WithCandidate:
    """A backend: the session's real models for every version but the candidate (``fraud/2``),
    which is the function ``fn`` with the real candidate's signature (so it can hang or raise)."""

    def __init__(self, real: Any, fn: Any) -> None:
        self.real = real
        self.fn = fn

    def load(self, version: ModelVersion) -> Model:
        if version.version == "2":
            return FunctionModel(self.fn, self.real.load(version).columns)
        return self.real.load(version)  # type: ignore[no-any-return]


@pytest.fixture
def with_candidate(pyfunc_backend: Any) -> Any:
    """``with_candidate(fn)``: a ``WithCandidate`` backend over the session's real models."""
    return lambda fn: WithCandidate(pyfunc_backend, fn)
