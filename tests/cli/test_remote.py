"""What only the remote path has: configuration from the environment, tokens and roles, a server
that is not there. Against the control API on a real server on loopback."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import running_api
from click.testing import CliRunner, Result

from modelcanary.cli.main import cli

SPEC = """\
apiVersion: modelcanary/v1
kind: Rollout
spec:
  endpoint: fraud
  baseline: models:/fraud/1
  candidate: models:/fraud/2
  traffic:
    steps: [{weight: 5}]
  analysis:
    metrics: [{kind: error_rate}]
"""
CLEAN: dict[str, str | None] = {name: None for name in os.environ if name.startswith("MODELCANARY_")}


def _run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={**CLEAN, **(env or {})})


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "rollout.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def server(tmp_path: Path, mlflow_registry: Any) -> Iterator[tuple[str, str]]:
    """The server's URL and its store's URL (for ``token create``, which runs where the store is)."""
    with running_api(tmp_path, mlflow_registry.uri) as (url, _store):
        yield url, f"sqlite:///{tmp_path / 'server.db'}"


def _token(store_url: str, name: str, role: str, *endpoints: str) -> str:
    created = _run("token", "create", "--name", name, "--role", role, "--store", store_url,
                   *(f"--endpoint={endpoint}" for endpoint in endpoints))  # fmt: skip
    assert created.exit_code == 0, created.output
    return created.stdout.strip().splitlines()[-1]


def test_server_and_token_from_the_environment(server: tuple[str, str], spec_file: Path) -> None:
    url, store_url = server
    env: dict[str, str | None] = {"MODELCANARY_SERVER": url, "MODELCANARY_TOKEN": _token(store_url, "ci", "operator")}
    started = _run("rollout", "start", str(spec_file), env=env)
    assert started.exit_code == 0, started.output
    rollout_id = started.stdout.strip()
    listed = _run("rollout", "list", env=env)
    assert listed.exit_code == 0 and rollout_id in listed.stdout
    aborted = _run("rollout", "abort", rollout_id, env=env)
    assert aborted.stdout == f"{rollout_id}: aborted by token:ci\n"
    # the options win over the environment
    bad = _run("rollout", "list", "--token", "not-a-token", env=env)
    assert bad.exit_code == 2 and "401 Unauthorized: check --token or MODELCANARY_TOKEN" in bad.stderr
    # a server URL given with the API's prefix works as well
    assert _run("rollout", "list", "--server", f"{url}/api/v1/", env=env).exit_code == 0


def test_a_bad_or_missing_token_is_a_clear_error(server: tuple[str, str], spec_file: Path) -> None:
    url, _ = server
    bad = _run("rollout", "start", str(spec_file), "--server", url, "--token", "wrong")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: ") and "(401 Unauthorized: check --token or MODELCANARY_TOKEN)" in bad.stderr
    assert "Traceback" not in bad.output
    missing = _run("rollout", "list", "--server", url)
    assert missing.exit_code == 2 and "--server needs a token: give --token or set MODELCANARY_TOKEN" in missing.output
    both = _run("rollout", "list", "--server", url, "--token", "t", "--workdir", str(spec_file.parent))
    assert both.exit_code == 2 and "--workdir act on a local store; with --server the server's is used" in both.output


def test_a_token_read_with_its_line_ending_works_and_one_with_a_stray_character_is_not_shown(
    server: tuple[str, str],
) -> None:
    """A token with a character no header may hold (a secret file's "\r") made urllib refuse the
    header, quoting it whole, reported as "cannot reach" the server (found by review)."""
    url, store_url = server
    token = _token(store_url, "ci", "viewer")
    assert _run("rollout", "list", "--server", url, env={"MODELCANARY_TOKEN": f"{token}\r\n"}).exit_code == 0
    for odd in (f"{token[:8]} {token[8:]}", f"{token}\x7f", f"{token}é"):
        refused = _run("rollout", "list", "--server", url, "--token", odd)
        assert refused.exit_code == 2 and "holds a character no token has" in refused.output
        assert token[4:] not in refused.output and "cannot reach" not in refused.output


def test_roles_and_endpoints_limit_what_a_token_does(server: tuple[str, str], spec_file: Path) -> None:
    url, store_url = server
    operator = ["--server", url, "--token", _token(store_url, "ops", "operator")]
    viewer = ["--server", url, "--token", _token(store_url, "eyes", "viewer")]
    elsewhere = ["--server", url, "--token", _token(store_url, "churn-team", "approver", "churn")]

    refused = _run("rollout", "start", str(spec_file), *viewer)
    assert refused.exit_code == 2 and "403 Forbidden: this token's role or endpoints" in refused.stderr
    rollout_id = _run("rollout", "start", str(spec_file), *operator).stdout.strip()
    assert _run("rollout", "status", rollout_id, *viewer).exit_code == 0  # a viewer reads
    assert _run("rollout", "pause", rollout_id, *viewer).exit_code == 2
    approver_only = _run("rollout", "promote", rollout_id, *operator)
    assert approver_only.exit_code == 2 and "403" in approver_only.stderr
    assert _run("rollout", "list", "--json", *elsewhere).stdout.strip() == "[]"  # not its endpoint: not shown
    hidden = _run("rollout", "status", rollout_id, *elsewhere)
    # no status code in the message (the id itself may hold "404": one started at 13:40:47 did)
    assert hidden.exit_code == 2 and "404" not in hidden.stderr.replace(rollout_id, "") and rollout_id in hidden.stderr
    assert _run("rollout", "abort", rollout_id, *elsewhere).exit_code == 2
    # nothing was done to it: the refused pause, promote and abort left it as it started
    (state,) = json.loads(_run("rollout", "list", "--json", *viewer).stdout)
    assert (state["id"], state["phase"], state["paused"]) == (rollout_id, "pending", False)


def test_an_unreachable_server_is_a_clear_error(spec_file: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = _run("rollout", "list", "--server", f"http://127.0.0.1:{port}", "--token", "t")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot reach http://127.0.0.1:{port}: ")
    assert "Traceback" not in result.output
