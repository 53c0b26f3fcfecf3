"""Shared real parts for the orchestrator tests: an MLflow registry in a temp dir, a SQLite store,
a spec, and a controller in a background thread that drives whatever rollout appears to its end on
the telemetry a scenario writes (a good candidate is promoted, a bad one rolled back)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.controller.loop import Controller
from modelcanary.domain.telemetry import Variant, VariantTelemetry

SPEC = """\
apiVersion: modelcanary/v1
kind: Rollout
metadata: {name: fraud-orchestrated}
spec:
  endpoint: fraud
  baseline: models:/fraud@champion
  candidate: models:/fraud@challenger
  traffic:
    steps: [{weight: 50, minRequests: 100, minDuration: 0}]
  analysis:
    metrics: [{kind: error_rate, margin: 0.02}]
"""
WAIT_S = 120.0


@dataclass
class Setup:
    store: str
    registry: str
    spec: Path


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    registry = MlflowRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    registry.client.create_registered_model("fraud")
    for _ in range(2):  # never loaded: the controller does not serve, it only decides
        registry.client.create_model_version("fraud", source=(tmp_path / "artifacts").as_uri())
    registry.set_alias("fraud", "champion", "1")
    registry.set_alias("fraud", "challenger", "2")
    spec = tmp_path / "rollout.yaml"
    spec.write_text(SPEC)
    return Setup(store=f"sqlite:///{tmp_path / 'modelcanary.db'}", registry=registry.tracking_uri, spec=spec)


@dataclass
class Driver:
    """Waits for a rollout to appear, then writes telemetry (the baseline fails 1% of requests, the
    candidate ``candidate_error_rate``) and ticks a
    controller until the rollout ends."""

    setup: Setup
    candidate_error_rate: float = 0.01
    stop: threading.Event = field(default_factory=threading.Event)
    failure: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        store = SqlStore(self.setup.store)
        try:
            controller = Controller(store=store, registry=MlflowRegistry(self.setup.registry))
            deadline = time.monotonic() + WAIT_S
            sent = 0
            while not self.stop.is_set() and time.monotonic() < deadline:
                active = store.list_rollouts(active=True)
                if active:
                    sent += 2000
                    errors = round(sent * self.candidate_error_rate)
                    store.write_telemetry(
                        "test",
                        [
                            # the baseline fails 1 in 100: with none at all, the sequential judge's
                            # margin (relative to the baseline's rate) finds no evidence against 30%
                            (active[0].id, Variant.BASELINE, VariantTelemetry(requests=sent, errors=sent // 100)),
                            (active[0].id, Variant.CANDIDATE, VariantTelemetry(requests=sent, errors=errors)),
                        ],
                    )
                    controller.tick()
                time.sleep(0.05)
        except BaseException as exc:
            self.failure.append(exc)
        finally:
            store.close()


@pytest.fixture
def drive(setup: Setup) -> Iterator[Driver]:
    driver = Driver(setup)
    thread = threading.Thread(target=driver.run, daemon=True)
    thread.start()
    yield driver
    driver.stop.set()
    thread.join(timeout=30)
    assert not driver.failure, driver.failure
