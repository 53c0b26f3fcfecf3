"""What operators do: start a rollout from a spec; pause, resume, abort, promote or approve one."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from modelcanary.controller.gates import default_engine, evaluate_gate, gated
from modelcanary.domain.access import Role
from modelcanary.domain.errors import Conflict, Forbidden, MissingVersion, PolicyDenied, SpecError, Stale
from modelcanary.domain.gates import Gate
from modelcanary.domain.spec import RolloutSpec, load_spec, locate, saved_spec
from modelcanary.domain.state import ModelVersion, RolloutState, remote_version
from modelcanary.engine.analysis import pair
from modelcanary.engine.decide import Command, aborted, apply_command, new_state, refuse_ended, required_role
from modelcanary.ports import AuditLog, PolicyEngine, Registry, RolloutStore, RouteSource, TelemetryStore

log = logging.getLogger("modelcanary.controller")


class StartStore(RolloutStore, RouteSource, AuditLog, Protocol):
    pass


def start_rollout(
    store: StartStore,
    registry: Registry,
    spec_text: str,
    *,
    source: str,
    actor: str,
    now: float | None = None,
    policies: PolicyEngine | None = None,
    policy_dir: str | None = None,
    confined: bool = False,
) -> RolloutState:
    """Validate the spec, resolve both models to concrete versions, read their lineage from the
    registry, load the gate policies, ask the start gate, and save the rollout as pending.

    Policy files are read relative to ``policy_dir`` (default: the folder of ``source`` when it is
    a file, else the working directory). ``confined`` (the control API's starts, whose spec and
    ``source`` come from the caller): only files inside ``policy_dir`` are read, and none without
    one, so a caller cannot have the server read, and show, any other file on its disk.

    Raises ``SpecError``, ``RegistryError``, ``Conflict`` or ``PolicyDenied`` and then saves no
    rollout; a denial is audited as ``rollout.refused``."""
    spec = load_spec(spec_text, source=source)
    # a model served elsewhere (v2+http://, ray://) is its ref; the registry resolves the rest
    baseline = remote_version(spec.spec.baseline) or registry.resolve(spec.spec.baseline)
    _check_serving(store, spec, baseline, registry)
    candidate = remote_version(spec.spec.candidate) or registry.resolve(spec.spec.candidate)
    if candidate.uri == baseline.uri:
        why = f"{spec.spec.candidate} is {candidate.uri}, the baseline already: a rollout compares two models"
        raise SpecError([(locate(spec_text, ("spec", "candidate")), why)], source=source)
    at = time.time() if now is None else now
    # at most 63 characters, the store's column being 64: a long endpoint name is cut in the id
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(at))
    rollout_id = f"{spec.spec.endpoint[:40]}-{stamp}-{uuid.uuid4().hex[:6]}"
    state = new_state(spec, rollout_id=rollout_id, baseline=baseline, candidate=candidate, now=at)
    # the registry knows only its own versions: a remote model's ref names no run in it (its
    # version number, if any, is the remote server's), so it has no lineage here
    state = state.model_copy(
        update={
            "baseline_info": registry.describe(baseline) if baseline.ref is None else None,
            "candidate_info": registry.describe(candidate) if candidate.ref is None else None,
        }
    )
    if any(spec.spec.gates.policies(gate.value) for gate in Gate):
        engine = policies or default_engine()
        folder = policy_dir or (str(Path(source).parent) if Path(source).is_file() and not confined else None)
        loaded = _load_policies(engine, spec, spec_text, source, folder, confined=confined)
        state = state.model_copy(update={"policies": loaded})
        if spec.spec.gates.start:
            decision = evaluate_gate(engine, Gate.START, spec=spec, state=state, judgement=None, actor=actor, now=at)
            if not decision.allowed:
                detail = {
                    "endpoint": state.endpoint,
                    "baseline": state.baseline.uri,
                    "candidate": state.candidate.uri,
                    "gate": decision.model_dump(mode="json"),
                }
                store.append_audit(at=at, actor=actor, action="rollout.refused", rollout_id=None, detail=detail)
                raise PolicyDenied("start", [(denial.policy, denial.message) for denial in decision.denials])
    store.create(state, spec_text, actor=actor, spec_json=spec.model_dump_json(by_alias=True))
    return state


def _outside(ref: str, folder: str | None) -> str | None:
    """Why a confined start may not read policy ``ref`` (None: it may, a built-in or a file inside
    ``folder``)."""
    if not ref.endswith(".rego"):
        return None
    if folder is None:
        return f"policy file {ref!r}: this server reads no policy files (none was given --policy-dir); use a built-in"
    inside = Path(folder).resolve()
    if Path(ref).is_absolute() or not (inside / ref).resolve().is_relative_to(inside):
        return f"policy file {ref!r}: only files inside the server's policy folder are read"
    return None


def _check_serving(store: RouteSource, spec: RolloutSpec, baseline: ModelVersion, registry: Registry) -> None:
    """Refuse (``Conflict``) a baseline other than the model the endpoint serves since its last
    rollout: the new rollout would put that model back on most of the traffic at once, unjudged.
    It happens when a promotion's alias move is still pending (``@champion`` still names the model
    it replaced) or the spec names the wrong baseline. An endpoint no rollout has served is free,
    and so is one whose served version is gone from the registry (deleted): no gateway can load it
    again, and nothing else could ever start there."""
    serving = store.routes().get(spec.spec.endpoint)
    if serving is None or serving.baseline.uri == baseline.uri:
        return
    if serving.baseline.in_registry:
        try:
            registry.resolve(serving.baseline.uri)
        except MissingVersion:
            log.warning(
                "endpoint %s serves %s, which the registry no longer holds: starting from %s",
                spec.spec.endpoint,
                serving.baseline.uri,
                baseline.uri,
            )
            return
    raise Conflict(
        f"endpoint {spec.spec.endpoint!r} serves {serving.baseline.uri}, but the spec's baseline "
        f"{spec.spec.baseline!r} is {baseline.uri}; a rollout starts from what the endpoint serves "
        "(a promotion's alias move may still be pending: start again once the controller has made it)"
    )


def _load_policies(
    engine: PolicyEngine, spec: RolloutSpec, text: str, source: str, folder: str | None, *, confined: bool
) -> dict[str, str]:
    """Every gate policy's source by its ref; a ``SpecError`` naming each one that cannot be read or
    does not compile, at its line."""
    sources: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for gate in Gate:
        for index, ref in enumerate(spec.spec.gates.policies(gate.value)):
            if ref.policy in sources:
                continue
            refused = _outside(ref.policy, folder) if confined else None
            if refused:
                problems.append((locate(text, ("spec", "gates", gate.value, index)), refused))
                continue
            try:
                sources[ref.policy] = engine.source(ref.policy, relative_to=folder)
            except ValueError as exc:
                problems.append((locate(text, ("spec", "gates", gate.value, index)), str(exc)))
    if problems:
        raise SpecError(problems, source=source)
    return sources


COMMAND_TRIES = 5  # compare-and-sets a command may lose to the controller's saves before it is refused


class CommandStore(RolloutStore, TelemetryStore, AuditLog, Protocol):
    pass


def run_command(
    store: CommandStore,
    rollout_id: str,
    command: Command,
    *,
    actor: str,
    now: float | None = None,
    reason: str | None = None,
    role: Role | None = None,
    policies: Callable[[], PolicyEngine] = default_engine,
) -> RolloutState:
    """Apply an operator's command and save it with compare-and-set (``Conflict`` if the command
    does not fit the rollout's phase, ``Stale`` if the rollout kept changing). The operator's ``reason``, if
    given, is added to the one the history and the audit log record. A promote or an approve
    crosses the gates a controller's advance would; a denial raises ``PolicyDenied``, audited as
    ``rollout.command_refused``, and changes nothing. ``role``, the caller's, is checked against
    what the command needs on the very state it saves (an approval step's role: ``Forbidden``);
    None checks nothing (the CLI on a local store, which holds the store itself).

    The controller saves a rollout at every look with new data, so the compare-and-set may lose
    to a tick: the command is then applied again to the state read afresh (and checked again
    against it, role and phase and gates), up to ``COMMAND_TRIES`` times, rather than refused
    for a change the operator never saw."""

    def once() -> RolloutState:
        return _command_once(
            store, rollout_id, command, actor=actor, now=now, reason=reason, role=role, policies=policies
        )

    for _ in range(COMMAND_TRIES - 1):
        try:
            return once()
        except Stale:
            continue
    return once()


def _command_once(
    store: CommandStore,
    rollout_id: str,
    command: Command,
    *,
    actor: str,
    now: float | None,
    reason: str | None,
    role: Role | None,
    policies: Callable[[], PolicyEngine],
) -> RolloutState:
    state, text = store.get(rollout_id)
    at = time.time() if now is None else now
    try:
        spec = saved_spec(text, store.specs([rollout_id])[rollout_id][1], source=f"rollout {rollout_id}")
    except SpecError as exc:
        # saved by a version that read it differently: the controller holds it at its weight, so
        # an abort, which needs nothing of the spec, must still take the candidate out
        refuse_ended(state, command)
        if command is not Command.ABORT:
            why = "this version cannot read the spec the rollout was saved with; abort it, which needs none"
            raise SpecError([*exc.problems, ("rollout", why)], source=exc.source) from exc
        return store.save(aborted(state, actor=actor, now=at, reason=reason), expected_version=state.version)
    needed = required_role(state, spec, command) if role is not None else None
    if role is not None and needed is not None and not role.allows(Role(needed)):
        what = "this approval step" if command is Command.APPROVE else "an approval step ahead"
        raise Forbidden(f"{what} needs the {needed} role; the caller is {role.value}")
    requests = pair(store.read_telemetry(rollout_id)).candidate.requests
    try:
        outcome = gated(
            lambda answers: apply_command(
                state, spec, command, actor=actor, now=at, candidate_requests=requests, gates=answers, reason=reason
            ),
            engine=policies,
            spec=spec,
            judgement=None,
            actor=actor,
            now=at,
        )
    except PolicyDenied as exc:
        detail = {"command": command.value, "gate": exc.gate, "denials": [list(denial) for denial in exc.denials]}
        store.append_audit(at=at, actor=actor, action="rollout.command_refused", rollout_id=rollout_id, detail=detail)
        raise
    return store.save(outcome, expected_version=state.version)
