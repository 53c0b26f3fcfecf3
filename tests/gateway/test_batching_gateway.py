"""Dynamic batching inside a real gateway on loopback: concurrent HTTP clients, a 50/50 rollout,
each variant batching on its own, every client getting its own rows' answers from its variant."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from modelcanary.adapters.backends.batching import BatchingBackend, BatchingModel, BatchSettings
from modelcanary.domain.spec import StickyKey
from modelcanary.domain.state import ModelVersion, Route
from modelcanary.gateway.app import Gateway, StaticRoutes


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

    async def clients() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
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

    responses = asyncio.run(clients())
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
