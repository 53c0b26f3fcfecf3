"""Prefect (``pip install modelcanary[prefect]``, Prefect 3): a task that starts a rollout and
finishes with its outcome, failing the task when the rollout rolls back or is aborted.

The task polls the store; it holds its worker while it waits, as any Prefect task does, so give a
long rollout its own work pool or run the flow where a sleeping process costs nothing.

    from prefect import flow
    from modelcanary.integrations.prefect import rollout_task

    @flow
    def release(store: str, registry: str) -> dict:
        return rollout_task()(spec="rollout.yaml", store=store, registry=registry)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcanary.integrations.rollouts import start, wait

if TYPE_CHECKING:
    from prefect import Task


def run_rollout(
    spec: str | Path,
    *,
    store: str,
    registry: str,
    poll_interval_s: float = 10.0,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Start the rollout, wait for its end, return its outcome as JSON; raise ``RolloutFailed`` if it
    was rolled back or aborted, ``RolloutTimeout`` if it still runs after ``timeout_s``."""
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    actor = f"prefect:{os.environ.get('PREFECT__FLOW_RUN_ID') or os.environ.get('USER', 'unknown')}"
    started = start(spec, store=store, registry=registry, actor=actor)
    logger.info("started rollout %s: %s -> %s", started.rollout_id, started.baseline, started.candidate)
    outcome = wait(started.rollout_id, store=store, poll_interval_s=poll_interval_s, timeout_s=timeout_s)
    logger.info("rollout %s %s: %s", outcome.rollout_id, outcome.phase, outcome.reason)
    return outcome.check().to_json()


def rollout_task(**options: Any) -> Task[..., dict[str, Any]]:
    """``run_rollout`` as a Prefect task; ``options`` go to ``prefect.task`` (name, retries, tags...).
    No retries by default: a rolled-back candidate must not be rolled out again by a retry."""
    from prefect import task

    return task(run_rollout, **{"name": "modelcanary-rollout", "retries": 0, **options})
