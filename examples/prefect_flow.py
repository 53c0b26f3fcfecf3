"""A Prefect 3 flow that rolls out the fraud model's @challenger and finishes with the outcome.

    pip install 'modelcanary[prefect]'
    python examples/prefect_flow.py examples/fraud-rollout.yaml \
        --store postgresql://modelcanary@db/modelcanary --registry http://mlflow:5000

The flow fails (and with it any deployment or automation watching it) when the rollout is rolled
back or aborted; a controller (`modelcanary serve` or `modelcanary controller`) must be running on the
same store to drive it.
"""

from __future__ import annotations

import argparse
from typing import Any

from prefect import flow

from modelcanary.integrations.prefect import rollout_task


@flow(name="fraud-release")
def release(spec: str, store: str, registry: str, poll_interval_s: float = 10.0) -> dict[str, Any]:
    # retrain, evaluate offline and register the challenger here, as tasks before the rollout
    return rollout_task()(spec=spec, store=store, registry=registry, poll_interval_s=poll_interval_s)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("--store", required=True)
    parser.add_argument("--registry", required=True)
    args = parser.parse_args()
    print(release(args.spec, args.store, args.registry))
