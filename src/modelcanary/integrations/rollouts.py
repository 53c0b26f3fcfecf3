"""What every orchestrator integration does: start a rollout, read its phase, tell its outcome.

Integrations talk to the store and the registry directly (URLs given, like ``--store`` and
``--registry``), as the CLI does, so a pipeline needs no running control API.

>>> outcome = Outcome(rollout_id="fraud-1", phase="rolled_back", reason="rolled back: error-rate failed")
>>> outcome.ended, outcome.promoted
(True, False)
>>> outcome.check()
Traceback (most recent call last):
...
modelcanary.integrations.rollouts.RolloutFailed: rollout fraud-1 rolled_back: rolled back: error-rate failed
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelcanary.domain.errors import ModelcanaryError, SpecError
from modelcanary.domain.phases import Phase
from modelcanary.domain.state import RolloutState


class RolloutFailed(ModelcanaryError):
    """The rollout ended without promoting its candidate (rolled back or aborted)."""


class RolloutTimeout(ModelcanaryError):
    """The rollout was still running when the caller stopped waiting; it goes on without them."""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """A rollout's phase as a pipeline sees it; JSON-friendly, to pass between tasks."""

    rollout_id: str
    phase: str
    reason: str
    baseline: str = ""
    candidate: str = ""

    @classmethod
    def of(cls, state: RolloutState) -> Outcome:
        return cls(
            rollout_id=state.id,
            phase=state.phase.value,
            reason=state.reason,
            baseline=state.baseline.uri,
            candidate=state.candidate.uri,
        )

    @property
    def ended(self) -> bool:
        return Phase(self.phase).is_terminal()

    @property
    def promoted(self) -> bool:
        return self.phase == Phase.PROMOTED.value

    def check(self) -> Outcome:
        """Itself if promoted; ``RolloutFailed`` if it ended otherwise."""
        if self.ended and not self.promoted:
            raise RolloutFailed(f"rollout {self.rollout_id} {self.phase}: {self.reason}")
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def spec_text(spec: str | Path) -> tuple[str, str]:
    """``(YAML text, source name)`` from a path to a spec file or the spec's text itself. A string
    that can only be a path (one line, ending in .yaml or .yml, or without the ':' every spec has)
    must name a readable file."""
    if isinstance(spec, str) and "\n" in spec:
        return spec, "<spec>"
    try:
        return Path(spec).read_text(), str(spec)
    except OSError as exc:  # a one-line spec is no file either, and may be too long a name for one
        if isinstance(spec, Path) or spec.endswith((".yaml", ".yml")) or ":" not in spec:
            missing = isinstance(exc, FileNotFoundError)
            problem = f"no such spec file: {spec}" if missing else f"cannot read the spec file {spec}: {exc.strerror}"
            raise SpecError([("file", problem)], source=str(spec)) from exc
    return spec, "<spec>"


def start(spec: str | Path, *, store: str, registry: str, actor: str) -> Outcome:
    """Validate the spec, resolve its models and save the rollout (``SpecError``, ``RegistryError``,
    ``Conflict`` when the endpoint is busy)."""
    from modelcanary.adapters.registry.mlflow import MlflowRegistry
    from modelcanary.adapters.store.sql import SqlStore
    from modelcanary.controller.operations import start_rollout

    text, source = spec_text(spec)
    opened = SqlStore(store)
    try:
        return Outcome.of(start_rollout(opened, MlflowRegistry(registry), text, source=source, actor=actor))
    finally:
        opened.close()


class Reader:
    """Reads one store's rollouts; keep one open while polling."""

    def __init__(self, store: str) -> None:
        from modelcanary.adapters.store.sql import SqlStore

        self.store = SqlStore(store)

    def outcome(self, rollout_id: str) -> Outcome:
        state, _ = self.store.get(rollout_id)
        return Outcome.of(state)

    def close(self) -> None:
        self.store.close()


def wait(
    rollout_id: str,
    *,
    store: str,
    poll_interval_s: float = 10.0,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Poll until the rollout ends; its outcome (not checked). ``RolloutTimeout`` after ``timeout_s``."""
    reader = Reader(store)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while not (outcome := reader.outcome(rollout_id)).ended:
            if deadline is not None and time.monotonic() >= deadline:
                raise RolloutTimeout(f"rollout {rollout_id} still {outcome.phase} after {timeout_s:g}s")
            sleep(poll_interval_s)
        return outcome
    finally:
        reader.close()
