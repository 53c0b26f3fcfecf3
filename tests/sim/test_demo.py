"""The demo end to end, through the real CLI: trains, registers in a real MLflow registry, serves
over real HTTP in its own process, and decides. Each scenario runs once (about 45 s)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.cli.workspace import Workspace
from modelcanary.engine.outcomes import ROLLBACK_TAG

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _modelcanary(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modelcanary", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=200, env=env)


def _run(tmp_path_factory: pytest.TempPathFactory, scenario: str) -> tuple[dict[str, Any], Workspace]:
    """The demo in a fresh work folder: given by ``--workdir`` for drift, and for good by
    ``$MODELCANARY_WORKDIR``, as for every other command."""
    workdir = tmp_path_factory.mktemp(f"demo-{scenario}")
    summary_path = workdir / "summary.json"
    args = ["demo", "--scenario", scenario, "--json", str(summary_path)]
    env = {name: value for name, value in os.environ.items() if not name.startswith("MODELCANARY_")}
    if scenario == "drift":
        args += ["--workdir", str(workdir)]
    else:
        env["MODELCANARY_WORKDIR"] = str(workdir)
    result = _modelcanary(*args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(summary_path.read_text()), Workspace.at(workdir)


@pytest.fixture(scope="module")
def drift(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Workspace]:
    return _run(tmp_path_factory, "drift")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Workspace]:
    return _run(tmp_path_factory, "good")


def test_drift_rolls_back_on_label_accuracy(drift: tuple[dict[str, Any], Workspace]) -> None:
    summary, _ = drift
    assert summary["final_phase"] == "rolled_back"
    assert "accuracy failed" in summary["reason"]
    assert summary["offline"]["candidate_accuracy"] > summary["offline"]["baseline_accuracy"]
    assert summary["steps_reached"] == 1  # caught at the first, 10% step
    assert 0 < summary["candidate_requests"] < summary["baseline_requests"]
    assert summary["labels_received"] >= 300
    assert summary["failed_requests"] == 0


def test_drift_tags_the_candidate_and_leaves_the_champion(drift: tuple[dict[str, Any], Workspace]) -> None:
    summary, space = drift
    state, _ = space.store().get(summary["rollout_id"])
    client = MlflowRegistry(space.registry_uri).client
    candidate = client.get_model_version(state.candidate.name, state.candidate.version)
    assert "accuracy failed" in candidate.tags[ROLLBACK_TAG]
    assert str(client.get_model_version_by_alias("fraud", "champion").version) == state.baseline.version
    assert space.store().routes()["fraud"].candidate is None


def test_good_candidate_is_promoted_through_every_step(good: tuple[dict[str, Any], Workspace]) -> None:
    summary, space = good
    assert summary["final_phase"] == "promoted", summary["reason"]
    assert summary["steps_reached"] == 4
    state, _ = space.store().get(summary["rollout_id"])
    weights = [t.weight for t in space.store().history(state.id)]
    assert weights == [10, 25, 50, 100, 100]
    client = MlflowRegistry(space.registry_uri).client
    assert str(client.get_model_version_by_alias("fraud", "champion").version) == state.candidate.version
    route = space.store().routes()["fraud"]
    assert route.baseline == state.candidate and route.candidate is None


@pytest.mark.parametrize("scenario", ["drift", "good"])
def test_every_transition_is_audited_in_an_unbroken_chain(scenario: str, request: pytest.FixtureRequest) -> None:
    summary, space = request.getfixturevalue(scenario)
    store: SqlStore = space.store()
    events = store.audit_events()
    assert store.verify_audit() == (len(events), None)
    ours = [e["action"] for e in events if e["rollout_id"] == summary["rollout_id"]]
    transitions = [action for action in ours if action.startswith("rollout.")]
    assert transitions[0] == "rollout.create"
    assert transitions[-1] == f"rollout.{summary['final_phase']}"
    assert len(transitions) == 1 + len(store.history(summary["rollout_id"]))
    # the one side effect of the outcome (the alias moved, or the candidate tagged), done once
    assert ours[-1] == "action.done" and ours.count("action.done") == 1


def test_status_exit_code_gates_on_the_outcome(
    drift: tuple[dict[str, Any], Workspace], good: tuple[dict[str, Any], Workspace]
) -> None:
    for (summary, space), code in ((drift, 1), (good, 0)):
        result = _modelcanary("rollout", "status", summary["rollout_id"], "--workdir", str(space.workdir), "--json")
        assert result.returncode == code
        report = json.loads(result.stdout)
        assert report["rollout"]["phase"] == summary["final_phase"]
        # the three metrics, and the sample-ratio check of the split of users (the demo routes by a sticky key)
        assert {m["name"] for m in report["judgement"]["metrics"]} == {
            "error-rate",
            "latency",
            "accuracy",
            "sample-ratio",
        }
        assert report["history"][-1]["reason"] == summary["reason"]


def test_rollout_list_reads_the_demo_workdir(good: tuple[dict[str, Any], Workspace]) -> None:
    summary, space = good
    listed = _modelcanary("rollout", "list", "--workdir", str(space.workdir), "--json")
    assert listed.returncode == 0
    assert [r["id"] for r in json.loads(listed.stdout)] == [summary["rollout_id"]]


def test_serve_reuses_the_demo_workdir_and_serves_the_promoted_model(good: tuple[dict[str, Any], Workspace]) -> None:
    import socket
    import time

    import httpx

    from modelcanary.sim.fraud import FEATURES

    summary, space = good
    state, _ = space.store().get(summary["rollout_id"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "modelcanary", "serve", "--workdir", str(space.workdir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.2)
        body = {"inputs": [{"name": name, "shape": [1], "datatype": "FP64", "data": [1.0]} for name in FEATURES]}
        answer = httpx.post(f"http://127.0.0.1:{port}/v2/models/fraud/infer", json=body).json()
        assert answer["model_version"] == state.candidate.version
        assert answer["parameters"]["variant"] == "baseline"  # the promoted candidate is the baseline now
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_second_demo_in_a_work_folder_an_earlier_one_serves_is_refused_before_it_registers_anything(
    drift: tuple[dict[str, Any], Workspace],
) -> None:
    """The endpoint serves the earlier demo's baseline: new models made champion and challenger
    there would leave the registry naming a champion the endpoint does not serve, and the rollout
    refused half-way. The demo says so first, and writes nothing."""
    _, space = drift
    registry = MlflowRegistry(space.registry_uri).client
    versions = len(registry.search_model_versions("name='fraud'"))
    env = {name: value for name, value in os.environ.items() if not name.startswith("MODELCANARY_")}
    result = _modelcanary("demo", "--workdir", str(space.workdir), env=env)
    assert result.returncode == 2
    assert f"work folder {space.workdir}: its endpoint 'fraud' already serves models:/fraud/1" in result.stderr
    assert "give --workdir a new folder" in result.stderr
    assert len(registry.search_model_versions("name='fraud'")) == versions


def test_a_demo_on_a_port_another_process_listens_on_is_refused_before_it_registers_anything(tmp_path: Path) -> None:
    """That process would pass the readiness check and get the demo's traffic and labels, while
    the server the demo started failed to bind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {name: value for name, value in os.environ.items() if not name.startswith("MODELCANARY_")}
        result = _modelcanary("demo", "--workdir", str(tmp_path / "work"), "--port", str(port), env=env)
    assert result.returncode == 2, result.stderr
    assert f"port {port} is taken" in result.stderr and "give --port another" in result.stderr
    assert not (tmp_path / "work" / "mlflow.db").exists()  # no registry made, nothing registered
