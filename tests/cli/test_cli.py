"""The rollout commands against a real SQLite store and a real MLflow registry."""

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


def test_start_prints_the_id_and_saves_a_pending_rollout(run: Any, spec_file: Path, tmp_path: Path) -> None:
    result = run("rollout", "start", str(spec_file))
    assert result.exit_code == 0, result.output
    rollout_id = result.stdout.strip().splitlines()[-1]
    [state] = _rollouts(tmp_path)
    assert state.id == rollout_id
    assert (state.phase.value, state.baseline.version, state.candidate.version) == ("pending", "1", "2")


def test_a_bad_spec_is_refused_with_field_and_line_and_saves_nothing(run: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("weight: 5", "weight: 500"))
    result = run("rollout", "start", str(bad))
    assert result.exit_code == 2
    assert "spec.traffic.steps[0].weight (line 10): Input should be less than or equal to 100" in result.stderr
    assert "Traceback" not in result.output
    assert _rollouts(tmp_path) == []


def test_an_unknown_model_is_refused_and_saves_nothing(run: Any, tmp_path: Path) -> None:
    spec = tmp_path / "unknown.yaml"
    spec.write_text(SPEC.replace("models:/fraud/2", "models:/fraud/99"))
    result = run("rollout", "start", str(spec))
    assert result.exit_code == 2
    assert "models:/fraud/99" in result.stderr
    assert _rollouts(tmp_path) == []


def test_a_second_rollout_on_a_busy_endpoint_is_refused(run: Any, spec_file: Path, tmp_path: Path) -> None:
    first = run("rollout", "start", str(spec_file)).stdout.strip()
    result = run("rollout", "start", str(spec_file))
    assert result.exit_code == 2
    assert f"already has an active rollout: {first}" in result.stderr
    assert len(_rollouts(tmp_path)) == 1


def test_pause_resume_abort_and_their_exit_codes(run: Any, spec_file: Path, tmp_path: Path) -> None:
    rollout_id = run("rollout", "start", str(spec_file)).stdout.strip()
    assert run("rollout", "pause", rollout_id).exit_code == 0
    assert _rollouts(tmp_path)[0].paused
    again = run("rollout", "pause", rollout_id)
    assert again.exit_code == 2 and "already paused" in again.stderr
    assert run("rollout", "resume", rollout_id).exit_code == 0
    assert not _rollouts(tmp_path)[0].paused
    status = run("rollout", "status", rollout_id, "--json")
    assert status.exit_code == 0
    assert json.loads(status.stdout)["rollout"]["phase"] == "pending"
    aborted = run("rollout", "abort", rollout_id)
    assert aborted.exit_code == 0 and "aborted by cli:" in aborted.stdout
    status = run("rollout", "status", rollout_id, "--json")
    assert status.exit_code == 1  # CI gates on it: aborted is not a success
    history = json.loads(status.stdout)["history"]
    assert [entry["reason"].split(" by ")[0] for entry in history] == ["paused", "resumed", "aborted"]
    assert run("rollout", "status", rollout_id, "--watch").exit_code == 1  # ended: renders once and exits


def test_list_and_unknown_ids(run: Any, spec_file: Path) -> None:
    rollout_id = run("rollout", "start", str(spec_file)).stdout.strip()
    listed = run("rollout", "list", "--json")
    assert [entry["id"] for entry in json.loads(listed.stdout)] == [rollout_id]
    assert rollout_id in run("rollout", "list").stdout
    missing = run("rollout", "status", "nope")
    assert missing.exit_code == 2 and "no rollout 'nope'" in missing.stderr


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
    assert malformed.exit_code == 2 and "expected NAME=MODEL_REF, got 'fraud'" in malformed.output
    unknown = run("gateway", "--endpoint", "fraud=models:/nope@champion")
    assert unknown.exit_code == 2 and "nope" in unknown.output
    bad_ref = run("gateway", "--endpoint", "fraud=s3://bucket/fraud")
    assert bad_ref.exit_code == 2 and "'s3://bucket/fraud' is not a model ref" in bad_ref.output
