"""Fault isolation over real HTTP: the real sklearn baseline from the MLflow registry beside a
candidate that hangs, raises or flips between the two; a real store and a real controller."""

from __future__ import annotations

import functools
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import start_rollout
from modelcanary.domain.phases import Phase
from modelcanary.domain.state import ModelVersion, Route
from modelcanary.domain.telemetry import LATENCY_EDGES_MS
from modelcanary.domain.traffic import CircuitBreaker, StickyKey
from modelcanary.engine.analysis import pair
from modelcanary.gateway.app import VARIANT_HEADER, Gateway

from .support import wait_for


@pytest.fixture
def versions(registry: MlflowRegistry) -> tuple[ModelVersion, ModelVersion]:
    return registry.resolve("models:/fraud@champion"), registry.resolve("models:/fraud@challenger")


def _route(versions: Any, rollout_id: str, breaker: CircuitBreaker) -> Route:
    return Route(
        endpoint="fraud",
        baseline=versions[0],
        candidate=versions[1],
        weight=100.0,
        rollout_id=rollout_id,
        sticky=StickyKey(header="x-user-id"),
        breaker=breaker,
    )


def _records(rows: list[dict[str, float]]) -> dict[str, Any]:
    return {"dataframe_records": rows}


def _variant_for(running: Any, rows: list[dict[str, float]], who: int) -> str:
    """The variant that answered ``rows`` for user ``who``, on a connection of its own (so callers
    may ask from many threads at once); the answer must be a 200."""
    with running.client() as http:
        response = http.post("/v1/endpoints/fraud/invocations", json=_records(rows), headers={"x-user-id": f"u{who}"})
    assert response.status_code == 200, response.text
    return str(response.headers[VARIANT_HEADER])


def _baseline_says(pyfunc_backend: Any, versions: Any, rows: list[dict[str, float]]) -> list[Any]:
    model = pyfunc_backend.load(versions[0])
    return model.predict({name: [row[name] for row in rows] for name in rows[0]})  # type: ignore[no-any-return]


def test_a_candidate_past_its_deadline_does_not_hold_the_client(
    serve: Any, store: Any, pyfunc_backend: Any, versions: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    """The candidate hangs until the test lets it go, which it does only after every response came
    back: had any request waited for the candidate, it would never have been answered."""
    release = threading.Event()

    def hangs(inputs: dict[str, list[Any]]) -> list[Any]:
        release.wait(60)
        return [[0.5, 0.5] for _ in inputs["amount"]]

    store.put_route(_route(versions, "r-deadline", CircuitBreaker(consecutive_failures=1000, deadline=0.05)))
    gateway = Gateway(routes=store, backend=with_candidate(hangs), telemetry=store, source="gw-1")
    running = serve.start(gateway)
    rows = mlflow_registry.rows[:2]
    try:
        with running.client() as http:
            for who in range(6):
                response = http.post(
                    "/v1/endpoints/fraud/invocations", json=_records(rows), headers={"x-user-id": f"u{who}"}
                )
                assert response.status_code == 200, response.text
                assert response.headers[VARIANT_HEADER] == "baseline"
                assert response.json()["predictions"] == _baseline_says(pyfunc_backend, versions, rows)
    finally:
        release.set()
    running.flush()
    total = pair(store.read_telemetry("r-deadline"))
    assert (total.candidate.requests, total.candidate.errors) == (6, 6)
    assert (total.baseline.requests, total.baseline.errors) == (6, 0)
    # four workers took the first four calls and were abandoned; the other two were not even started
    assert gateway.candidates.abandoned == 4


def test_a_candidate_within_its_deadline_answers_from_the_pool(
    serve: Any, store: Any, pyfunc_backend: Any, versions: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    ran_on: set[str] = set()

    def slow(inputs: dict[str, list[Any]]) -> list[Any]:
        ran_on.add(threading.current_thread().name)
        time.sleep(0.01)
        return [[0.25, 0.75] for _ in inputs["amount"]]

    store.put_route(_route(versions, "r-in-time", CircuitBreaker(deadline=30.0)))
    running = serve.start(Gateway(routes=store, backend=with_candidate(slow), telemetry=store, source="gw-1"))
    with running.client() as http:
        for who in range(3):
            response = http.post(
                "/v1/endpoints/fraud/invocations", json=_records(mlflow_registry.rows[:2]), headers={"x-user-id": "u"}
            )
            assert (response.status_code, response.headers[VARIANT_HEADER]) == (200, "candidate"), who
            assert response.json()["predictions"] == [[0.25, 0.75], [0.25, 0.75]]
    assert ran_on and all(name.startswith("modelcanary-candidate") for name in ran_on)
    running.flush()
    total = pair(store.read_telemetry("r-in-time"))
    assert (total.candidate.requests, total.candidate.errors, total.candidate.breaker_trips) == (3, 0, 0)
    assert total.candidate.cpu_ms > 0  # measured on the worker thread it ran on


@pytest.mark.parametrize("fails", [False, True], ids=["answers", "fails"])
def test_a_candidates_latency_leaves_out_its_wait_for_the_pool(
    serve: Any, store: Any, versions: Any, mlflow_registry: Any, with_candidate: Any, fails: bool
) -> None:
    """The latency a candidate with a deadline is charged is its call's, as if it ran inline as the
    baseline does: not its wait for a worker, nor for the loop to take the answer back (the
    deadline's isolation, which the candidate will not pay once it is the baseline), whether the
    call answered or failed (then the baseline answers). Here one worker serves three requests at
    once, so two of them queue behind 50 ms calls."""

    def slow(inputs: dict[str, list[Any]]) -> list[Any]:
        time.sleep(0.05)
        if fails:
            raise RuntimeError("the candidate broke")
        return [[0.25, 0.75] for _ in inputs["amount"]]

    store.put_route(_route(versions, "r-waits", CircuitBreaker(deadline=30.0, consecutive_failures=100)))
    gateway = Gateway(routes=store, backend=with_candidate(slow), telemetry=store, source="gw-1", candidate_workers=1)
    running = serve.start(gateway)
    ask = functools.partial(_variant_for, running, mlflow_registry.rows[:1])
    started = time.perf_counter()
    with ThreadPoolExecutor(3) as clients:
        assert list(clients.map(ask, range(3))) == ["baseline" if fails else "candidate"] * 3
    assert time.perf_counter() - started >= 0.15  # the calls did queue: three of 50 ms on one worker
    running.flush()
    candidate = pair(store.read_telemetry("r-waits")).candidate
    assert (candidate.requests, candidate.errors) == (3, 3 if fails else 0)
    edges = [0.0, *LATENCY_EDGES_MS]  # bucket i holds latencies from edges[i] up
    charged = [edges[i] for i, n in enumerate(candidate.latency_counts) for _ in range(n)]
    assert all(45 <= low < 90 for low in charged), charged  # the call's 50 ms; queued, 100 or 150


def test_healthy_calls_beyond_the_pool_wait_for_a_worker_within_their_deadline(
    serve: Any, store: Any, versions: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    """Twelve requests at once on four workers, each call 50 ms of a 5 s deadline: eight wait for a
    worker, well within their deadline. Ordinary concurrency is not the candidate's failure (the
    breaker, at 3, would have rolled a healthy candidate back)."""

    def healthy(inputs: dict[str, list[Any]]) -> list[Any]:
        time.sleep(0.05)
        return [[0.25, 0.75] for _ in inputs["amount"]]

    store.put_route(_route(versions, "r-burst", CircuitBreaker(consecutive_failures=3, deadline=5.0)))
    gateway = Gateway(routes=store, backend=with_candidate(healthy), telemetry=store, source="gw-1")
    running = serve.start(gateway)
    rows = mlflow_registry.rows[:1]

    ask = functools.partial(_variant_for, running, rows)

    with ThreadPoolExecutor(12) as clients:
        assert list(clients.map(ask, range(12))) == ["candidate"] * 12
    assert (gateway.serving["fraud"].guard.failures, gateway.candidates.abandoned) == (0, 0)
    running.flush()
    total = pair(store.read_telemetry("r-burst"))
    assert (total.candidate.requests, total.candidate.errors, total.candidate.breaker_trips) == (12, 0, 0)


def test_only_calls_running_past_their_deadline_hold_workers_and_queued_ones_are_dropped(
    serve: Any, store: Any, versions: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    """One worker, a candidate that hangs until let go, three requests at once: the first call runs
    and hangs, the two behind it wait for the worker, and at the deadline all three are abandoned.
    Only the running one holds the worker: the queued two never run. With the worker held, the next
    call is not even started; once the hung call returns, the worker serves again."""
    release = threading.Event()
    started = itertools.count()

    def hangs(inputs: dict[str, list[Any]]) -> list[Any]:
        next(started)
        release.wait(30)
        return [[0.5, 0.5] for _ in inputs["amount"]]

    store.put_route(_route(versions, "r-held", CircuitBreaker(consecutive_failures=1000, deadline=2.0)))
    gateway = Gateway(routes=store, backend=with_candidate(hangs), telemetry=store, source="gw-1", candidate_workers=1)
    running = serve.start(gateway)
    rows = mlflow_registry.rows[:1]

    ask = functools.partial(_variant_for, running, rows)

    try:
        with ThreadPoolExecutor(3) as clients:
            assert list(clients.map(ask, range(3))) == ["baseline"] * 3
        assert (gateway.candidates.abandoned, gateway.candidates.held) == (3, 1)
        assert ask(3) == "baseline"  # not started: the one worker is held
        assert (gateway.candidates.abandoned, next(started)) == (3, 1)  # only the first call ever ran
    finally:
        release.set()
    wait_for(lambda: gateway.candidates.held == 0, "the hung call to return", timeout=10.0)
    assert ask(4) == "candidate"


def test_a_success_resets_the_count_of_failures_in_a_row(
    serve: Any, store: Any, pyfunc_backend: Any, versions: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    calls = itertools.count()

    def flaky(inputs: dict[str, list[Any]]) -> list[Any]:
        if next(calls) % 2 == 0:
            raise RuntimeError("every other call fails")
        return [[0.9, 0.1] for _ in inputs["amount"]]

    store.put_route(_route(versions, "r-flaky", CircuitBreaker(consecutive_failures=2)))
    running = serve.start(Gateway(routes=store, backend=with_candidate(flaky), telemetry=store, source="gw-1"))
    with running.client() as http:
        seen = [
            http.post(
                "/v1/endpoints/fraud/invocations", json=_records(mlflow_registry.rows[:1]), headers={"x-user-id": "u"}
            ).headers[VARIANT_HEADER]
            for _ in range(10)
        ]
    assert seen == ["baseline", "candidate"] * 5
    running.flush()
    total = pair(store.read_telemetry("r-flaky"))
    assert (total.candidate.requests, total.candidate.errors, total.candidate.breaker_trips) == (10, 5, 0)


BREAKING_SPEC = """\
apiVersion: modelcanary/v1
kind: Rollout
spec:
  endpoint: fraud
  baseline: models:/fraud@champion
  candidate: models:/fraud@challenger
  traffic:
    stickyKey: {header: x-user-id}
    circuitBreaker: {consecutiveFailures: 3}
    steps: [{weight: 100, minRequests: 1000000, minDuration: 1h, maxDuration: 2h}]
  analysis:
    metrics: [{kind: error_rate}]
"""


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
def test_consecutive_failures_take_the_candidate_out_and_the_controller_rolls_back(
    serve: Any, open_store: Any, with_candidate: Any, registry: MlflowRegistry, mlflow_registry: Any
) -> None:
    def broken(_inputs: dict[str, list[Any]]) -> list[Any]:
        raise RuntimeError("candidate crashed")

    store = open_store()
    state = start_rollout(store, registry, BREAKING_SPEC, source="test", actor="test")
    controller = Controller(store=store, registry=registry)
    controller.tick()  # canary, candidate at 100%
    gateway = Gateway(routes=store, backend=with_candidate(broken), telemetry=store, source="gw-9")
    running = serve.start(gateway)
    rows = mlflow_registry.rows[:1]

    def ask(http: httpx.Client, who: int) -> str:
        response = http.post("/v1/endpoints/fraud/invocations", json=_records(rows), headers={"x-user-id": f"u{who}"})
        assert response.status_code == 200, response.text
        return response.headers[VARIANT_HEADER]

    with running.client() as http:
        assert [ask(http, who) for who in range(5)] == ["baseline"] * 5
        # the breaker reached the store by itself (no flush called), and only three calls reached the candidate
        wait_for(
            lambda: pair(store.read_telemetry(state.id)).candidate.breaker_trips == 1,
            "the breaker's report",
            timeout=10.0,
        )
        total = pair(store.read_telemetry(state.id))
        assert (total.candidate.requests, total.candidate.errors) == (3, 3)
        assert "failed 3 times in a row on gateway gw-9" in total.candidate.breaker_reason
        assert "RuntimeError: candidate crashed" in total.candidate.breaker_reason

        # a new routing table (another endpoint appears) does not bring the candidate back
        store.put_route(Route(endpoint="churn", baseline=state.baseline))
        version = store.routes_version()
        wait_for(
            lambda: http.get("/v2/health/ready").json()["routes_version"] >= version, "the new routes", timeout=10.0
        )
        assert ask(http, 99) == "baseline"
        running.flush()
        assert pair(store.read_telemetry(state.id)).candidate.requests == 3

    controller.tick()
    rolled, _ = store.get(state.id)
    assert rolled.phase is Phase.ROLLED_BACK
    assert rolled.reason.startswith("rolled back: circuit-breaker failed: the candidate failed 3 times in a row")
    assert store.routes()["fraud"].candidate is None


def test_a_trip_while_a_new_routing_table_came_in_takes_the_candidate_out_of_the_new_one(
    serve: Any, store: Any, versions: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    """The candidate's first call fails, but only after the gateway applied a new routing table (the
    same rollout at another weight) while it ran: the breaker must take the candidate out of the
    table now served, not only out of the one the failing request began with."""
    calls = itertools.count()
    running_first, fail_now = threading.Event(), threading.Event()

    def fails_first(inputs: dict[str, list[Any]]) -> list[Any]:
        if next(calls) == 0:
            running_first.set()
            fail_now.wait(30)
            raise RuntimeError("the candidate crashed")
        return [[0.5, 0.5] for _ in inputs["amount"]]

    route = _route(versions, "r-race", CircuitBreaker(consecutive_failures=1, deadline=30.0))
    store.put_route(route)
    gateway = Gateway(routes=store, backend=with_candidate(fails_first), telemetry=store, source="gw-1")
    running = serve.start(gateway)
    rows = mlflow_registry.rows[:1]

    ask = functools.partial(_variant_for, running, rows)

    with ThreadPoolExecutor(1) as client:
        first = client.submit(ask, 0)
        try:
            assert running_first.wait(10)
            store.put_route(route.model_copy(update={"weight": 99.0}))
            version = store.routes_version()
            with running.client() as http:
                wait_for(
                    lambda: http.get("/v2/health/ready").json()["routes_version"] >= version,
                    "the new routes",
                    timeout=10.0,
                )
        finally:
            fail_now.set()
        assert first.result(10) == "baseline"
    assert gateway.serving["fraud"].route.weight == 99.0 and gateway.serving["fraud"].candidate is None
    assert [ask(who) for who in range(1, 11)] == ["baseline"] * 10
    assert next(calls) == 1  # the candidate was not called again
