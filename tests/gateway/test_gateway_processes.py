"""Scale-out, for real: two ``modelcanary gateway`` processes follow one store (SQLite and
PostgreSQL) with a real MLflow registry. Both serve the rollout's route and a static endpoint,
their telemetry adds up in the store, a label sent to the other replica is counted by the one that
made the prediction, and a routing change reaches both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import run_command, start_rollout
from modelcanary.engine.analysis import pair
from modelcanary.engine.decide import Command

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gateways(store_url: str, mlflow_registry: Any, tmp_path: Path) -> Iterator[list[str]]:
    ports = [_free_port(), _free_port()]
    command = [sys.executable, "-m", "modelcanary", "gateway", "--store", store_url, "--registry", mlflow_registry.uri]
    processes = [
        subprocess.Popen(
            [*command, "--port", str(port), "--endpoint", "churn=models:/fraud/1", "--server", server],
            stderr=(tmp_path / f"gateway-{port}.log").open("w"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for port, server in zip(ports, ("uvicorn", "granian"), strict=True)  # either server, one store
    ]
    try:
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def _ready(base: str, *, at_least: int = 0, deadline_s: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{base}/v2/health/ready", timeout=2)
            if response.status_code == 200 and response.json()["routes_version"] >= at_least:
                return dict(response.json())
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{base} not ready at routes version {at_least} after {deadline_s} s")


def _predict(base: str, user: int, rows: list[dict[str, float]], endpoint: str = "fraud") -> str:
    response = httpx.post(
        f"{base}/v1/endpoints/{endpoint}/invocations",
        json={"dataframe_records": [rows[user % len(rows)]]},
        headers={"x-user-id": f"user-{user}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.headers["x-modelcanary-variant"]


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
def test_two_gateway_processes_follow_one_store_and_their_telemetry_adds_up(
    store_url: str, mlflow_registry: Any, gateways: list[str], long_rollout_spec: str
) -> None:
    store = SqlStore(store_url)
    registry = MlflowRegistry(mlflow_registry.uri)
    state = start_rollout(store, registry, long_rollout_spec, source="test", actor="test")
    Controller(store=store, registry=registry, holder="test").tick()  # canary at 50%
    version = store.routes_version()
    first, second = gateways
    for base in gateways:
        assert _ready(base, at_least=version)["endpoints"] == ["churn", "fraud"]

    rows = mlflow_registry.rows
    served = [_predict(first, user, rows) for user in range(30)] + [
        _predict(second, user, rows) for user in range(30, 50)
    ]
    assert set(served) == {"baseline", "candidate"}
    # the same user gets the same variant from either gateway: routing is a function of the key
    assert [_predict(second, user, rows) for user in range(10)] == served[:10]
    assert _predict(first, 7, rows, endpoint="churn") == "baseline"  # the static endpoint, no rollout

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        total = pair(store.read_telemetry(state.id))
        if total.baseline.requests + total.candidate.requests == 60:
            break
        time.sleep(0.1)
    assert (total.baseline.requests + total.candidate.requests) == 60  # 30 + 20 + 10, from both sources
    assert total.candidate.requests == served.count("candidate") + served[:10].count("candidate")
    assert len(store.read_telemetry(state.id)) >= 3  # rows per (source, variant): both gateways wrote

    # behind a load balancer a label may reach either replica: the one that made the prediction counts it
    made = httpx.post(f"{first}/v1/endpoints/fraud/invocations", json={"dataframe_records": rows[:3]}, timeout=10)
    labels = [{"prediction_id": each, "label": 1} for each in made.json()["prediction_ids"]]
    assert httpx.post(f"{second}/v1/feedback", json={"labels": labels}, timeout=10).json() == {
        "accepted": 3,
        "relayed": 3,
    }
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        total = pair(store.read_telemetry(state.id))
        if total.baseline.labels + total.candidate.labels >= 3:
            break
        time.sleep(0.1)
    assert total.baseline.labels + total.candidate.labels == 3

    run_command(store, state.id, Command.ABORT, actor="test")
    aborted = store.routes_version()
    changed = time.monotonic()
    for base in gateways:
        _ready(base, at_least=aborted, deadline_s=10)
    converged_s = time.monotonic() - changed
    assert {_predict(base, user, rows) for base in gateways for user in range(30)} == {"baseline"}
    print(f"both gateways applied the routing change in {converged_s:.2f} s")  # shown with -s
    store.close()
