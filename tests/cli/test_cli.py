"""The gateway command's options, against a real MLflow registry. (Every rollout and audit
command, local and remote: test_rollout_commands.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from modelcanary.cli.main import cli


@pytest.fixture
def run(tmp_path: Path, mlflow_registry: Any) -> Any:
    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, [*args, "--workdir", str(tmp_path), "--registry", mlflow_registry.uri])

    return invoke


def test_gateway_refuses_a_bad_endpoint_before_serving(run: Any) -> None:
    malformed = run("gateway", "--endpoint", "fraud")
    assert malformed.exit_code == 2 and "expected NAME=MODEL_REF, got 'fraud'" in malformed.output
    unknown = run("gateway", "--endpoint", "fraud=models:/nope@champion")
    assert unknown.exit_code == 2 and "nope" in unknown.output
    bad_ref = run("gateway", "--endpoint", "fraud=s3://bucket/fraud")
    assert bad_ref.exit_code == 2 and "'s3://bucket/fraud' is not a model ref" in bad_ref.output
