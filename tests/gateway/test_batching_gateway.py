"""Dynamic batching inside a real gateway on loopback: concurrent HTTP clients, a 50/50 rollout,
each variant batching on its own, every client getting its own rows' answers from its variant."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from modelcanary.adapters.backends.batching import BatchingBackend, BatchingModel, BatchSettings
from modelcanary.adapters.testing import FakeBackend, FunctionModel
from modelcanary.domain.state import ModelVersion, Route
from modelcanary.domain.telemetry import Variant
from modelcanary.domain.traffic import Batching, CircuitBreaker, StickyKey
from modelcanary.engine.analysis import pair
from modelcanary.gateway.app import Gateway, StaticRoutes
from modelcanary.gateway.serving import batched

BURN_S = 0.002  # the CPU time each call of the third test's models costs


async def forty_users(url: str, rows: list[dict[str, Any]]) -> list[httpx.Response]:
    """Forty users' requests at once, each of one row."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post(
                        "/v1/endpoints/fraud/invocations",
                        json={"dataframe_records": [rows[user % len(rows)]]},
                        headers={"x-user-id": f"user-{user}"},
                    )
                    for user in range(40)
                )
            )
        )


def test_concurrent_clients_are_batched_per_variant(serve: Any, pyfunc_backend: Any, mlflow_registry: Any) -> None:
    baseline, candidate = ModelVersion(name="fraud", version="1"), ModelVersion(name="fraud", version="2")
    route = Route(
        endpoint="fraud",
        baseline=baseline,
        candidate=candidate,
        weight=50.0,
        rollout_id="r-batch",
        sticky=StickyKey(header="x-user-id"),
    )
    # a generous wait, so that concurrent requests meet even on a busy machine
    backend = BatchingBackend(pyfunc_backend, BatchSettings(max_batch_size=16, max_wait_us=50_000))
    gateway = Gateway(routes=StaticRoutes({"fraud": route}), backend=backend, telemetry=None, source="t")
    running = serve.start(gateway)
    rows = mlflow_registry.rows
    direct = {"baseline": pyfunc_backend.load(baseline), "candidate": pyfunc_backend.load(candidate)}

    responses = asyncio.run(forty_users(running.url, rows))
    assert [response.status_code for response in responses] == [200] * 40
    for user, response in enumerate(responses):
        variant = response.json()["variant"]
        row = rows[user % len(rows)]
        assert response.json()["predictions"] == direct[variant].predict({k: [v] for k, v in row.items()})
    assert {response.json()["variant"] for response in responses} == {"baseline", "candidate"}
    models = [gateway.serving["fraud"].baseline, gateway.serving["fraud"].candidate]
    assert all(isinstance(model, BatchingModel) for model in models)
    served = sum(model.batched_requests for model in models if isinstance(model, BatchingModel))
    calls = sum(model.batches for model in models if isinstance(model, BatchingModel))
    assert served == 40 and calls < 40


def test_a_rollouts_spec_batches_only_the_variants_it_names(
    serve: Any, pyfunc_backend: Any, mlflow_registry: Any
) -> None:
    """``traffic.batching`` comes with the route: here the candidate is batched and the baseline
    is not; a routing change with the same settings keeps the candidate's queue."""
    baseline, candidate = ModelVersion(name="fraud", version="1"), ModelVersion(name="fraud", version="2")
    settings = Batching(max_batch_size=16, max_wait_us=50_000, variants=["candidate"])
    route = Route(
        endpoint="fraud",
        baseline=baseline,
        candidate=candidate,
        weight=50.0,
        rollout_id="r-spec-batch",
        sticky=StickyKey(header="x-user-id"),
        batching=settings,
    )
    routes = StaticRoutes({"fraud": route})
    gateway = Gateway(routes=routes, backend=pyfunc_backend, telemetry=None, source="t")
    running = serve.start(gateway)
    rows = mlflow_registry.rows

    responses = asyncio.run(forty_users(running.url, rows))
    assert [response.status_code for response in responses] == [200] * 40
    served = gateway.serving["fraud"]
    assert not isinstance(served.baseline, BatchingModel)
    assert isinstance(served.candidate, BatchingModel) and served.candidate.settings == BatchSettings(
        max_batch_size=16, max_wait_us=50_000
    )
    to_candidate = sum(response.json()["variant"] == "candidate" for response in responses)
    assert served.candidate.batched_requests == to_candidate > 1 and served.candidate.batches < to_candidate
    queue = served.candidate
    assert batched(settings, Variant.CANDIDATE, queue.model, queue) is queue  # same model and settings: kept
    other = Batching(max_batch_size=8, max_wait_us=50_000, variants=["candidate"])
    assert batched(other, Variant.CANDIDATE, queue.model, queue) is not queue


@pytest.mark.parametrize("fails", [False, True], ids=["answers", "fails"])
def test_a_batch_runs_on_the_loop_unless_a_deadline_must_be_able_to_cut_it(serve: Any, store: Any, fails: bool) -> None:
    """The baseline's batches run on the event loop's thread, as the baseline does unbatched; the
    batches of a candidate with a deadline run on the queue's worker, where a call that hangs
    cannot stop the loop and the deadline can give up on it. Either way each request is charged
    its share of its batch's CPU time, for the cost guardrail, whether the calls answered or
    failed (then every request is retried alone, and the client gets a 5xx)."""
    threads: dict[str, set[str]] = {"1": set(), "2": set()}

    def model(version: str) -> FunctionModel:
        def predict(columns: dict[str, list[Any]]) -> list[float]:
            threads[version].add(threading.current_thread().name)
            started = time.thread_time()
            while time.thread_time() - started < BURN_S:  # CPU time the call costs its thread
                pass
            if fails:
                raise RuntimeError(f"model {version} broke")
            return [0.5] * len(columns["x"])

        return FunctionModel(predict)

    route = Route(
        endpoint="fraud",
        baseline=ModelVersion(name="fraud", version="1"),
        candidate=ModelVersion(name="fraud", version="2"),
        weight=50.0,
        rollout_id="r-loop",
        sticky=StickyKey(header="x-user-id"),
        breaker=CircuitBreaker(deadline=5.0, consecutive_failures=100),  # failing, it stays in
        batching=Batching(max_batch_size=16, max_wait_us=50_000),
    )
    backend = FakeBackend({"fraud/1": model("1"), "fraud/2": model("2")})
    store.put_route(route)
    gateway = Gateway(routes=store, backend=backend, telemetry=store, source="t")
    running = serve.start(gateway)

    responses = asyncio.run(forty_users(running.url, [{"x": 1.0}]))
    if fails:  # the baseline answers none, its own requests nor the candidate's fallbacks
        assert {response.status_code for response in responses} == {500}
    else:
        assert [response.status_code for response in responses] == [200] * 40
        assert {response.json()["variant"] for response in responses} == {"baseline", "candidate"}
    served = gateway.serving["fraud"]
    assert isinstance(served.baseline, BatchingModel) and isinstance(served.candidate, BatchingModel)
    baseline_calls = served.baseline.batches + served.baseline.retried_alone  # a failed batch's requests retried alone
    assert served.baseline.on_loop == baseline_calls > 0 and served.candidate.on_loop == 0
    assert threads["2"] == {"modelcanary-batch_0"}  # the candidate's queue's worker
    assert len(threads["1"]) == 1 and not threads["1"] & threads["2"]  # the loop's thread, whatever its name
    running.flush()
    total = pair(store.read_telemetry("r-loop"))
    for counts, queue in ((total.baseline, served.baseline), (total.candidate, served.candidate)):
        assert counts.cpu_requests == counts.requests == queue.batched_requests
        # every call's CPU time charged once, shared among its requests (a call costs a little
        # more than its busy loop: the loop's last turn, the list it returns)
        calls = queue.batches + queue.retried_alone
        assert BURN_S * 1e3 * calls <= counts.cpu_ms < (BURN_S * 1e3 + 5) * calls
        assert counts.errors == (counts.requests if fails else 0)
