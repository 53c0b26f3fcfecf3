"""Wrong input to the CLI is one clear line and exit code 2, never a traceback: a traceback exits 1,
which docs/cli.md gives to a rollout that rolled back, so a CI gate would misread it."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from modelcanary.cli.main import cli

CLEAN: dict[str, str | None] = {name: None for name in os.environ if name.startswith("MODELCANARY_")}
SPEC = """\
apiVersion: modelcanary/v1
kind: Rollout
metadata: {name: café}
spec:
  endpoint: fraud
  baseline: models:/fraud/1
  candidate: models:/fraud/2
  traffic:
    steps: [{weight: 5}]
  analysis:
    metrics: [{kind: error_rate}]
"""


def _run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={**CLEAN, **(env or {})})


def _refused(result: Result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a known error, not an uncaught one
    for word in words:
        assert word in result.stderr, result.stderr


# --- spec files -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "where"),
    [("latin-1", "line 3: byte 61 (0xe9) is not UTF-8"), ("utf-16", "line 1: byte 0 (0xff) is not UTF-8")],
)
def test_a_spec_file_that_is_not_utf8_names_the_line_and_byte(tmp_path: Path, encoding: str, where: str) -> None:
    spec = tmp_path / "rollout.yaml"
    spec.write_bytes(SPEC.encode(encoding))
    started = _run("rollout", "start", str(spec), "--workdir", str(tmp_path))
    _refused(started, f"invalid rollout spec {spec}:", where, "save the file as UTF-8")
    watched = _run("watch", "--template", str(spec), "--once", "--workdir", str(tmp_path))
    _refused(watched, f"invalid rollout spec {spec}:", where)


# --- where the state lives ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["foo", "mysql://u@h/db", "http://x"])
def test_a_store_url_of_another_database_is_a_clear_error(tmp_path: Path, url: str) -> None:
    result = _run("rollout", "list", "--workdir", str(tmp_path), "--store", url)
    _refused(result, f"error: store URL {url!r} is not one modelcanary opens: give sqlite:///PATH or postgresql://")
    _refused(_run("token", "list", "--workdir", str(tmp_path), "--store", url), f"store URL {url!r}")


def test_a_work_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    under_a_file = _run("rollout", "list", "--workdir", str(a_file / "x"))
    _refused(under_a_file, f"error: work folder '{a_file / 'x'}' (--workdir) cannot be made: Not a directory")
    from_env = _run("rollout", "list", env={"MODELCANARY_WORKDIR": str(a_file)})
    _refused(from_env, f"error: work folder '{a_file}' (MODELCANARY_WORKDIR) cannot be made: a file is in the way")


# --- output files ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["report", "r-1", "--out", "MISSING/r.html"],
        ["audit", "export", "--out", "MISSING/x.jsonl"],
        ["demo", "--json", "MISSING/x.json"],  # refused before the demo trains and runs for a minute
    ],
    ids=["report", "audit-export", "demo"],
)
def test_an_output_file_in_a_missing_folder_is_refused_up_front(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "missing"
    args = [arg.replace("MISSING", str(missing)) for arg in command]
    result = _run(*args, "--workdir", str(tmp_path))
    _refused(result, f"{str(missing)!r} is not a folder here")
    assert not (tmp_path / "modelcanary.db").exists()  # nothing was opened, let alone run


# --- ports ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["serve"], ["gateway", "--endpoint", "a=models:/a/1"], ["api"], ["demo"]])
@pytest.mark.parametrize("port", ["99999", "-5"])
def test_a_port_outside_0_to_65535_is_a_usage_error(tmp_path: Path, command: list[str], port: str) -> None:
    """99999 hung silently; -5 failed inside uvicorn."""
    result = _run(*command, "--port", port, "--workdir", str(tmp_path))
    _refused(result, "Invalid value for '--port'", "0<=x<=65535")


@pytest.mark.parametrize("command", [["serve"], ["gateway", "--endpoint", "a=models:/a/1"], ["api"]])
def test_a_host_that_is_no_name_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    """An empty label failed inside the event loop, a traceback (found by review)."""
    result = _run(*command, "--host", "not..a..host", "--workdir", str(tmp_path))
    _refused(result, "Invalid value for '--host'", "'not..a..host' is not a host name or address")


@pytest.mark.parametrize("command", [["serve"], ["api"]])
def test_a_policy_folder_that_does_not_exist_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    result = _run(*command, "--policy-dir", str(tmp_path / "none"), "--workdir", str(tmp_path))
    _refused(result, "Invalid value for '--policy-dir'", "does not exist")


# --- a control API that is not one ----------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["notaurl", "http://[::1", "ftp://h/x", "http://h:0", "http://h/a b"])
def test_a_server_url_that_is_not_one_is_a_clear_error(server: str) -> None:
    result = _run("rollout", "list", "--server", server, "--token", "t")
    _refused(result, f"error: --server {server!r} is not a URL: give http://HOST:PORT")


def test_a_server_url_with_a_password_is_refused_without_saying_it() -> None:
    """A password in --server was said back ("cannot reach http://ops:s3cret@...") into CI logs."""
    result = _run("rollout", "list", "--server", "http://ops:s3cret@127.0.0.1:9", "--token", "t")
    _refused(result, "error: --server holds a user or password")
    assert "s3cret" not in result.stderr + result.stdout


@pytest.fixture
def not_a_control_api() -> Iterator[str]:
    """A real HTTP server on loopback that answers every request 200 ``{"ok": true}``."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.mark.parametrize(
    ("command", "path"),
    [
        (["rollout", "list"], "/rollouts"),
        (["rollout", "start", "SPEC"], "/rollouts"),
        (["rollout", "spec", "r-1"], "/rollouts/r-1"),
        (["rollout", "status", "r-1"], "/rollouts/r-1/report"),
        (["rollout", "pause", "r-1"], "/rollouts/r-1/pause"),
        (["audit", "verify"], "/audit/verify"),
        (["audit", "export"], "/audit"),
    ],
)
def test_a_server_that_does_not_answer_like_a_control_api_is_a_clear_error(
    not_a_control_api: str, tmp_path: Path, command: list[str], path: str
) -> None:
    spec = tmp_path / "rollout.yaml"
    spec.write_text(SPEC)
    args = [str(spec) if arg == "SPEC" else arg for arg in command]
    result = _run(*args, "--server", not_a_control_api, "--token", "t")
    _refused(result, f"error: {not_a_control_api}/api/v1{path} did not answer like a modelcanary control API")


@pytest.mark.parametrize("name", ["fraud/v2", "-fraud", "f" * 201])
def test_a_gateway_endpoint_name_no_spec_could_give_is_a_usage_error(tmp_path: Path, name: str) -> None:
    """``--endpoint fraud/v2=...`` served an endpoint no prediction route could reach."""
    result = _run("gateway", "--endpoint", f"{name}=v2+http://127.0.0.1:9/models/m", "--workdir", str(tmp_path))
    _refused(result, "Invalid value for '--endpoint'", f"endpoint name {name!r} must be letters, digits")


def test_a_gateway_endpoint_given_twice_is_a_usage_error(tmp_path: Path) -> None:
    """The last --endpoint of a name won: the model the first named could never answer."""
    first, second = "m=v2+http://127.0.0.1:9/models/a", "m=v2+http://127.0.0.1:9/models/b"
    result = _run("gateway", "--endpoint", first, "--endpoint", second, "--workdir", str(tmp_path))
    _refused(result, "Invalid value for '--endpoint'", "endpoint 'm' is given twice")


def test_a_gateway_endpoint_whose_model_cannot_load_is_a_usage_error(tmp_path: Path) -> None:
    """It was listed as served, answered 404 for ever, and kept the gateway unready."""
    result = _run("gateway", "--endpoint", "m=v2+http://127.0.0.1:9/models/m", "--workdir", str(tmp_path))
    _refused(result, "Invalid value for '--endpoint'", "m=v2+http://127.0.0.1:9/models/m: its model cannot load")


@pytest.mark.parametrize("name", ["", "c" * 151])
def test_a_controller_name_the_lease_cannot_hold_is_a_usage_error(tmp_path: Path, name: str) -> None:
    """A 201-character --name failed every tick on PostgreSQL (the lease's holder column is 200)."""
    result = _run("controller", "--name", name, "--workdir", str(tmp_path))
    _refused(result, "Invalid value for '--name'", "give 1 to 150 characters")
