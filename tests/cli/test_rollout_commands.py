"""Every rollout command, once on a local store and once through the control API on a real server:
the same scenario gives the same exit codes and the same words."""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import Target, target_for

from modelcanary.domain.phases import Phase
from modelcanary.domain.state import Outcome, Transition
from modelcanary.engine.decide import Command

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
      - {weight: 50, minRequests: 10, minDuration: 1s}
  analysis:
    metrics: [{kind: error_rate}]
"""


@pytest.fixture(params=["local", "remote"])
def target(request: pytest.FixtureRequest, tmp_path: Path, mlflow_registry: Any) -> Iterator[Target]:
    with target_for(request.param, tmp_path, mlflow_registry.uri) as found:
        yield found


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "rollout.yaml"
    path.write_text(SPEC)
    return path


def _tick(target: Target) -> None:
    """One controller tick on the target's store (the server's, remotely)."""
    from modelcanary.adapters.registry.mlflow import MlflowRegistry
    from modelcanary.controller.loop import Controller

    Controller(store=target.store, registry=MlflowRegistry(target.registry_uri)).tick()


def _await_approval(target: Target, rollout_id: str) -> None:
    """Put a canary rollout where an approval gate would: awaiting approval at its step."""
    state, _ = target.store.get(rollout_id)
    waiting = state.model_copy(update={"phase": Phase.AWAITING_APPROVAL, "reason": "step 1 passed; approve to go on"})
    transition = Transition(
        at=time.time(),
        source=state.phase,
        target=Phase.AWAITING_APPROVAL,
        step=state.step,
        weight=state.weight,
        paused=False,
        reason=waiting.reason,
        actor="controller",
    )
    target.store.save(Outcome(state=waiting, transition=transition), expected_version=state.version)


def test_one_scenario_every_command(target: Target, spec_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("weight: 5,", "weight: 500,"))
    refused = target.run("rollout", "start", str(bad))
    assert refused.exit_code == 2, refused.output
    assert f"invalid rollout spec {bad}" in refused.stderr
    assert "spec.traffic.steps[0].weight (line 10): Input should be less than or equal to 100" in refused.stderr
    assert "Traceback" not in refused.output
    assert target.store.list_rollouts() == []

    started = target.run("rollout", "start", str(spec_file))
    assert started.exit_code == 0, started.output
    rollout_id = started.stdout.strip()
    assert f"started {rollout_id}: models:/fraud/1 -> models:/fraud/2 on endpoint fraud" in started.stderr
    busy = target.run("rollout", "start", str(spec_file))
    assert busy.exit_code == 2 and f"already has an active rollout: {rollout_id}" in busy.stderr

    paused = target.run("rollout", "pause", rollout_id)
    assert (paused.exit_code, paused.stdout) == (0, f"{rollout_id}: paused by {target.actor}\n")
    again = target.run("rollout", "pause", rollout_id)
    assert again.exit_code == 2 and f"error: rollout {rollout_id} is already paused" in again.stderr
    assert target.run("rollout", "resume", rollout_id).exit_code == 0
    early = target.run("rollout", "promote", rollout_id)
    assert early.exit_code == 2 and "has not started yet; it cannot be promoted" in early.stderr

    _tick(target)  # pending -> step 1 at 5%
    unasked = target.run("rollout", "approve", rollout_id)
    assert unasked.exit_code == 2 and f"rollout {rollout_id} is canary, not awaiting approval" in unasked.stderr
    _await_approval(target, rollout_id)
    approved = target.run("rollout", "approve", rollout_id)
    assert approved.exit_code == 0, approved.output
    assert approved.stdout == f"{rollout_id}: approved by {target.actor}: step 2 of 2: candidate at 50%\n"

    status = target.run("rollout", "status", rollout_id, "--json")
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert (report["rollout"]["phase"], report["rollout"]["weight"]) == ("canary", 50.0)
    assert [metric["name"] for metric in report["judgement"]["metrics"]] == ["error-rate"]
    assert report["requests"] == {"baseline": 0, "candidate": 0}
    assert [(entry["target"], entry["actor"]) for entry in report["history"]] == [
        ("pending", target.actor),
        ("pending", target.actor),
        ("canary", "controller"),
        ("awaiting_approval", "controller"),
        ("canary", target.actor),
    ]
    running = [(entry["id"], entry["phase"]) for entry in json.loads(target.run("rollout", "list", "--json").stdout)]
    assert running == [(rollout_id, "canary")]
    assert [entry["id"] for entry in json.loads(target.run("rollout", "list", "--active", "--json").stdout)] == [
        rollout_id
    ]
    shown = target.run("rollout", "status", rollout_id)
    assert shown.exit_code == 0
    assert "step 2, candidate at 50%" in shown.stdout and "the judge rolls back at 1/alpha" in shown.stdout

    promoted = target.run("rollout", "promote", rollout_id, "--reason", "INC-42 fixed by v2")
    assert promoted.stdout == f"{rollout_id}: promoted by {target.actor}: INC-42 fixed by v2\n"
    assert promoted.exit_code == 0
    assert target.run("rollout", "status", rollout_id).exit_code == 0
    assert target.run("rollout", "status", rollout_id, "--watch").exit_code == 0  # ended: one frame, exit 0
    ended = target.run("rollout", "abort", rollout_id)
    assert ended.exit_code == 2 and "has ended (promoted); it cannot be aborted" in ended.stderr

    listed = target.run("rollout", "list", "--json")
    assert [(entry["id"], entry["phase"]) for entry in json.loads(listed.stdout)] == [(rollout_id, "promoted")]
    assert "judge_memory" not in json.loads(listed.stdout)[0]
    assert json.loads(target.run("rollout", "list", "--active", "--json").stdout) == []
    assert rollout_id in target.run("rollout", "list").stdout
    assert target.run("rollout", "spec", rollout_id).stdout == SPEC

    missing = target.run("rollout", "status", "nope")
    assert missing.exit_code == 2 and "no rollout 'nope'" in missing.stderr

    verified = target.run("audit", "verify")
    assert verified.exit_code == 0, verified.output
    events = [json.loads(line) for line in target.run("audit", "export", "--rollout", rollout_id).stdout.splitlines()]
    assert [(event["action"], event["actor"]) for event in events] == [
        ("rollout.create", target.actor),
        ("rollout.pending", target.actor),  # paused
        ("rollout.pending", target.actor),  # resumed
        ("rollout.canary", "controller"),
        ("rollout.awaiting_approval", "controller"),
        ("rollout.canary", target.actor),
        ("rollout.promoted", target.actor),
    ]
    every = [json.loads(line) for line in target.run("audit", "export").stdout.splitlines()]  # tokens' too
    assert [event for event in every if event["rollout_id"] == rollout_id] == events
    assert verified.stdout == f"audit chain verified: {len(every)} events, head {every[-1]['hash']}\n"


@pytest.fixture
def operator(target: Target) -> Iterator[Callable[[Command], None]]:
    """``operator(command)`` starts a thread that waits for a rollout to be pending, lets the
    controller start it, then runs ``command`` on it: something for ``--wait`` to wait for."""
    from modelcanary.controller.operations import run_command

    threads: list[threading.Thread] = []
    stop = threading.Event()

    def act(command: Command) -> None:
        while not stop.is_set():
            active = target.store.list_rollouts(active=True)
            if active and active[0].phase is Phase.PENDING:
                _tick(target)
                run_command(target.store, active[0].id, command, actor="test:operator")
                return
            time.sleep(0.02)

    def start(command: Command) -> None:
        threads.append(threading.Thread(target=act, args=(command,), daemon=True))
        threads[-1].start()

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)


def test_wait_and_watch_exit_with_the_outcome(
    target: Target, spec_file: Path, operator: Callable[[Command], None]
) -> None:
    waiting = target.run("rollout", "start", str(spec_file), "--wait", "--timeout", "0.2", "--interval", "0.05")
    assert waiting.exit_code == 3, waiting.output
    rollout_id = waiting.stdout.strip()
    assert f"{rollout_id} still pending at 0% (step 0): waiting for the controller" in waiting.stderr
    watched = target.run("rollout", "status", rollout_id, "--watch", "--timeout", "0.1", "--interval", "0.05")
    assert watched.exit_code == 3 and f"{rollout_id} still pending" in watched.stderr
    assert target.run("rollout", "status", rollout_id).exit_code == 0  # still running is fine without --watch
    assert target.run("rollout", "abort", rollout_id).exit_code == 0
    aborted = target.run("rollout", "status", rollout_id, "--watch", "--json")
    assert aborted.exit_code == 1 and json.loads(aborted.stdout)["rollout"]["phase"] == "aborted"

    operator(Command.PROMOTE)
    promoted = target.run("rollout", "start", str(spec_file), "--wait", "--interval", "0.05")
    assert promoted.exit_code == 0, promoted.output
    assert "promoted at 100%: promoted by test:operator" in promoted.stderr

    # the endpoint serves v2 now: a rollout from v1 again is refused, one from v2 goes on
    assert "endpoint 'fraud' serves models:/fraud/2" in target.run("rollout", "start", str(spec_file)).stderr
    back = spec_file.with_name("back.yaml")
    back.write_text(SPEC.replace("fraud/1", "fraud/x").replace("fraud/2", "fraud/1").replace("fraud/x", "fraud/2"))
    operator(Command.ABORT)
    rolled = target.run("rollout", "start", str(back), "--wait", "--interval", "0.05")
    assert rolled.exit_code == 1, rolled.output
    assert "aborted at 0%: aborted by test:operator" in rolled.stderr
    rollout_id = rolled.stdout.strip()
    assert target.run("rollout", "status", rollout_id).exit_code == 1


def test_a_local_command_is_audited_as_the_user_it_runs_as_where_the_environment_names_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under cron or in a container no USER or LOGNAME is set: it was audited as cli:unknown."""
    import pwd

    from modelcanary.cli.options import local_actor

    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    assert local_actor() == f"cli:{pwd.getpwuid(os.getuid()).pw_name}"
    monkeypatch.setenv("USER", "ada")
    assert local_actor() == "cli:ada"


def test_help_documents_the_exit_codes() -> None:
    from click.testing import CliRunner

    from modelcanary.cli.main import cli

    for command in ("start", "status"):
        shown = CliRunner().invoke(cli, ["rollout", command, "--help"])
        assert "Exit codes: 0 promoted or command accepted; 1 rolled back or aborted; 2 usage" in shown.stdout


def test_an_unknown_model_is_refused_and_saves_nothing(target: Target, tmp_path: Path) -> None:
    spec = tmp_path / "unknown.yaml"
    spec.write_text(SPEC.replace("models:/fraud/2", "models:/fraud/99"))
    result = target.run("rollout", "start", str(spec))
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert "models:/fraud/99" in result.stderr
    assert target.store.list_rollouts() == []


def test_watch_shows_the_evidence_until_the_rollout_ends(
    target: Target, spec_file: Path, operator: Callable[[Command], None]
) -> None:
    rollout_id = target.run("rollout", "start", str(spec_file)).stdout.strip()
    operator(Command.PROMOTE)
    watched = target.run("rollout", "status", rollout_id, "--watch", "--interval", "0.05")
    assert watched.exit_code == 0, watched.output
    # not a terminal here: the live view leaves only its last frame
    assert "promoted, step 1, candidate at 100%" in watched.stdout
    assert "(the judge rolls back at 1/alpha = 22.2)" in watched.stdout
    assert re.search(r"error-rate +░{20}│ +1\n", watched.stdout), watched.stdout
    assert "promoted by test:operator" in watched.stdout


def test_reasons_with_brackets_show_as_written(target: Target, spec_file: Path) -> None:
    """A reason is stored and shown to every operator after: brackets in it are text, not Rich
    markup (``[/]`` made every later list and status fail; ``[ops-12]`` vanished)."""
    rollout_id = target.run("rollout", "start", str(spec_file)).stdout.strip()
    assert target.run("rollout", "pause", rollout_id, "--reason", "see [/] notes").exit_code == 0
    assert target.run("rollout", "resume", rollout_id, "--reason", "ticket [ops-12]").exit_code == 0
    wide: dict[str, str | None] = {"COLUMNS": "250"}  # no wrapping inside the reasons
    listed = target.run("rollout", "list", env=wide)
    assert listed.exit_code == 0, listed.output
    assert "ticket [ops-12]" in listed.stdout
    shown = target.run("rollout", "status", rollout_id, env=wide)
    assert shown.exit_code == 0, shown.output
    assert "see [/] notes" in shown.stdout and "ticket [ops-12]" in shown.stdout


def test_audit_verify_prints_the_head_it_verified(target: Target, spec_file: Path) -> None:
    """An event appended while the verify walks the chain is not in the chain it verified, and its
    hash is not the head it prints, though the events listed after the walk end with it."""
    import sqlalchemy as sa

    rollout_id = target.run("rollout", "start", str(spec_file)).stdout.strip()
    verified = target.store.audit_events()
    walks: list[str] = []

    def append_during_the_walk(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().startswith("SELECT audit.id"):
            walks.append(statement)
            if len(walks) == 1:
                target.store.append_audit(at=time.time(), actor="ops", action="note", rollout_id=rollout_id, detail={})

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", append_during_the_walk)
    try:
        checked = target.run("audit", "verify")
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", append_during_the_walk)
    assert len(walks) == 2 and len(target.store.audit_events()) == len(verified) + 1  # the walk, then the list
    assert checked.exit_code == 0, checked.output
    assert checked.stdout == f"audit chain verified: {len(verified)} events, head {verified[-1]['hash']}\n"


def test_audit_export_and_a_tampered_chain(target: Target, spec_file: Path, tmp_path: Path) -> None:
    rollout_id = target.run("rollout", "start", str(spec_file)).stdout.strip()
    assert target.run("rollout", "abort", rollout_id).exit_code == 0
    out = tmp_path / "audit.jsonl"
    exported = target.run("audit", "export", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["action"], e["rollout_id"]) for e in events if e["rollout_id"]] == [
        ("rollout.create", rollout_id),
        ("rollout.aborted", rollout_id),
    ]
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in itertools.pairwise(events))
    assert f"{len(events)} events to {out}; head {events[-1]['hash']}" in exported.stderr
    assert target.run("audit", "export").stdout == out.read_text()  # to standard output, the same lines

    from modelcanary.adapters.store.schema import audit

    edited = events[-2]
    with target.store.engine.begin() as conn:
        conn.execute(audit.update().where(audit.c.id == edited["id"]).values(actor="cli:mallory"))
    broken = target.run("audit", "verify")
    assert broken.exit_code == 1, broken.output
    assert f"BROKEN at event id {edited['id']} (position {len(events) - 2} in id order, from 0; " in broken.stdout
    assert "hash does not match" in broken.stdout


def test_a_reason_that_is_no_text_or_too_long_and_an_unknown_rollout_are_refused(
    target: Target, spec_file: Path
) -> None:
    """On a local store a reason of bytes that are not UTF-8 failed the save with a traceback and one
    of any length was saved (the API takes 2,000 characters); an audit export of a mistyped rollout
    id printed nothing, as if it had no events (the API: 404). Found by review."""
    rollout_id = target.run("rollout", "start", str(spec_file)).stdout.strip()
    for reason, why in (("bad \udcff byte", "holds bytes that are not UTF-8 text"), ("x" * 2001, "at most 2000")):
        refused = target.run("rollout", "pause", rollout_id, "--reason", reason)
        assert refused.exit_code == 2 and why in refused.output and "Traceback" not in refused.output
    assert not target.store.get(rollout_id)[0].paused
    unknown = target.run("audit", "export", "--rollout", "nope")
    assert unknown.exit_code == 2 and "no rollout 'nope'" in unknown.output
