"""The command line around the API: ``token create|list|revoke`` on a real store, and the API
served for real over loopback, both inside ``modelcanary serve`` (beside the gateway and the
controller) and alone (``modelcanary api``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from modelcanary.adapters.store.schema import tokens
from modelcanary.cli.main import cli
from modelcanary.cli.workspace import Workspace

from .api_support import SPEC


@pytest.fixture
def run(tmp_path: Path) -> Any:
    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, [*args, "--workdir", str(tmp_path)])

    return invoke


def test_token_create_prints_the_secret_once_on_its_last_line_and_stores_its_hash(run: Any, tmp_path: Path) -> None:
    result = run("token", "create", "--role", "operator", "--name", "ci", "--endpoint", "fraud", "--endpoint", "churn")
    assert result.exit_code == 0, result.output
    [secret] = result.stdout.splitlines()  # the secret is standard output's only line: `$(modelcanary token create …)`
    assert secret.startswith("mc_")
    assert "created token ci (operator, churn, fraud)" in result.stderr
    store = Workspace.at(tmp_path).store()
    info = store.token_by_secret(secret)
    assert info is not None and (info.name, info.endpoints) == ("ci", ("churn", "fraud"))
    with store.engine.connect() as conn:
        assert secret not in str(conn.execute(sa.select(tokens)).all())

    listed = run("token", "list")
    assert listed.exit_code == 0 and "ci" in listed.stdout and "active" in listed.stdout
    assert secret not in listed.stdout
    revoked = run("token", "revoke", "ci")
    assert (revoked.exit_code, revoked.stdout.strip()) == (0, f"revoked token ci ({info.id})")
    assert store.token_by_secret(secret) is None
    again = run("token", "revoke", "ci")
    assert again.exit_code == 2 and "already revoked" in again.stderr
    assert [e["action"] for e in store.audit_events()] == ["token.create", "token.revoke"]


def test_an_unknown_role_or_a_taken_name_is_a_usage_error_naming_the_choices(run: Any) -> None:
    result = run("token", "create", "--role", "root", "--name", "ci")
    assert result.exit_code == 2
    assert "'root' is not one of 'viewer', 'operator', 'approver', 'admin'" in result.stderr
    assert run("token", "create", "--role", "viewer", "--name", "ci").exit_code == 0
    taken = run("token", "create", "--role", "viewer", "--name", "ci")
    assert taken.exit_code == 2 and "a token named 'ci' already exists" in taken.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(check: Any, *, deadline_s: float = 90.0) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            found = check()
            if found:
                return found
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not so after {deadline_s} s")


@pytest.fixture
def process(tmp_path: Path, mlflow_registry: Any) -> Iterator[Any]:
    """Starts ``modelcanary COMMAND`` on a free port with this test's work folder; stops it after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(command: str) -> str:
        port = _free_port()
        args = [sys.executable, "-m", "modelcanary", command, "--workdir", str(tmp_path), "--port", str(port)]
        started.append(
            subprocess.Popen(
                [*args, "--registry", mlflow_registry.uri],
                stderr=(tmp_path / f"{command}.log").open("w"),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        )
        return f"http://127.0.0.1:{port}"

    yield start
    for each in started:
        each.send_signal(signal.SIGTERM)
        try:
            each.wait(15)
        except subprocess.TimeoutExpired:
            each.kill()


@pytest.mark.slow
def test_serve_answers_the_gateway_and_the_api_on_one_port(run: Any, process: Any, mlflow_registry: Any) -> None:
    secret = run("token", "create", "--role", "operator", "--name", "deployer").stdout.strip()
    base = process("serve")
    assert _until(lambda: httpx.get(f"{base}/api/v1/health", timeout=2).json() == {"ok": True})
    assert httpx.get(f"{base}/v2/health/live", timeout=5).status_code == 200  # the gateway's own route
    assert httpx.get(f"{base}/api/v1/rollouts", timeout=5).status_code == 401
    headers = {"Authorization": f"Bearer {secret}"}
    started = httpx.post(f"{base}/api/v1/rollouts", json={"spec": SPEC}, headers=headers, timeout=30)
    assert started.status_code == 201, started.text
    rollout_id = started.json()["id"]

    def canary() -> bool:  # the controller in the same process picks it up and publishes its route
        response = httpx.get(f"{base}/api/v1/rollouts/{rollout_id}", headers=headers, timeout=5)
        return bool(response.json()["rollout"]["phase"] == "canary")

    _until(canary)
    _until(lambda: httpx.get(f"{base}/v2/health/ready", timeout=5).json()["routes_version"] >= 1)
    predicted = httpx.post(
        f"{base}/v1/endpoints/fraud/invocations", json={"dataframe_records": mlflow_registry.rows[:1]}, timeout=30
    )
    assert predicted.status_code == 200 and predicted.headers["x-modelcanary-variant"] in {"baseline", "candidate"}
    events = httpx.get(f"{base}/api/v1/audit", params={"rollout": rollout_id}, headers=headers, timeout=5).json()
    assert events[0]["actor"] == "token:deployer"
    assert httpx.get(f"{base}/api/v1/openapi.json", timeout=5).status_code == 401  # the schema needs a token too
    schema = httpx.get(f"{base}/api/v1/openapi.json", headers=headers, timeout=5).json()
    assert schema["info"]["title"] == "modelcanary control API"


@pytest.mark.slow
def test_the_api_runs_on_its_own(run: Any, process: Any) -> None:
    secret = run("token", "create", "--role", "viewer", "--name", "auditor").stdout.strip()
    base = process("api")
    assert _until(lambda: httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200)
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{base}/api/v1/audit/verify", headers=headers, timeout=5).json() == {
        "ok": True,
        "count": 1,
        "broken": None,
    }
    assert httpx.post(f"{base}/api/v1/rollouts", json={"spec": SPEC}, headers=headers, timeout=5).status_code == 403
    assert httpx.get(f"{base}/v2/health/live", timeout=5).status_code == 404  # no gateway in this process
