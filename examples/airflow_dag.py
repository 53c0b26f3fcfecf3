"""An Airflow DAG that rolls out the fraud model's @challenger after training and waits, deferred,
for the outcome: the task succeeds on promotion and fails on a rollback or an abort.

    pip install 'modelcanary[airflow]'   # on the workers and on the triggerer
    airflow variables set modelcanary_store postgresql://modelcanary@db/modelcanary
    airflow variables set mlflow_uri http://mlflow:5000

The rollout itself is driven by a modelcanary controller running beside the store; this DAG only
starts it and waits, holding no worker slot while it does.
"""

from __future__ import annotations

from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

from modelcanary.integrations.airflow import RolloutOperator

with DAG(dag_id="fraud_release", start_date=datetime(2026, 1, 1), schedule=None, catchup=False) as dag:
    # train, evaluate offline and register the challenger in the tasks before this one
    roll_out = RolloutOperator(
        task_id="roll_out",
        spec="{{ dag_run.conf.get('spec', '/opt/airflow/specs/fraud-rollout.yaml') }}",
        store="{{ var.value.modelcanary_store }}",
        registry="{{ var.value.mlflow_uri }}",
        poll_interval=60,
        wait_timeout=timedelta(hours=8),  # the steps' maxDurations added up, and some
    )
