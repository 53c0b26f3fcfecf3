"""What the gateway tests share beyond fixtures."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelcanary.adapters.testing import FakeBackend, FakeRegistry, FunctionModel
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import start_rollout
from modelcanary.gateway.app import Gateway

if TYPE_CHECKING:
    from modelcanary.adapters.store.sql import SqlStore
    from modelcanary.domain.state import RolloutState


def wait_for(condition: Callable[[], bool], what: str, *, timeout: float, poll_s: float = 0.02) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(poll_s)


def predict_x(client: Any, users: range) -> list[str]:
    """One ``{"x": 1.0}`` row per user on endpoint ``fraud`` (sticky key ``x-user-id``); the
    prediction ids."""
    ids = []
    for user in users:
        response = client.post(
            "/v1/endpoints/fraud/invocations",
            json={"dataframe_records": [{"x": 1.0}]},
            headers={"x-user-id": str(user)},
        )
        assert response.status_code == 200, response.text
        ids += response.json()["prediction_ids"]
    return ids


def in_canary(store: SqlStore, spec: str) -> tuple[RolloutState, Controller]:
    """A rollout of fraud@champion (v1) to fraud@challenger (v2) started and ticked into its first
    step, and the controller that ticked it."""
    registry = FakeRegistry({"fraud": ["1", "2"]}, {("fraud", "champion"): "1", ("fraud", "challenger"): "2"})
    state = start_rollout(store, registry, spec, source="test", actor="test")
    controller = Controller(store=store, registry=registry, holder="controller")
    assert len(controller.tick()) == 1
    return state, controller


def x_gateway(store: SqlStore, source: str) -> Gateway:
    """A gateway following ``store``, both versions of fraud a model of one column ``x``."""
    model = FunctionModel(lambda columns: [0.5] * len(columns["x"]))
    return Gateway(
        routes=store, backend=FakeBackend({"fraud/1": model, "fraud/2": model}), telemetry=store, source=source
    )
