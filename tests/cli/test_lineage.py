"""Lineage: a rollout started from a real MLflow registry records both models' run ids, sources, git
commit and data version tags, and the audit log exported by the CLI alone says what was served to
whom (weights, sticky key), when, and why, and what it came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from modelcanary.cli.main import cli


def test_audit_export_alone_answers_what_was_live_for_whom_when_and_why(gated_registry: Any, tmp_path: Path) -> None:
    from modelcanary.adapters.registry.mlflow import MlflowRegistry
    from modelcanary.cli.workspace import Workspace
    from modelcanary.controller.loop import Controller

    spec = tmp_path / "rollout.yaml"
    spec.write_text(
        """\
apiVersion: modelcanary/v1
kind: Rollout
metadata: {name: scorer-v2}
spec:
  endpoint: scorer
  baseline: models:/scorer@champion
  candidate: models:/scorer@good
  traffic:
    stickyKey: {header: x-user-id}
    steps: [{weight: 10}, {weight: 50}]
  analysis: {metrics: [{kind: error_rate}]}
  gates: {start: [data-freshness]}
"""
    )

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, [*args, "--workdir", str(tmp_path), "--registry", gated_registry.uri])

    started = run("rollout", "start", str(spec))
    assert started.exit_code == 0, started.output
    rollout_id = started.stdout.strip()
    space = Workspace.at(tmp_path, registry=gated_registry.uri)
    Controller(store=space.store(), registry=MlflowRegistry(gated_registry.uri)).tick()  # into step 1

    exported = run("audit", "export", "--rollout", rollout_id)
    assert exported.exit_code == 0, exported.output
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    created, entered = events[0], events[1]

    client = MlflowRegistry(gated_registry.uri).client
    assert created["action"] == "rollout.create" and created["actor"].startswith("cli:")
    for role, version in (("baseline", "1"), ("candidate", "2")):
        registered = client.get_model_version("scorer", version)
        lineage = created["detail"]["lineage"][role]
        assert created["detail"][role] == f"models:/scorer/{version}"
        assert (lineage["run_id"], lineage["source"]) == (registered.run_id, registered.source)
        assert lineage["git_commit"] == gated_registry.git_commit
        assert lineage["data_tags"]["data.version"] == f"d{version}"
        assert [dataset["name"] for dataset in lineage["datasets"]] == [f"train-v{version}"]
    assert created["detail"]["traffic"]["stickyKey"]["header"] == "x-user-id"  # for whom: who sticks where
    assert created["detail"]["policies"] == ["data-freshness"]
    # when, to whom and why: the step's weight, at its time, with the decision's reason
    assert (entered["action"], entered["detail"]["weight"]) == ("rollout.canary", 10.0)
    assert entered["detail"]["reason"] == "step 1 of 2: candidate at 10%"
    assert entered["at"] >= created["at"]
