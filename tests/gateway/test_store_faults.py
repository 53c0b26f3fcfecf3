"""Store faults, for real: PostgreSQL reached through a TCP proxy that the test cuts and restores.
While the store is unreachable the controller decides nothing, and the gateway keeps serving on
its last routing table and keeps its telemetry; when the store is back both carry on by themselves
and no request is missing from the counts."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.domain.errors import StoreError
from modelcanary.domain.phases import Phase
from modelcanary.engine.analysis import pair

from .support import in_canary, predict_x, x_gateway


class Proxy:
    """A TCP forwarder to ``target`` on a port of its own; ``cut`` closes the listener and every
    connection (the database is gone), ``restore`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            with contextlib.suppress(OSError):  # wakes the accept() blocked in the other thread
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            for each in self.sockets:
                with contextlib.suppress(OSError):
                    each.shutdown(socket.SHUT_RDWR)
                each.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for each in (source, sink):
                with contextlib.suppress(OSError):
                    each.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(store_url: str) -> Iterator[Proxy]:
    """A proxy to the PostgreSQL server the test's store URL names."""
    url = sa.engine.make_url(store_url)
    forwarder = Proxy((url.host or "127.0.0.1", url.port or 5432))
    yield forwarder
    forwarder.cut()


@pytest.fixture
def proxied(store_url: str, proxy: Proxy) -> Iterator[SqlStore]:
    """A store on PostgreSQL reached through ``proxy``."""
    url = sa.engine.make_url(store_url).set(host="127.0.0.1", port=proxy.port)
    store = SqlStore(url.render_as_string(hide_password=False))
    yield store
    store.close()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_an_unreachable_store_holds_the_controller_and_the_gateway_serves_on(
    proxied: SqlStore, proxy: Proxy, serve: Any, long_rollout_spec: str
) -> None:
    store = proxied
    state, controller = in_canary(store, long_rollout_spec)
    running = serve.start(x_gateway(store, "gw"))
    with running.client() as client:
        predict_x(client, range(10))
        running.flush()

        proxy.cut()
        with pytest.raises(StoreError):
            controller.tick()  # no decision on data it cannot read
        predict_x(client, range(10, 30))  # served on the last routing table
        running.flush()  # fails, logs, and keeps the counts for the next flush

        proxy.restore()
        running.flush()
        total = pair(store.read_telemetry(state.id))
        assert total.baseline.requests + total.candidate.requests == 30  # nothing lost
        assert controller.tick() == []  # back at work: judged, nothing to change yet
        predict_x(client, range(30, 35))
    current, _ = store.get(state.id)
    assert (current.phase, current.step) == (Phase.CANARY, 0)
    assert len(store.history(state.id)) == 1
    assert store.verify_audit()[1] is None


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_labels_to_relay_while_the_store_is_unreachable_are_refused_whole_and_taken_later(
    proxied: SqlStore, proxy: Proxy, serve: Any, long_rollout_spec: str
) -> None:
    store = proxied
    in_canary(store, long_rollout_spec)
    running = serve.start(x_gateway(store, "gw"))
    with running.client() as client:
        (own,) = predict_x(client, range(1))
        labels = {"labels": [{"prediction_id": own, "label": 1}, {"prediction_id": "0123456789-1", "label": 0}]}

        proxy.cut()
        refused = client.post("/v1/feedback", json=labels)
        assert refused.status_code == 503
        assert refused.json()["field"] == "labels"
        assert "send them again" in refused.json()["error"]

        proxy.restore()  # the client sends again: its own label was not taken the first time
        assert client.post("/v1/feedback", json=labels).json() == {"accepted": 2, "relayed": 1}
    assert store.take_labels("0123456789") == [("0123456789-1", 0)]
