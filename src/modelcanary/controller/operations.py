"""What operators do: start a rollout from a spec; pause, resume, abort, promote or approve one."""

from __future__ import annotations

import time
import uuid
from typing import Protocol

from modelcanary.domain.spec import load_spec
from modelcanary.domain.state import RolloutState, remote_version
from modelcanary.engine.analysis import pair
from modelcanary.engine.decide import Command, apply_command, new_state
from modelcanary.ports import Registry, RolloutStore, TelemetryStore


def start_rollout(
    store: RolloutStore, registry: Registry, spec_text: str, *, source: str, actor: str, now: float | None = None
) -> RolloutState:
    """Validate the spec, resolve both models to concrete versions, and save the rollout as pending.
    Raises ``SpecError``, ``RegistryError`` or ``Conflict`` and then saves nothing."""
    spec = load_spec(spec_text, source=source)
    # a model served elsewhere (v2+http://, ray://) is its ref; the registry resolves the rest
    baseline = remote_version(spec.spec.baseline) or registry.resolve(spec.spec.baseline)
    candidate = remote_version(spec.spec.candidate) or registry.resolve(spec.spec.candidate)
    at = time.time() if now is None else now
    rollout_id = f"{spec.spec.endpoint}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(at))}-{uuid.uuid4().hex[:6]}"
    state = new_state(spec, rollout_id=rollout_id, baseline=baseline, candidate=candidate, now=at)
    store.create(state, spec_text, actor=actor, spec_json=spec.model_dump_json(by_alias=True))
    return state


class CommandStore(RolloutStore, TelemetryStore, Protocol):
    pass


def run_command(
    store: CommandStore, rollout_id: str, command: Command, *, actor: str, now: float | None = None
) -> RolloutState:
    """Apply an operator's command and save it with compare-and-set (``Conflict`` if the rollout
    changed meanwhile, or the command does not fit its phase)."""
    state, text = store.get(rollout_id)
    requests = pair(store.read_telemetry(rollout_id)).candidate.requests
    outcome = apply_command(
        state,
        load_spec(text),
        command,
        actor=actor,
        now=time.time() if now is None else now,
        candidate_requests=requests,
    )
    return store.save(outcome, expected_version=state.version)
