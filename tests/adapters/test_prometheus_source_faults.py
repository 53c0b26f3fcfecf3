"""Prometheus as a metric source when the server, or what answers in its place, misbehaves: a real
HTTP server on loopback answering bytes that are not HTTP, a body cut short, JSON of another shape
than Prometheus' API, an error status with such a body; and URLs that cannot be opened. Each is a
measurement error naming the query, never an exception; the controller holds that rollout and
decides the others. (tests/adapters/test_prometheus_source.py runs a real Prometheus.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelcanary.adapters.sources.prometheus import PrometheusMetrics
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.adapters.testing import FakeRegistry
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import start_rollout
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import Source

QUERIES = {"requests": "sum(requests_total)", "errors": "sum(errors_total)"}


class Answering:
    """A loopback server answering every request alike: ``raw`` bytes as they are, or ``status``
    with ``body`` as JSON."""

    def __init__(self, *, raw: bytes | None = None, status: int = 200, body: Any = None) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if raw is not None:
                    self.wfile.write(raw)
                    return
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def answering(request: pytest.FixtureRequest) -> Iterator[Answering]:
    server = Answering(**request.param)
    yield server
    server.close()


def source(url: str) -> Source:
    valid = Source.model_validate(
        {"prometheus": {"url": "http://127.0.0.1:1", "baseline": QUERIES, "candidate": QUERIES}}
    )
    # unvalidated: a URL a spec would refuse can still arrive from a rollout an older release saved
    return valid.model_copy(update={"prometheus": valid.prometheus.model_copy(update={"url": url})})


CUT_SHORT = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"status": "succ'


@pytest.mark.parametrize(
    ("answering", "expected"),
    [
        ({"raw": b"garbage\r\n\r\n"}, "BadStatusLine: garbage"),
        ({"raw": CUT_SHORT}, "IncompleteRead"),
        ({"body": []}, "the answer is not a Prometheus API response: []"),
        ({"body": {"status": "success", "data": []}}, "a malformed answer"),
        ({"body": {"status": "success", "data": {"resultType": "vector", "result": None}}}, "a malformed answer"),
        ({"body": {"status": "success", "data": {"resultType": "vector", "result": [1]}}}, "a malformed answer"),
        ({"body": {"status": "success", "data": {"resultType": "scalar", "result": "3"}}}, "a malformed answer"),
        ({"status": 400, "body": ["not", "an", "error"]}, "HTTP 400 Bad Request"),
    ],
    indirect=["answering"],
    ids=["not-http", "cut-short", "a-list", "data-a-list", "no-result", "a-vector-of-numbers", "a-bare-scalar", "400"],
)
def test_an_answer_that_is_not_prometheus_api_is_a_measurement_error(answering: Answering, expected: str) -> None:
    measurement = PrometheusMetrics().measure(source(answering.url), since=0.0, until=60.0)
    assert measurement.telemetry is None and measurement.error is not None
    assert measurement.error.startswith(f"prometheus {answering.url}: 'sum(requests_total)': ")
    assert expected in measurement.error


@pytest.mark.parametrize(
    ("url", "expected"),
    [("http://prometheus:909O", "InvalidURL: nonnumeric port: '909O'"), ("http://[fe80::1", "Invalid IPv6 URL")],
)
def test_a_url_that_cannot_be_opened_is_a_measurement_error(url: str, expected: str) -> None:
    measurement = PrometheusMetrics().measure(source(url), since=0.0, until=60.0)
    assert measurement.telemetry is None
    assert measurement.error == f"prometheus {url}: 'sum(requests_total)': {expected}"


def spec(endpoint: str, prometheus_url: str | None) -> str:
    body: dict[str, Any] = {
        "endpoint": endpoint,
        "baseline": f"models:/{endpoint}/1",
        "candidate": f"models:/{endpoint}/2",
        "traffic": {"steps": [{"weight": 50, "minRequests": 100, "minDuration": "60s"}]},
        "analysis": {"metrics": [{"kind": "error_rate", "margin": 0.02}]},
    }
    if prometheus_url is not None:
        queries = {"url": prometheus_url, "interval": 0, "baseline": QUERIES, "candidate": QUERIES}
        body["source"] = {"prometheus": queries}
    return json.dumps({"apiVersion": "modelcanary/v1", "kind": "Rollout", "spec": body})


@pytest.mark.parametrize(
    "answering", [{"body": []}, {"raw": b"\x00\xffnot http\r\n\r\n"}], indirect=True, ids=["a-list", "not-http"]
)
def test_the_controller_holds_the_rollout_whose_source_misbehaves_and_decides_the_others(
    store: SqlStore, answering: Answering
) -> None:
    fakes = FakeRegistry({"fraud": ["1", "2"], "churn": ["1", "2"]})
    sourced = start_rollout(store, fakes, spec("fraud", answering.url), source="spec", actor="t", now=1_000.0)
    clock = [1_000.0]
    controller = Controller(store=store, registry=fakes, clock=lambda: clock[0])  # the real source factory
    controller.tick()  # pending -> canary: nothing read yet
    other = start_rollout(store, fakes, spec("churn", None), source="spec", actor="t", now=clock[0])
    clock[0] += 1

    assert [state.id for state in controller.tick()] == [other.id]
    assert controller.measurement_errors[sourced.id].startswith(f"prometheus {answering.url}: 'sum(requests_total)'")
    assert store.get(sourced.id)[0].phase is Phase.CANARY
    assert store.read_telemetry(sourced.id) == []
