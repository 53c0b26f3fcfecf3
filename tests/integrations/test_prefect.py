"""The Prefect task, run by the example flow on Prefect's own test harness (an ephemeral API with a
temp database), against a real store and registry, while a controller drives the rollout.

Needs ``modelcanary[prefect]``; skips without it unless ``MODELCANARY_REQUIRE_PREFECT`` is set.
Prefect 3 pins FastAPI below the project's, so CI runs this in its own venv: see docs/ecosystem.md."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.integrations.rollouts import RolloutFailed

if importlib.util.find_spec("prefect") is None:
    if os.environ.get("MODELCANARY_REQUIRE_PREFECT"):
        raise ImportError("MODELCANARY_REQUIRE_PREFECT is set but prefect is not installed")
    pytest.skip("prefect not installed (pip install 'modelcanary[prefect]')", allow_module_level=True)

# Prefect keeps its settings and caches under PREFECT_HOME (default ~/.prefect): keep them in a temp dir
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="modelcanary-prefect-"))

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prefect_flow.py"


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):  # a loaded 2-core machine is slow to start it
        yield


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prefect_flow_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_flow_finishes_with_the_promotion(harness: None, example: ModuleType, setup: Any, drive: Any) -> None:
    outcome = example.release(str(setup.spec), setup.store, setup.registry, poll_interval_s=0.1)

    assert outcome["phase"] == "promoted" and outcome["candidate"] == "models:/fraud/2"
    [state] = SqlStore(setup.store).list_rollouts()
    assert state.id == outcome["rollout_id"]


def test_the_flow_fails_on_a_rollback(harness: None, example: ModuleType, setup: Any, drive: Any) -> None:
    drive.candidate_error_rate = 0.3

    state = example.release(str(setup.spec), setup.store, setup.registry, poll_interval_s=0.1, return_state=True)

    assert state.is_failed()
    with pytest.raises(RolloutFailed, match="rolled_back: rolled back: error-rate failed"):
        state.result()
