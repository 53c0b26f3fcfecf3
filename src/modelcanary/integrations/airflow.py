"""Airflow (``pip install modelcanary[airflow]``, Airflow 2.8 or later): a deferrable operator that
starts a rollout, then hands the wait to the triggerer, so no worker slot is held for the hours a
rollout may take. The trigger polls the rollout's phase asynchronously; when it ends the task
resumes, returns the outcome (pushed to XCom) on promotion and fails on a rollback or an abort.

    from modelcanary.integrations.airflow import RolloutOperator

    RolloutOperator(
        task_id="roll_out",
        spec="/opt/airflow/specs/fraud-rollout.yaml",   # a path, or the YAML itself (templated)
        store="{{ var.value.modelcanary_store }}",
        registry="{{ var.value.mlflow_uri }}",
        poll_interval=60,
    )

The triggerer imports ``modelcanary.integrations.airflow.RolloutTrigger`` by name, so modelcanary
must be installed where the triggerer runs, and the store must be reachable from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from modelcanary.integrations.rollouts import Outcome, Reader, RolloutFailed, start

if TYPE_CHECKING:  # what this module uses of Airflow's classes, so it type-checks without Airflow

    class _Operator:
        template_fields: tuple[str, ...]

        def __init__(self, **kwargs: Any) -> None: ...
        def defer(
            self, *, trigger: Any, method_name: str, kwargs: dict[str, Any] | None = None, timeout: Any = None
        ) -> NoReturn: ...

    class _Trigger:
        def __init__(self, **kwargs: Any) -> None: ...

    class TriggerEvent:
        payload: Any

        def __init__(self, payload: Any) -> None: ...

else:
    try:  # Airflow 3 moved the operator API to the task SDK
        from airflow.sdk import BaseOperator as _Operator
    except ImportError:
        from airflow.models import BaseOperator as _Operator
    from airflow.triggers.base import BaseTrigger as _Trigger
    from airflow.triggers.base import TriggerEvent

TRIGGER = "modelcanary.integrations.airflow.RolloutTrigger"


class RolloutTrigger(_Trigger):
    """Fires once the rollout has ended, with its outcome as the event's payload (or an error)."""

    def __init__(self, *, rollout_id: str, store: str, poll_interval: float = 30.0) -> None:
        super().__init__()
        self.rollout_id, self.store, self.poll_interval = rollout_id, store, poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return TRIGGER, {"rollout_id": self.rollout_id, "store": self.store, "poll_interval": self.poll_interval}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # the store's client is synchronous: each read runs in a thread, so the triggerer's loop,
        # shared by every deferred task, never blocks on it
        reader = await asyncio.to_thread(Reader, self.store)
        try:
            while True:
                try:
                    outcome = await asyncio.to_thread(reader.outcome, self.rollout_id)
                except Exception as exc:  # a lost store: end with an error rather than poll a dead one forever
                    yield TriggerEvent({"rollout_id": self.rollout_id, "error": f"{type(exc).__name__}: {exc}"})
                    return
                if outcome.ended:
                    yield TriggerEvent(outcome.to_json())
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            await asyncio.to_thread(reader.close)


class RolloutOperator(_Operator):
    """Start a rollout from ``spec`` (a path or the YAML text) and defer until it ends."""

    template_fields = ("spec", "store", "registry")

    def __init__(
        self,
        *,
        spec: str,
        store: str,
        registry: str,
        poll_interval: float = 30.0,
        wait_timeout: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.spec, self.store, self.registry = spec, store, registry
        self.poll_interval, self.wait_timeout = poll_interval, wait_timeout

    def execute(self, context: Any) -> NoReturn:
        ti = context.get("ti") if isinstance(context, dict) or hasattr(context, "get") else None
        who = f"{ti.dag_id}.{ti.task_id}" if ti is not None else getattr(self, "task_id", "task")
        started = start(self.spec, store=self.store, registry=self.registry, actor=f"airflow:{who}")
        self.defer(
            trigger=RolloutTrigger(rollout_id=started.rollout_id, store=self.store, poll_interval=self.poll_interval),
            method_name="execute_complete",
            timeout=self.wait_timeout,
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """The outcome on promotion; ``RolloutFailed`` (failing the task) otherwise."""
        if "error" in event:
            raise RolloutFailed(f"rollout {event['rollout_id']}: its phase could not be read: {event['error']}")
        return Outcome(**event).check().to_json()
