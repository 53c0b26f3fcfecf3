"""The local-only commands against a real SQLite store and a real MLflow registry: tampering with
the audit log, and the gateway's options. (Every rollout command, local and remote: test_rollouts.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from modelcanary.cli.main import cli
from modelcanary.cli.workspace import Workspace

SPEC = """\
apiVersion: modelcanary/v1
kind: Rollout
metadata: {name: fraud-v2}
spec:
  endpoint: fraud
  baseline: models:/fraud/1
  candidate: models:/fraud/2
  traffic:
    steps:
      - {weight: 5, minRequests: 10, minDuration: 1s}
  analysis:
    metrics: [{kind: error_rate}]
"""


@pytest.fixture
def run(tmp_path: Path, mlflow_registry: Any) -> Any:
    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, [*args, "--workdir", str(tmp_path), "--registry", mlflow_registry.uri])

    return invoke


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "rollout.yaml"
    path.write_text(SPEC)
    return path


def _rollouts(tmp_path: Path) -> list[Any]:
    return Workspace.at(tmp_path).store().list_rollouts()


def test_audit_verify_and_export(run: Any, spec_file: Path, tmp_path: Path) -> None:
    rollout_id = run("rollout", "start", str(spec_file)).stdout.strip().splitlines()[-1]
    assert run("rollout", "abort", rollout_id).exit_code == 0

    verified = run("audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert "audit chain verified: 2 events" in verified.stdout

    out = tmp_path / "audit.jsonl"
    exported = run("audit", "export", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["action"], e["rollout_id"]) for e in events] == [
        ("rollout.create", rollout_id),
        ("rollout.aborted", rollout_id),
    ]
    assert events[1]["prev_hash"] == events[0]["hash"]
    assert f"head {events[-1]['hash']}" in exported.stderr
    assert run("audit", "export").stdout == out.read_text()  # to standard output, the same lines

    from modelcanary.adapters.store.schema import audit

    store = Workspace.at(tmp_path).store()
    with store.engine.begin() as conn:
        conn.execute(audit.update().where(audit.c.id == events[0]["id"]).values(actor="cli:mallory"))
    broken = run("audit", "verify")
    assert broken.exit_code == 1
    assert f"BROKEN at event id {events[0]['id']} (position 0" in broken.stdout
    assert "hash does not match" in broken.stdout


def test_gateway_refuses_a_bad_endpoint_before_serving(run: Any) -> None:
    malformed = run("gateway", "--endpoint", "fraud")
    assert malformed.exit_code == 2 and "expected NAME=MODEL_URI, got 'fraud'" in malformed.output
    unknown = run("gateway", "--endpoint", "fraud=models:/nope@champion")
    assert unknown.exit_code == 2 and "nope" in unknown.output
