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


def test_a_gateway_restarted_with_the_same_host_and_pid_writes_under_a_new_source(tmp_path: Path) -> None:
    """A flush overwrites its source's rows with the process's totals: a container restarted with
    the same hostname and pid 1 must not overwrite what its previous process flushed."""
    from modelcanary.adapters.store.sql import SqlStore
    from modelcanary.cli.main import process_name
    from modelcanary.domain.telemetry import Variant, VariantTelemetry
    from modelcanary.engine.analysis import pair

    store = SqlStore(f"sqlite:///{tmp_path / 'store.db'}")
    for served in (40, 1):  # two starts of one container, the second one short-lived
        store.write_telemetry(process_name(), [("r-1", Variant.BASELINE, VariantTelemetry(requests=served))])
    assert pair(store.read_telemetry("r-1")).baseline.requests == 41
    store.close()


def test_two_controllers_of_one_name_do_not_share_the_lease(tmp_path: Path) -> None:
    """Every replica started with --name controller held the lease at once, with one fencing token:
    the store took one holder string for one owner."""
    from modelcanary.adapters.store.sql import SqlStore
    from modelcanary.cli.main import process_name

    store = SqlStore(f"sqlite:///{tmp_path / 'store.db'}")
    first, second = process_name("controller"), process_name("controller")
    assert first.startswith("controller-") and second.startswith("controller-")
    assert store.acquire_lease("controller", first, ttl_s=10) is not None
    assert store.acquire_lease("controller", second, ttl_s=10) is None
    store.close()
