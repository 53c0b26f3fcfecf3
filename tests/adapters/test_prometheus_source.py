"""Prometheus as a metric source, against a real Prometheus server (Debian's ``prometheus``
binary, started here on loopback with a temp config and storage: tests/prometheus_support.py)
scraping a real target: a process exposing prometheus_client counters and a histogram per model
version, driven by the test.

Every test counts from the target's totals when it starts and waits for Prometheus to scrape the
traffic it drove, so none depends on which of the module's tests ran before it.

Skips when the binary is missing, unless ``MODELCANARY_REQUIRE_PROMETHEUS`` is set (CI sets it)."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
import urllib.request
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelcanary.adapters.sources.prometheus import PrometheusMetrics
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.adapters.testing import FakeRegistry
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import start_rollout
from modelcanary.controller.report import rollout_report
from modelcanary.domain.errors import SpecError
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import Source, load_spec
from modelcanary.domain.telemetry import LATENCY_EDGES_MS
from tests.prometheus_support import free_port, prometheus_binary, prometheus_server, wait_for_value


@dataclass
class Prometheus:
    url: str
    target: str

    def drive(self, version: str, latencies_s: list[float], errors: int = 0) -> None:
        body = json.dumps({"version": version, "latencies_s": latencies_s, "errors": errors}).encode()
        urllib.request.urlopen(urllib.request.Request(f"{self.target}/observe", data=body), timeout=10).close()

    def driven(self, version: str) -> int:
        """How many requests of ``version`` the target has counted: the truth Prometheus catches up
        with. (Prometheus's own last sample may be one scrape behind; starting a count from it made
        the wait below look for a total that never came.)"""
        with urllib.request.urlopen(f"{self.target}/metrics", timeout=10) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith(f'model_requests_total{{version="{version}"}} '):
                return int(float(line.split()[-1]))
        return 0

    def scraped(self, version: str, requests: int) -> None:
        """Wait until Prometheus holds ``requests`` requests of ``version`` (and the same in the
        histogram, scraped in the same sample)."""
        query = f'sum(model_requests_total{{version="{version}"}})'
        wait_for_value(self.url, query, requests, f"scraped {requests} requests of v{version}")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prometheus_binary()  # skips (or fails, in CI) before the target starts
    root = tmp_path_factory.mktemp("prometheus")
    target = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("prometheus_target.py"))], stdout=subprocess.PIPE, text=True
    )
    try:
        assert target.stdout is not None
        target_port = int(target.stdout.readline())
        with prometheus_server(root, {"model": f"127.0.0.1:{target_port}"}) as url:
            yield Prometheus(url=url, target=f"http://127.0.0.1:{target_port}")
    finally:
        target.terminate()
        target.wait(timeout=30)


# a version's counters do not exist until it serves (or fails) a request: as docs/ecosystem.md says,
# such a counter is written `or vector(0)`, since a query answering no series is an error
CANDIDATE_REQUESTS = 'sum(model_requests_total{version="2"}) or vector(0)'


def source(url: str, *, candidate_requests: str = CANDIDATE_REQUESTS) -> dict[str, Any]:
    def queries(version: str, requests: str | None = None) -> dict[str, str]:
        return {
            "requests": requests or f'sum(model_requests_total{{version="{version}"}}) or vector(0)',
            "errors": f'sum(model_errors_total{{version="{version}"}}) or vector(0)',
            "latencyBuckets": f'sum(model_latency_seconds_bucket{{version="{version}"}}) by (le)',
        }

    return {
        "prometheus": {
            "url": url,
            "interval": 0,
            "baseline": queries("1"),
            "candidate": queries("2", candidate_requests),
        }
    }


def test_reads_each_variants_growth_since_the_start(prometheus: Prometheus) -> None:
    before = {version: prometheus.driven(version) for version in "12"}
    # traffic before the rollout starts is not the rollout's
    prometheus.drive("1", [0.004] * 30, errors=3)
    prometheus.drive("2", [0.004] * 10)
    prometheus.scraped("1", before["1"] + 30)
    prometheus.scraped("2", before["2"] + 10)
    since = time.time()
    prometheus.drive("1", [0.004] * 100, errors=1)
    prometheus.drive("2", [0.004] * 50 + [0.3] * 40 + [20.0] * 10, errors=7)
    prometheus.scraped("1", before["1"] + 130)
    prometheus.scraped("2", before["2"] + 110)

    measurement = PrometheusMetrics().measure(
        Source.model_validate(source(prometheus.url)), since=since, until=time.time()
    )

    assert measurement.error is None and measurement.telemetry is not None
    baseline, candidate = measurement.telemetry.baseline, measurement.telemetry.candidate
    assert (baseline.requests, baseline.errors) == (100, 1)
    assert (candidate.requests, candidate.errors) == (100, 7)
    assert sum(baseline.latency_counts) == 100 and sum(candidate.latency_counts) == 100
    # each request sits in our bucket holding its Prometheus bucket's le: 4 ms -> le 5 ms, 300 ms -> le 500 ms
    assert baseline.latency_counts[bisect_right(LATENCY_EDGES_MS, 5.0)] == 100
    assert candidate.latency_counts[bisect_right(LATENCY_EDGES_MS, 5.0)] == 50
    assert candidate.latency_counts[bisect_right(LATENCY_EDGES_MS, 500.0)] == 40
    # above the last finite le (10 s) a value is only known to exceed it: just above it
    assert candidate.latency_counts[bisect_right(LATENCY_EDGES_MS, 10_000.0) + 1] == 10


def test_a_windowed_query_reads_increase_over_the_rollouts_age(prometheus: Prometheus) -> None:
    # a sample of v2's series before the window: increase() counts growth from one, and a series
    # first scraped with the window's traffic in it (this test alone) would show none
    prometheus.drive("2", [0.004])
    before = prometheus.driven("2")
    prometheus.scraped("2", before)
    since = time.time()
    # a window spanning many scrapes, the traffic in its middle: increase() needs two samples or more
    time.sleep(1.5)
    prometheus.drive("2", [0.004] * 100)
    prometheus.scraped("2", before + 100)
    time.sleep(1.5)
    config = source(prometheus.url)
    config["prometheus"]["candidate"] = {
        "requests": 'sum(increase(model_requests_total{version="2"}[$window]))',
        "errors": 'sum(increase(model_errors_total{version="2"}[$window]))',
        "latencyBuckets": 'sum(increase(model_latency_seconds_bucket{version="2"}[$window])) by (le)',
    }

    measurement = PrometheusMetrics().measure(Source.model_validate(config), since=since, until=time.time())

    assert measurement.telemetry is not None, measurement.error
    candidate = measurement.telemetry.candidate
    # increase() extrapolates to the window's edges: near the 100 requests, not exactly them
    assert 80 <= candidate.requests <= 120 and candidate.errors == 0
    assert candidate.latency_counts[bisect_right(LATENCY_EDGES_MS, 5.0)] == sum(candidate.latency_counts)


@pytest.mark.parametrize(
    ("candidate_requests", "expected"),
    [
        ("sum(model_requests_total{", "bad_data"),  # a PromQL syntax error: Prometheus' own message
        ("model_requests_total", "aggregate it to one"),  # two series (versions 1 and 2) where one was asked
        ('model_latency_seconds_bucket{version="2"}[1m]', "gave a matrix"),
        # a label's typo answers no series: never read as 0 (no errors, the candidate promoted)
        ('sum(model_requests_total{verison="2"})', "gave no series"),
        ('sum(model_requests_total{version="2"}) / 0', "gave '+Inf', not a finite number"),  # never raised
    ],
)
def test_a_failed_query_is_data_naming_the_query(
    prometheus: Prometheus, candidate_requests: str, expected: str
) -> None:
    # both versions' series exist (the second case needs two), and Prometheus holds this traffic
    # before the test ends: none of it lands in a later test's window
    for version in "12":
        prometheus.drive(version, [0.01])
        prometheus.scraped(version, prometheus.driven(version))
    config = Source.model_validate(source(prometheus.url, candidate_requests=candidate_requests))

    measurement = PrometheusMetrics().measure(config, since=time.time() - 60, until=time.time())

    assert measurement.telemetry is None
    assert measurement.error is not None and expected in measurement.error and candidate_requests in measurement.error


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        # a filter dropping the +Inf bucket: the requests slower than the last finite le would vanish
        (
            {"latencyBuckets": 'sum(model_latency_seconds_bucket{version="2", le!="+Inf"}) by (le)'},
            'no le="+Inf" bucket',
        ),
        # both versions' requests, one version's histogram: the other's latencies would go unseen
        ({"requests": "sum(model_requests_total) or vector(0)"}, "fewer than the"),
    ],
    ids=["no-inf", "fewer-than-requests"],
)
def test_a_histogram_missing_requests_is_data_naming_the_query(
    prometheus: Prometheus, candidate: dict[str, str], expected: str
) -> None:
    for version in "12":
        prometheus.drive(version, [0.01])
        prometheus.scraped(version, prometheus.driven(version))
    config = source(prometheus.url)
    config["prometheus"]["candidate"].update(candidate)

    measurement = PrometheusMetrics().measure(Source.model_validate(config), since=time.time() - 60, until=time.time())

    assert measurement.telemetry is None
    assert measurement.error is not None and expected in measurement.error
    assert config["prometheus"]["candidate"]["latencyBuckets"] in measurement.error


def test_an_unreachable_server_is_data_too() -> None:
    config = Source.model_validate(source(f"http://127.0.0.1:{free_port()}"))
    measurement = PrometheusMetrics().measure(config, since=0.0, until=1.0)
    assert measurement.telemetry is None and measurement.error is not None and "refused" in measurement.error


def rollout_spec(url: str, *, candidate_requests: str = CANDIDATE_REQUESTS) -> str:
    document = {
        "apiVersion": "modelcanary/v1",
        "kind": "Rollout",
        "spec": {
            "endpoint": "fraud",
            "baseline": "models:/fraud/1",
            "candidate": "models:/fraud/2",
            "traffic": {"steps": [{"weight": 50, "minRequests": 200, "minDuration": 0, "maxDuration": "10m"}]},
            "analysis": {"metrics": [{"kind": "error_rate", "margin": 0.02}, {"kind": "latency", "margin": 0.5}]},
            "source": source(url, candidate_requests=candidate_requests),
        },
    }
    return json.dumps(document)


# a lognormal's quantiles (median 50 ms, sigma 1): a latency distribution spread over the default
# buckets. Piled into one or two buckets, no request would exceed the baseline's quantile bucket and
# the latency test could never show the candidate within its margin (see docs/ecosystem.md).
SPREAD = [0.05 * math.exp(statistics.NormalDist().inv_cdf((i + 0.5) / 1000)) for i in range(1000)]


def fraud_registry() -> FakeRegistry:
    return FakeRegistry({"fraud": ["1", "2"]})


def run_until_ended(controller: Controller, store: SqlStore, rollout_id: str, drive: Any) -> Any:
    """Tick, driving one batch of traffic per tick, until the rollout ends."""
    for _ in range(50):
        controller.tick()
        state, _ = store.get(rollout_id)
        if state.phase.is_terminal():
            return state
        drive()
    report = rollout_report(store, rollout_id)
    raise AssertionError(
        f"rollout still {state.phase.value} after 50 ticks: {state.reason}; {report.judgement.summary()}"
    )


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_controller_rolls_back_a_candidate_failing_in_prometheus(prometheus: Prometheus, open_store: Any) -> None:
    store = open_store()
    state = start_rollout(store, fraud_registry(), rollout_spec(prometheus.url), source="spec", actor="test")
    started = {version: prometheus.driven(version) for version in "12"}
    seen = dict(started)

    def drive() -> None:  # the candidate fails one request in five; the baseline one in a hundred
        for version, errors in (("1", 2), ("2", 40)):
            prometheus.drive(version, [0.004] * 200, errors=errors)
            seen[version] += 200
            prometheus.scraped(version, int(seen[version]))

    controller = Controller(store=store, registry=fraud_registry())
    ended = run_until_ended(controller, store, state.id, drive)

    assert ended.phase is Phase.ROLLED_BACK
    assert "error-rate failed" in ended.reason
    # the report reads what the controller read from Prometheus, from the store
    report = rollout_report(store, state.id)
    # exactly the candidate's traffic since the rollout started, one request in five failed: every
    # test waits for Prometheus to scrape what it drove, so no earlier traffic lands in this window
    candidate = report.telemetry.candidate
    served = seen["2"] - started["2"]
    assert served > 0 and (candidate.requests, candidate.errors) == (served, served // 5)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_controller_promotes_a_candidate_as_good_in_prometheus(prometheus: Prometheus, open_store: Any) -> None:
    store = open_store()
    state = start_rollout(store, fraud_registry(), rollout_spec(prometheus.url), source="spec", actor="test")
    seen = {version: prometheus.driven(version) for version in "12"}

    def drive() -> None:  # the same latencies, spread over many of Prometheus' default buckets; no errors
        for version in "12":
            prometheus.drive(version, SPREAD)
            seen[version] += 1000
            prometheus.scraped(version, int(seen[version]))

    ended = run_until_ended(Controller(store=store, registry=fraud_registry()), store, state.id, drive)

    assert ended.phase is Phase.PROMOTED, ended.reason


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_failing_query_holds_the_rollout_and_says_why(prometheus: Prometheus, open_store: Any) -> None:
    store = open_store()
    bad = "sum(rate(model_requests_total[1m])"  # unbalanced: Prometheus refuses it
    document = json.loads(rollout_spec(prometheus.url, candidate_requests=bad))
    # read once an hour: the clock moved past maxDuration below must not query the future
    document["spec"]["source"]["prometheus"]["interval"] = "1h"
    text = json.dumps(document)
    state = start_rollout(store, fraud_registry(), text, source="spec", actor="test")
    offset = {"s": 0.0}
    controller = Controller(store=store, registry=fraud_registry(), clock=lambda: time.time() + offset["s"])

    controller.tick()  # pending -> canary
    controller.tick()  # the first read fails: held, not crashed
    held, _ = store.get(state.id)
    assert held.phase is Phase.CANARY
    assert bad in controller.measurement_errors[state.id]

    offset["s"] = 601.0  # the step's maxDuration runs out with no good read since: rolled back, saying why
    controller.tick()
    ended, _ = store.get(state.id)
    assert ended.phase is Phase.ROLLED_BACK
    assert "measurement error" in ended.reason and bad in ended.reason, ended.reason


def test_a_spec_cannot_ask_prometheus_for_what_it_does_not_measure() -> None:
    document = json.loads(rollout_spec("http://prometheus:9090"))
    document["spec"]["analysis"]["metrics"].append({"kind": "quality"})
    with pytest.raises(SpecError, match=r"quality.*needs the gateway's telemetry"):
        load_spec(json.dumps(document))
    del document["spec"]["source"]["prometheus"]["candidate"]["latencyBuckets"]
    document["spec"]["analysis"]["metrics"].pop()
    with pytest.raises(SpecError, match="latencyBuckets for both variants or for neither"):
        load_spec(json.dumps(document))
