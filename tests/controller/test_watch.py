"""Registry-triggered rollouts against a real MLflow registry in a temp dir and a real SQLite store:
the watcher starts one rollout per new version of the alias, never two, across restarts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.cli.main import cli
from modelcanary.controller.operations import run_command
from modelcanary.controller.watch import REASK_S, Watcher
from modelcanary.domain.errors import PolicyDenied, RegistryError, SpecError
from modelcanary.domain.phases import Phase
from modelcanary.engine.decide import Command

TEMPLATE = """\
# the nightly challenger of the fraud model
apiVersion: modelcanary/v1
kind: Rollout
metadata: {name: fraud-challenger}
spec:
  endpoint: fraud
  baseline: models:/fraud@champion
  candidate: models:/fraud@challenger   # pinned to the alias' version by the watcher
  traffic:
    steps: [{weight: 10, minRequests: 10, minDuration: 1s}]
  analysis:
    metrics: [{kind: error_rate}]
"""
WAIT_S = 60.0


@pytest.fixture(scope="module")
def module_registry(tmp_path_factory: pytest.TempPathFactory) -> MlflowRegistry:
    root = tmp_path_factory.mktemp("watch-registry")
    registry = MlflowRegistry(f"sqlite:///{root / 'mlflow.db'}")
    registry.client.create_registered_model("fraud")
    for _ in range(4):
        registry.client.create_model_version("fraud", source=(root / "artifacts").as_uri())
    return registry


@pytest.fixture
def registry(module_registry: MlflowRegistry) -> MlflowRegistry:
    """A real MLflow registry of this module's own (the tests move its aliases): fraud v1-v4, champion
    at v1, no other alias. The versions' artefacts are never loaded here, so they point at an empty
    folder."""
    for alias in ("challenger", "blue"):
        module_registry.client.delete_registered_model_alias("fraud", alias)
    module_registry.set_alias("fraud", "champion", "1")
    return module_registry


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = SqlStore(f"sqlite:///{tmp_path / 'modelcanary.db'}")
    yield opened
    opened.close()


def test_a_moved_alias_starts_one_rollout_of_its_version(registry: MlflowRegistry, store: SqlStore) -> None:
    watcher = Watcher(store=store, registry=registry, template=TEMPLATE)
    registry.set_alias("fraud", "challenger", "2")

    first = watcher.check(actor="test")
    again = watcher.check(actor="test")

    assert first.started is not None and again.started is None
    assert (first.started.candidate.version, first.started.baseline.version) == ("2", "1")
    assert first.started.name == "fraud-challenger-v2"
    assert "already rolled out" in again.reason
    _, text = store.get(first.started.id)
    assert "candidate: models:/fraud/2" in text and "# pinned to the alias' version" in text  # comments kept
    assert [state.id for state in store.list_rollouts()] == [first.started.id]


def test_a_new_version_waits_for_the_endpoint_then_starts(registry: MlflowRegistry, store: SqlStore) -> None:
    watcher = Watcher(store=store, registry=registry, template=TEMPLATE)
    registry.set_alias("fraud", "challenger", "2")
    started = watcher.check(actor="test").started
    assert started is not None

    registry.set_alias("fraud", "challenger", "3")
    waiting = watcher.check(actor="test")
    assert waiting.started is None and f"{started.id} holds endpoint fraud" in waiting.reason

    run_command(store, started.id, Command.ABORT, actor="test")
    resumed = watcher.check(actor="test")
    assert resumed.started is not None and resumed.started.candidate.version == "3"


def test_a_version_already_rolled_out_by_hand_or_at_the_baseline_is_not_started(
    registry: MlflowRegistry, store: SqlStore
) -> None:
    registry.set_alias("fraud", "challenger", "1")  # the champion itself
    watcher = Watcher(store=store, registry=registry, template=TEMPLATE)
    assert "is the baseline already" in watcher.check(actor="test").reason
    assert store.list_rollouts() == []


def test_a_bad_template_or_an_unset_alias_is_a_clear_error(registry: MlflowRegistry, store: SqlStore) -> None:
    with pytest.raises(SpecError, match="give --alias"):
        Watcher(store=store, registry=registry, template=TEMPLATE.replace("fraud@challenger", "fraud/2"))
    with pytest.raises(RegistryError, match="challenger"):
        Watcher(store=store, registry=registry, template=TEMPLATE).check(actor="test")


def test_the_cli_looks_once_per_call_and_never_starts_a_version_twice(registry: MlflowRegistry, tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(TEMPLATE)
    registry.set_alias("fraud", "blue", "4")
    args = ["watch", "--template", str(template), "--alias", "blue", "--once", "--workdir", str(tmp_path)]
    args += ["--registry", registry.tracking_uri]

    first = CliRunner().invoke(cli, args)
    second = CliRunner().invoke(cli, args)  # a restart: what was seen comes from the store

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    [state] = SqlStore(f"sqlite:///{tmp_path / 'modelcanary.db'}").list_rollouts()
    assert state.candidate.version == "4" and first.stdout.strip() == state.id
    assert second.stdout == "" and "already rolled out" in second.stderr


FROZEN = """\
  gates:
    start:
      - policy: change-freeze
        params: {weekdays: [Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday]}
"""


class Stop(Exception):
    """Ends the watch loop from its sleep."""


def test_the_watcher_reports_a_refused_start_and_goes_on_watching(
    registry: MlflowRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start gate's denial used to end the watcher; it now says so once, asks the gate about
    that version no more (one denial audited), and goes on looking for the next version."""
    template = tmp_path / "template.yaml"
    template.write_text(TEMPLATE + FROZEN)
    registry.set_alias("fraud", "challenger", "2")
    looks: list[float] = []

    def sleep(seconds: float) -> None:
        looks.append(seconds)
        if len(looks) == 3:
            raise Stop

    monkeypatch.setattr("modelcanary.cli.main._pause", sleep)
    args = ["watch", "--template", str(template), "--interval", "7", "--workdir", str(tmp_path)]
    result = CliRunner().invoke(cli, [*args, "--registry", registry.tracking_uri])

    assert isinstance(result.exception, Stop), result.output
    assert looks == [7.0, 7.0, 7.0]
    denial = "the start gate denied the rollout:\n  change-freeze: no changes on"
    assert result.stderr.count(denial) == 1 and result.stdout == ""
    store = SqlStore(f"sqlite:///{tmp_path / 'modelcanary.db'}")
    assert store.list_rollouts() == []
    assert [event["action"] for event in store.audit_events()] == ["rollout.refused"]
    store.close()


def test_a_refused_version_is_asked_about_again_after_a_while(store: SqlStore, registry: MlflowRegistry) -> None:
    """Not at every look (each refusal is audited), but not never either: what refused it (a
    change freeze) may be over by then."""
    registry.set_alias("fraud", "challenger", "2")
    now = [1_000.0]
    watcher = Watcher(store=store, registry=registry, template=TEMPLATE + FROZEN, clock=lambda: now[0])
    with pytest.raises(PolicyDenied):
        watcher.check(actor="watch")
    now[0] += REASK_S - 1
    quiet = watcher.check(actor="watch")
    assert quiet.started is None and "change-freeze" in quiet.reason
    assert [event["action"] for event in store.audit_events()] == ["rollout.refused"]
    now[0] += 1
    with pytest.raises(PolicyDenied):  # asked again, and refused again: the freeze is every day
        watcher.check(actor="watch")
    assert [event["action"] for event in store.audit_events()] == ["rollout.refused"] * 2


def test_the_watch_process_follows_the_alias(registry: MlflowRegistry, tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(TEMPLATE)
    store = SqlStore(f"sqlite:///{tmp_path / 'modelcanary.db'}")
    command = [sys.executable, "-m", "modelcanary", "watch", "--template", str(template), "--interval", "0.2"]
    command += ["--workdir", str(tmp_path), "--registry", registry.tracking_uri]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    try:
        registry.set_alias("fraud", "challenger", "2")
        first = _wait_for(lambda: [s for s in store.list_rollouts() if s.candidate.version == "2"], process)
        run_command(store, first[0].id, Command.ABORT, actor="test")
        registry.set_alias("fraud", "challenger", "3")
        _wait_for(lambda: [s for s in store.list_rollouts() if s.candidate.version == "3"], process)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    versions = sorted(state.candidate.version for state in store.list_rollouts())
    assert versions == ["2", "3"], err
    assert [s.phase for s in store.list_rollouts()] == [Phase.PENDING, Phase.ABORTED]
    store.close()


def _wait_for(found: Any, process: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (result := found()):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the watcher did not start the rollout"
        time.sleep(0.1)
    return result


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"


def test_the_ci_example_trains_registers_and_its_rollout_starts(tmp_path: Path) -> None:
    """The GitHub Actions gate's pieces: train.py registers a version and sets @challenger, and
    the workflow starts examples/ci/rollout.yaml with --wait (here: the watcher starts it once)."""
    from ruamel.yaml import YAML

    workflow = YAML(typ="safe").load((EXAMPLES / "github-actions.yml").read_text())
    scripts = "\n".join(step.get("run", "") for step in workflow["jobs"]["release"]["steps"])
    assert "modelcanary rollout start --wait examples/ci/rollout.yaml" in scripts
    assert "examples/ci/train.py" in scripts

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = MlflowRegistry(uri)
    registry.client.create_registered_model("fraud")
    registry.client.create_model_version("fraud", source=(tmp_path / "v1").as_uri())
    registry.set_alias("fraud", "champion", "1")
    trained = subprocess.run(
        [sys.executable, str(EXAMPLES / "train.py"), "--registry", uri, "--model", "fraud", "--alias", "challenger"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert trained.stdout.strip().splitlines()[-1] == "version=2"
    assert registry.resolve("models:/fraud@challenger").version == "2"

    store = SqlStore(f"sqlite:///{tmp_path / 'modelcanary.db'}")
    template = (EXAMPLES / "rollout.yaml").read_text()
    check = Watcher(store=store, registry=registry, template=template, source="rollout.yaml").check(actor="ci")
    assert check.started is not None
    assert (check.started.baseline.version, check.started.candidate.version) == ("1", "2")
    store.close()
