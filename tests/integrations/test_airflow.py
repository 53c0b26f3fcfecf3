"""The deferrable Airflow operator against a real store and registry: ``execute`` starts the rollout
and defers; the trigger it deferred to is serialised and rebuilt from its classpath, as the
triggerer does, and run to completion on an event loop while a controller drives the rollout; the
task then resumes in ``execute_complete`` with the trigger's event.

Needs ``modelcanary[airflow]``; skips without it unless ``MODELCANARY_REQUIRE_AIRFLOW`` is set.
Airflow cannot share a venv with the project's pins, so CI runs this in its own: docs/ecosystem.md."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.integrations.rollouts import RolloutFailed

if importlib.util.find_spec("airflow") is None:
    if os.environ.get("MODELCANARY_REQUIRE_AIRFLOW"):
        raise ImportError("MODELCANARY_REQUIRE_AIRFLOW is set but apache-airflow is not installed")
    pytest.skip("apache-airflow not installed (pip install 'modelcanary[airflow]')", allow_module_level=True)

# Airflow writes logs and a config under AIRFLOW_HOME (default ~/airflow) when imported: keep them in a temp dir
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="modelcanary-airflow-"))

from airflow.exceptions import TaskDeferred

from modelcanary.integrations.airflow import RolloutOperator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "airflow_dag.py"


def run_deferred(operator: RolloutOperator) -> Any:
    """What Airflow does with a deferrable task: execute until it defers, run the trigger in the
    triggerer (rebuilt from its serialised form), resume the task with the event."""
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context={})
    classpath, kwargs = deferred.value.trigger.serialize()
    module, _, name = classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**kwargs)

    async def first_event() -> Any:
        async for event in trigger.run():
            return event
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(first_event())
    assert deferred.value.method_name == "execute_complete"
    return getattr(operator, deferred.value.method_name)({}, event.payload)


def test_the_operator_defers_and_returns_the_promotion(setup: Any, drive: Any) -> None:
    operator = RolloutOperator(
        task_id="roll_out", spec=str(setup.spec), store=setup.store, registry=setup.registry, poll_interval=0.1
    )

    outcome = run_deferred(operator)

    assert outcome["phase"] == "promoted" and outcome["candidate"] == "models:/fraud/2"
    [state] = SqlStore(setup.store).list_rollouts()
    assert state.id == outcome["rollout_id"]


def test_the_operator_fails_the_task_on_a_rollback(setup: Any, drive: Any) -> None:
    drive.candidate_error_rate = 0.3
    operator = RolloutOperator(
        task_id="roll_out", spec=setup.spec.read_text(), store=setup.store, registry=setup.registry, poll_interval=0.1
    )

    with pytest.raises(RolloutFailed, match="rolled_back: rolled back: error-rate failed"):
        run_deferred(operator)


def test_the_example_dag_holds_the_operator() -> None:
    spec = importlib.util.spec_from_file_location("airflow_dag_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    [task] = module.dag.tasks
    assert isinstance(task, RolloutOperator) and task.template_fields == ("spec", "store", "registry")
