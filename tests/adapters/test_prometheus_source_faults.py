"""Prometheus as a metric source when the server, or what answers in its place, misbehaves: a real
HTTP server on loopback answering bytes that are not HTTP, a body cut short or trickled a byte at a
time, JSON of another shape than Prometheus' API (an internal service's secrets, which no error may
quote), an error status with such a body, an answer with warnings (a partial answer); and URLs that
cannot be opened, or hold credentials. Each is a measurement error naming the query, never an
exception; the controller holds that rollout and decides the others, on time. A scripted server
answers Prometheus' API with counters that reset between two reads, which a real Prometheus shows
only when a target restarts at the right moment, negative counts, and a histogram that lost a
bucket. (tests/adapters/test_prometheus_source.py runs a real Prometheus.)"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http import HTTPStatus
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
    with ``body`` as JSON; its first ``slow`` bytes one every ``pause_s`` seconds."""

    def __init__(
        self, *, raw: bytes | None = None, status: int = 200, body: Any = None, slow: int = 0, pause_s: float = 0.0
    ) -> None:
        if raw is None:
            data = json.dumps(body).encode()
            head = f"HTTP/1.0 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            raw = f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data
        answer = raw

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with contextlib.suppress(OSError):  # the client hung up on a slow answer
                    for index in range(slow):
                        self.wfile.write(answer[index : index + 1])
                        self.wfile.flush()
                        time.sleep(pause_s)
                    self.wfile.write(answer[slow:])

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
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


def source(url: str, queries: dict[str, str] = QUERIES, *, timeout: float = 5.0) -> Source:
    valid = Source.model_validate(
        {"prometheus": {"url": "http://127.0.0.1:1", "baseline": queries, "candidate": queries, "timeout": timeout}}
    )
    # unvalidated: a URL a spec would refuse can still arrive from a rollout an older release saved
    return valid.model_copy(update={"prometheus": valid.prometheus.model_copy(update={"url": url})})


CUT_SHORT = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"status": "succ'
NOT_PROMETHEUS = "the answer is not a Prometheus API response"
# what an internal JSON service answers (a cloud's metadata service: credentials), that a spec's URL may name
SECRETS = {"Code": "Success", "AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "SECRET/KEY/abc123"}
VECTOR = {"resultType": "vector", "result": [{"metric": {}, "value": [60, "5"]}]}


@pytest.mark.parametrize(
    ("answering", "expected"),
    [
        ({"raw": b"garbage\r\n\r\n"}, "BadStatusLine: the answer is not HTTP"),  # its line unquoted
        ({"raw": CUT_SHORT}, "IncompleteRead"),
        ({"body": []}, f"{NOT_PROMETHEUS} (HTTP 200 OK, Content-Type application/json): JSON, but not an object"),
        (
            {"raw": b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>"},
            "(HTTP 200 OK, Content-Type text/html): not JSON",
        ),
        ({"body": {"status": "success", "data": []}}, "a malformed answer"),
        ({"body": {"status": "success", "data": {"resultType": "vector", "result": None}}}, "a malformed answer"),
        ({"body": {"status": "success", "data": {"resultType": "vector", "result": [1]}}}, "a malformed answer"),
        ({"body": {"status": "success", "data": {"resultType": "scalar", "result": "3"}}}, "a malformed answer"),
        ({"status": 400, "body": ["not", "an", "error"]}, f"{NOT_PROMETHEUS} (HTTP 400 Bad Request, Content-Type"),
    ],
    indirect=["answering"],
    ids=[
        "not-http",
        "cut-short",
        "a-list",
        "html",
        "data-a-list",
        "no-result",
        "a-vector-of-numbers",
        "a-bare-scalar",
        "400",
    ],
)
def test_an_answer_that_is_not_prometheus_api_is_a_measurement_error(answering: Answering, expected: str) -> None:
    measurement = PrometheusMetrics().measure(source(answering.url), since=0.0, until=60.0)
    assert measurement.telemetry is None and measurement.error is not None
    assert measurement.error.startswith(f"prometheus {answering.url}: 'sum(requests_total)': ")
    assert expected in measurement.error


@pytest.mark.parametrize(
    ("answering", "expected"),
    [
        ({"body": SECRETS}, f"{NOT_PROMETHEUS} (HTTP 200 OK, Content-Type application/json): no errorType and error"),
        (
            {"status": 500, "body": SECRETS},
            f"{NOT_PROMETHEUS} (HTTP 500 Internal Server Error, Content-Type application/json)",
        ),
        ({"body": {"status": "error", "errorType": "x", "error": SECRETS}}, f"{NOT_PROMETHEUS} (HTTP 200 OK"),
        (
            {"status": 403, "body": {"status": "error", "errorType": SECRETS, "error": "x"}},
            f"{NOT_PROMETHEUS} (HTTP 403 Forbidden",
        ),
        # a status line or a reason phrase of the server's own: quoted whole until a review (2026-12-03)
        ({"raw": b"SecretAccessKey=SECRET/KEY/abc123 " + b"x" * 5000 + b"\r\n\r\n"}, "BadStatusLine: the answer is"),
        (
            {"raw": b"HTTP/1.1 200 SecretAccessKey=SECRET/KEY\r\nContent-Type: text/html\r\n\r\n<html>"},
            f"{NOT_PROMETHEUS} (HTTP 200 OK, Content-Type text/html): not JSON",
        ),
    ],
    indirect=["answering"],
    ids=["200", "500", "error-not-a-string", "error-type-not-a-string", "status-line", "reason-phrase"],
)
def test_an_answer_from_another_service_is_never_quoted(answering: Answering, expected: str) -> None:
    # the error is logged and saved in the rollout's history, which the control API shows
    measurement = PrometheusMetrics().measure(source(answering.url), since=0.0, until=60.0)
    assert measurement.error is not None
    assert measurement.error.startswith(f"prometheus {answering.url}: 'sum(requests_total)': {expected}")
    assert "SECRET" not in measurement.error and "ASIA" not in measurement.error


@pytest.mark.parametrize(
    "answering",
    [{"status": 422, "body": {"status": "error", "errorType": "execution", "error": "many-to-many matching " * 100}}],
    indirect=True,
)
def test_prometheus_own_error_is_quoted_shortened(answering: Answering) -> None:
    measurement = PrometheusMetrics().measure(source(answering.url), since=0.0, until=60.0)
    quoted = ("many-to-many matching " * 10)[:200]
    assert measurement.error == f"prometheus {answering.url}: 'sum(requests_total)': HTTP 422 execution: {quoted}..."


PARTIAL = "partial response: store 10.0.0.7:10901 unavailable"


@pytest.mark.parametrize(
    ("answering", "expected"),
    [
        (
            {"body": {"status": "success", "warnings": [PARTIAL], "data": VECTOR}},
            f"an answer with warnings, so it may lack data: {PARTIAL}",
        ),
        (
            {"body": {"status": "success", "warnings": [PARTIAL * 10, "a limit"], "data": VECTOR}},
            f"an answer with warnings, so it may lack data: {(PARTIAL * 10)[:200]}...",
        ),
        (
            {"body": {"status": "success", "warnings": [SECRETS], "data": VECTOR}},
            "its warnings are not a list of strings",
        ),
    ],
    indirect=["answering"],
    ids=["partial", "shortened", "not-strings"],
)
def test_an_answer_with_warnings_is_a_measurement_error(answering: Answering, expected: str) -> None:
    # Thanos' and Mimir's partial answers, Prometheus' past a limit: status success, some data missing
    measurement = PrometheusMetrics().measure(source(answering.url), since=0.0, until=60.0)
    assert measurement.telemetry is None
    assert measurement.error is not None and "SECRET" not in measurement.error
    assert measurement.error.endswith(expected)


@pytest.mark.parametrize(
    "answering", [{"body": {"status": "success", "data": VECTOR}, "slow": 8, "pause_s": 0.4}], indirect=True
)
def test_an_answer_trickling_in_is_cut_at_the_querys_timeout(answering: Answering) -> None:
    # each byte within the timeout: a socket's timeout alone let one query run 3.2 s, and a measure
    # (eight queries) 26 s; the first query's deadline ends it
    started = time.monotonic()
    measurement = PrometheusMetrics().measure(source(answering.url, timeout=1.0), since=0.0, until=60.0)
    assert time.monotonic() - started < 2.0
    assert measurement.error == f"prometheus {answering.url}: 'sum(requests_total)': no complete answer within 1 s"


def test_a_url_holding_credentials_is_never_opened_nor_shown(scripted: Scripted) -> None:
    # saved by an older release: specs refuse it now (tests/domain/test_spec_urls.py)
    scripted.values.update({"sum(requests_total)": lambda at: 1, "sum(errors_total)": lambda at: 0})
    url = scripted.url.replace("http://", "http://admin:s3cr3t@")
    measurement = PrometheusMetrics().measure(source(url), since=0.0, until=60.0)
    assert measurement.error == (
        f"prometheus {scripted.url}: the URL holds credentials (user:password@, not shown), which are never sent: "
        "take them out"
    )
    assert scripted.asked == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [("http://prometheus:909O", "InvalidURL: nonnumeric port: '909O'"), ("http://[fe80::1", "Invalid IPv6 URL")],
)
def test_a_url_that_cannot_be_opened_is_a_measurement_error(url: str, expected: str) -> None:
    measurement = PrometheusMetrics().measure(source(url), since=0.0, until=60.0)
    assert measurement.telemetry is None
    assert measurement.error == f"prometheus {url}: 'sum(requests_total)': {expected}"


def spec(endpoint: str, prometheus_url: str | None, *, timeout: float = 5.0) -> str:
    body: dict[str, Any] = {
        "endpoint": endpoint,
        "baseline": f"models:/{endpoint}/1",
        "candidate": f"models:/{endpoint}/2",
        "traffic": {"steps": [{"weight": 50, "minRequests": 100, "minDuration": "60s"}]},
        "analysis": {"metrics": [{"kind": "error_rate", "margin": 0.02}]},
    }
    if prometheus_url is not None:
        queries = {"url": prometheus_url, "interval": 0, "timeout": timeout, "baseline": QUERIES, "candidate": QUERIES}
        body["source"] = {"prometheus": queries}
    return json.dumps({"apiVersion": "modelcanary/v1", "kind": "Rollout", "spec": body})


@pytest.mark.parametrize(
    "answering",
    [
        {"body": []},
        {"raw": b"\x00\xffnot http\r\n\r\n"},
        {"body": {"status": "success", "data": VECTOR}, "slow": 8, "pause_s": 0.4},
    ],
    indirect=True,
    ids=["a-list", "not-http", "trickling"],
)
def test_the_controller_holds_the_rollout_whose_source_misbehaves_and_decides_the_others(
    store: SqlStore, answering: Answering
) -> None:
    fakes = FakeRegistry({"fraud": ["1", "2"], "churn": ["1", "2"]})
    document = spec("fraud", answering.url, timeout=1.0)
    sourced = start_rollout(store, fakes, document, source="spec", actor="t", now=1_000.0)
    clock = [1_000.0]
    controller = Controller(store=store, registry=fakes, clock=lambda: clock[0])  # the real source factory
    controller.tick()  # pending -> canary: nothing read yet
    other = start_rollout(store, fakes, spec("churn", None), source="spec", actor="t", now=clock[0])
    clock[0] += 1

    started = time.monotonic()
    assert [state.id for state in controller.tick()] == [other.id]
    assert time.monotonic() - started < 3.0  # the other rollout waits one query's timeout (1 s) at most
    assert controller.measurement_errors[sourced.id].startswith(f"prometheus {answering.url}: 'sum(requests_total)'")
    assert store.get(sourced.id)[0].phase is Phase.CANARY
    assert store.read_telemetry(sourced.id) == []


Value = float | dict[str, float]  # one series' value, or a histogram's count per le


class Scripted:
    """A loopback server answering Prometheus' instant queries: ``values[query](at)`` is the one
    series' value at the query's time, or a histogram's series (``{le: count}``); a query not
    scripted answers no series. ``asked`` holds the queries asked."""

    def __init__(self, values: dict[str, Callable[[float], Value]]) -> None:
        self.asked: list[str] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                asked = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                query, at = asked["query"][0], float(asked["time"][0])
                scripted.asked.append(query)
                value = values[query](at) if query in values else {}
                series = value.items() if isinstance(value, dict) else [(None, value)]
                result = [{"metric": {} if le is None else {"le": le}, "value": [at, str(n)]} for le, n in series]
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


HISTOGRAM = {"requests": "sum(requests_total)", "errors": "sum(errors_total)", "latencyBuckets": "sum(b) by (le)"}


@pytest.mark.parametrize(
    ("at_start", "now", "expected"),
    [
        # the 40 requests slower than 1 s lie in +Inf alone: without it they vanish
        ({}, {"0.1": 60, "1": 60}, 'gave no le="+Inf" bucket: the requests slower than le=1 would vanish'),
        # a bucket's series gone stale since the start (or a partial answer): its requests land in the next
        (
            {"0.1": 5, "5": 8, "+Inf": 8},
            {"0.1": 55, "+Inf": 108},
            "gave no bucket le=5 now, which it gave at the start",
        ),
        (
            {},
            {"0.1": 60, "+Inf": 60},
            "observed 60 requests (its +Inf bucket), fewer than the 100 of 'sum(requests_total)'",
        ),
    ],
    ids=["no-inf", "a-bucket-gone", "fewer-than-requests"],
)
def test_a_histogram_missing_requests_is_a_measurement_error(
    scripted: Scripted, at_start: dict[str, float], now: dict[str, float], expected: str
) -> None:
    scripted.values.update(
        {
            "sum(requests_total)": lambda at: 0 if at < 150 else 100,
            "sum(errors_total)": lambda at: 0,
            "sum(b) by (le)": lambda at: at_start if at < 150 else now,
        }
    )
    measurement = PrometheusMetrics().measure(source(scripted.url, HISTOGRAM), since=100.0, until=200.0)
    assert measurement.telemetry is None
    assert measurement.error is not None and measurement.error.startswith(
        f"prometheus {scripted.url}: 'sum(b) by (le)'"
    )
    assert expected in measurement.error


def test_a_histogram_holding_every_request_is_read(scripted: Scripted) -> None:
    # the same at the start and now, +Inf covering the requests: the checks above pass it
    scripted.values.update(
        {
            "sum(requests_total)": lambda at: 0 if at < 150 else 100,
            "sum(errors_total)": lambda at: 0,
            "sum(b) by (le)": lambda at: (
                {"0.1": 5, "1": 8, "+Inf": 8} if at < 150 else {"0.1": 65, "1": 98, "+Inf": 108}
            ),
        }
    )
    measurement = PrometheusMetrics().measure(source(scripted.url, HISTOGRAM), since=100.0, until=200.0)
    assert measurement.telemetry is not None, measurement.error
    assert sum(measurement.telemetry.candidate.latency_counts) == 100


def constant(value: float) -> Callable[[float], Value]:
    return lambda at: value


WINDOWED = {"requests": "sum(increase(requests_total[$window]))", "errors": "sum(increase(errors_total[$window]))"}


@pytest.mark.parametrize(
    ("queries", "values", "negative"),
    [
        # increase() is never negative: a query that is (a difference written by hand) would take errors away
        (
            WINDOWED,
            {"sum(increase(requests_total[100000ms]))": 100.0, "sum(increase(errors_total[100000ms]))": -7.0},
            "sum(increase(errors_total[100000ms]))",
        ),
        (QUERIES, {"sum(requests_total)": 100.0, "sum(errors_total)": -3.0}, "sum(errors_total)"),
    ],
    ids=["windowed", "cumulative"],
)
def test_a_negative_count_is_a_measurement_error(
    scripted: Scripted, queries: dict[str, str], values: dict[str, float], negative: str
) -> None:
    scripted.values.update({query: constant(value) for query, value in values.items()})
    measurement = PrometheusMetrics().measure(source(scripted.url, queries), since=100.0, until=200.0)
    assert measurement.telemetry is None
    assert measurement.error == (
        f"prometheus {scripted.url}: {negative!r} gave {str(values[negative])!r}, a negative count; "
        "a count, or its increase, is never below zero"
    )
