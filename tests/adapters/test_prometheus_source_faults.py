"""Prometheus as a metric source when the server, or what answers in its place, misbehaves: a real
HTTP server on loopback answering bytes that are not HTTP, a body cut short, JSON of another shape
than Prometheus' API, an error status with such a body; and URLs that cannot be opened. Each is a
measurement error naming the query, never an exception; the controller holds that rollout and
decides the others. A scripted server answers Prometheus' API with counters that reset between two
reads, which a real Prometheus shows only when a target restarts at the right moment.
(tests/adapters/test_prometheus_source.py runs a real Prometheus.)"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelcanary.adapters.sources import metric_source
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


class Scripted:
    """A loopback server answering Prometheus' instant queries: ``values[query](at)`` is the one
    series' value at the query's time (a query not scripted answers no series)."""

    def __init__(self, values: dict[str, Callable[[float], float]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                asked = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                query, at = asked["query"][0], float(asked["time"][0])
                result = [{"metric": {}, "value": [at, str(values[query](at))]}] if query in values else []
                data = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.values = values
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted({})
    yield server
    server.close()


def test_a_counter_reset_between_two_reads_is_a_measurement_error(scripted: Scripted) -> None:
    # the candidate's target restarts between the reads at 200 and 210, and its counters regrow
    # past their values at the start (0): compared with the start alone, its 300 errors would vanish
    scripted.values.update(
        {
            "sum(requests_total)": lambda at: 0 if at < 150 else (1000 if at < 205 else 1050),
            "sum(errors_total)": lambda at: 0 if at < 150 else (300 if at < 205 else 2),
        }
    )
    metrics = PrometheusMetrics()
    first = metrics.measure(source(scripted.url), since=100.0, until=200.0)
    assert first.telemetry is not None and first.telemetry.candidate.errors == 300

    second = metrics.measure(source(scripted.url), since=100.0, until=210.0)
    assert second.telemetry is None
    assert second.error == (
        f"prometheus {scripted.url}: 'sum(errors_total)' went down from 300 at an earlier read to 2: the target "
        "restarted since the rollout began (a counter reset); to read through restarts, write the query with "
        "increase(...[$window])"
    )


def test_the_controller_reads_through_one_source_so_it_sees_a_reset_between_ticks(
    store: SqlStore, scripted: Scripted
) -> None:
    assert metric_source("prometheus") is metric_source("prometheus")
    scripted.values.update(
        {
            "sum(requests_total)": lambda at: 0 if at <= 1_000.0 else 1000,
            "sum(errors_total)": lambda at: 0 if at <= 1_000.0 else (100 if at < 1_002.0 else 5),
        }
    )
    fakes = FakeRegistry({"fraud": ["1", "2"]})
    state = start_rollout(store, fakes, spec("fraud", scripted.url), source="spec", actor="t", now=1_000.0)
    clock = [1_000.0]
    controller = Controller(store=store, registry=fakes, clock=lambda: clock[0])  # the real source factory
    controller.tick()  # pending -> canary: nothing read yet
    clock[0] += 1
    controller.tick()
    assert state.id not in controller.measurement_errors
    clock[0] += 1
    controller.tick()
    assert "'sum(errors_total)' went down from 100 at an earlier read to 5" in controller.measurement_errors[state.id]
    assert store.get(state.id)[0].phase is Phase.CANARY


def test_a_query_answering_no_series_is_a_measurement_error_never_zero(scripted: Scripted) -> None:
    scripted.values["sum(requests_total)"] = lambda at: 1000 * (at - 100)  # errors_total: a typo'd query's silence
    measurement = PrometheusMetrics().measure(source(scripted.url), since=100.0, until=200.0)
    assert measurement.telemetry is None
    assert measurement.error == (
        f"prometheus {scripted.url}: 'sum(errors_total)' gave no series; "
        "if the counter may not exist yet, write it as (sum(errors_total)) or vector(0)"
    )
