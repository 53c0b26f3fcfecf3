"""Starting a rollout against a real MLflow registry: what it is refused for, and what it asks
the registry about."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import COMMAND_TRIES, run_command, start_rollout
from modelcanary.domain.errors import Conflict, SpecError, Stale
from modelcanary.domain.phases import Phase
from modelcanary.domain.state import Outcome, RolloutState
from modelcanary.engine.decide import Command

SPEC = """\
apiVersion: modelcanary/v1
kind: Rollout
spec:
  endpoint: fraud
  baseline: BASELINE
  candidate: CANDIDATE
  traffic:
    steps: [{weight: 5}]
  analysis:
    metrics: [{kind: error_rate}]
"""


def spec(baseline: str, candidate: str) -> str:
    return SPEC.replace("BASELINE", baseline).replace("CANDIDATE", candidate)


def test_a_remote_model_is_not_looked_up_in_the_registry(store: SqlStore, registry: MlflowRegistry) -> None:
    # the registry holds fraud/1 and fraud/2 only; a remote server's version 3 is not one of them
    remote = "v2+http://127.0.0.1:9/models/fraud/versions/3"
    state = start_rollout(store, registry, spec("models:/fraud@champion", remote), source="test", actor="test")
    assert state.candidate.ref == remote and state.candidate_info is None
    assert state.baseline_info is not None and state.baseline_info.run_id  # the registry's own: described
    run_command(store, state.id, Command.ABORT, actor="test")
    ray = start_rollout(store, registry, spec("models:/fraud/1", "ray://app/fraud"), source="test", actor="test")
    assert ray.candidate_info is None


def test_a_rollout_starts_from_what_the_endpoint_serves(store: SqlStore, registry: MlflowRegistry) -> None:
    first = start_rollout(store, registry, spec("models:/fraud/1", "models:/fraud/2"), source="test", actor="test")
    with pytest.raises(Conflict, match="already has an active rollout"):
        start_rollout(store, registry, spec("models:/fraud/1", "models:/fraud/2"), source="test", actor="test")
    Controller(store=store, registry=registry).tick()  # pending -> its first step
    run_command(store, first.id, Command.PROMOTE, actor="test")
    assert store.get(first.id)[0].phase is Phase.PROMOTED
    # the alias move is an action the controller has not run yet: @champion still names v1
    stale = r"serves models:/fraud/2, but the spec's baseline 'models:/fraud@champion' is models:/fraud/1"
    with pytest.raises(Conflict, match=stale):
        start_rollout(store, registry, spec("models:/fraud@champion", "models:/fraud/2"), source="test", actor="test")
    assert [state.id for state in store.list_rollouts()] == [first.id]  # refused: nothing saved
    back = start_rollout(store, registry, spec("models:/fraud/2", "models:/fraud/1"), source="test", actor="test")
    assert back.baseline.uri == "models:/fraud/2"


def test_a_candidate_that_is_the_baseline_is_refused_naming_its_line(store: SqlStore, registry: MlflowRegistry) -> None:
    """An alias may name the baseline's own version: such a rollout would compare a model with
    itself and promote nothing new. Refused before anything is saved."""
    same = spec("models:/fraud/1", "models:/fraud@champion")  # @champion is v1
    with pytest.raises(
        SpecError, match=r"spec.candidate \(line 6\): models:/fraud@champion is models:/fraud/1, the baseline"
    ):
        start_rollout(store, registry, same, source="test", actor="test")
    assert store.list_rollouts() == []


@pytest.mark.parametrize("races", [2, COMMAND_TRIES])
def test_a_command_that_loses_its_compare_and_set_to_a_tick_is_applied_to_the_fresh_state(
    store: SqlStore, registry: MlflowRegistry, monkeypatch: pytest.MonkeyPatch, races: int
) -> None:
    rollout = start_rollout(store, registry, spec("models:/fraud/1", "models:/fraud/2"), source="test", actor="test")
    Controller(store=store, registry=registry).tick()
    read = store.get
    saved_by_ticks: list[int] = []

    def get(rollout_id: str) -> tuple[RolloutState, str]:
        state, text = read(rollout_id)
        if len(saved_by_ticks) < races:  # a tick saves the rollout (its judge's memory) right after
            saved_by_ticks.append(store.save(Outcome(state=state), expected_version=state.version).version)
        return state, text

    monkeypatch.setattr(store, "get", get)
    if races == COMMAND_TRIES:  # it kept changing: refused, and nothing of the command saved
        with pytest.raises(Stale, match="changed since version"):
            run_command(store, rollout.id, Command.PAUSE, actor="test")
        assert not read(rollout.id)[0].paused
        return
    paused = run_command(store, rollout.id, Command.PAUSE, actor="test")
    assert paused.paused and paused.version == saved_by_ticks[-1] + 1


GATED = SPEC.replace("  analysis:", "  gates:\n    start: [{policy: POLICY}]\n  analysis:")
ALLOW = 'package modelcanary.policies.mine\n\nimport rego.v1\n\ndeny contains msg if {\n\tfalse\n\tmsg := "never"\n}\n'


def test_a_confined_start_reads_policy_files_only_inside_the_policy_folder(
    store: SqlStore, registry: MlflowRegistry, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "mine.rego").write_text(ALLOW)
    (tmp_path / "secret.rego").write_text(ALLOW.replace("never", "the server's own secret"))
    caller = tmp_path / "spec.yaml"
    caller.write_text("the caller's")
    for ref, folder, why in [
        (str(tmp_path / "secret.rego"), str(policies), "only files inside the server's policy folder"),
        ("../secret.rego", str(policies), "only files inside the server's policy folder"),
        ("mine.rego", None, "this server reads no policy files"),
    ]:
        with pytest.raises(SpecError, match=why) as refused:
            start_rollout(
                store,
                registry,
                GATED.replace("BASELINE", "models:/fraud/1")
                .replace("CANDIDATE", "models:/fraud/2")
                .replace("POLICY", ref),
                source=str(caller),  # a file beside secret.rego: a caller's source names no folder to read from
                actor="test",
                policy_dir=folder,
                confined=True,
            )
        assert "the server's own secret" not in str(refused.value)
    assert store.list_rollouts() == []
    gated = GATED.replace("BASELINE", "models:/fraud/1").replace("CANDIDATE", "models:/fraud/2")
    started = start_rollout(
        store,
        registry,
        gated.replace("POLICY", "mine.rego"),
        source="api",
        actor="test",
        policy_dir=str(policies),
        confined=True,
    )
    assert started.policies == {"mine.rego": ALLOW}


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
def test_an_endpoint_of_the_longest_name_starts_and_runs(store_url: str, registry: MlflowRegistry) -> None:
    """The rollout's id began with the whole endpoint name: past 41 characters it overflowed the
    id's column (64), and PostgreSQL refused the start with a store error."""
    endpoint = "e" * 200
    text = spec("v2+http://127.0.0.1:9/models/a", "v2+http://127.0.0.1:9/models/b").replace("fraud", endpoint)
    store = SqlStore(store_url)
    try:
        state = start_rollout(store, registry, text, source="test", actor="test")
        assert len(state.id) <= 64 and state.id.startswith("e" * 40 + "-") and state.endpoint == endpoint
        Controller(store=store, registry=registry).tick()
        assert store.get(state.id)[0].phase is Phase.CANARY
        assert store.routes()[endpoint].candidate is not None
    finally:
        store.close()
