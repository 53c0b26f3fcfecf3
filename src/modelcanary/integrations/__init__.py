"""Orchestrator integrations: start a rollout from a pipeline and finish with its outcome.

Each lives in its own module and imports its orchestrator only there, so each is an optional extra:
``modelcanary[prefect]`` (``integrations.prefect``), ``modelcanary[airflow]`` (``integrations.airflow``).
``integrations.rollouts`` holds what they share and imports neither.
"""
