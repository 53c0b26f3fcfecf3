"""What the rollout and audit commands do, behind one interface with two implementations: on a
store here (``LocalOperations``) or through a control API (``cli.remote.RemoteOperations``). The
commands are written once against ``Operations``, so local and remote runs tell the same story."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from modelcanary.domain.state import RolloutState

if TYPE_CHECKING:
    from modelcanary.adapters.store.sql import SqlStore
    from modelcanary.cli.workspace import Workspace
    from modelcanary.controller.report import Report
    from modelcanary.engine.decide import Command


@dataclass(frozen=True, kw_only=True)
class BrokenLink:
    """Where the audit chain first fails to verify, and why."""

    id: int
    position: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class AuditCheck:
    """The chain's verdict. A control API tells a token limited to endpoints only whether the chain
    holds: ``count`` and ``broken`` are then None, whatever ``ok`` says."""

    ok: bool
    count: int | None
    broken: BrokenLink | None


class Operations(Protocol):
    """Every operator action. Each raises a ``ModelcanaryError`` whose text is what the operator reads."""

    def start(self, spec_text: str, *, source: str) -> RolloutState:
        """Validate the spec, resolve its models and save the rollout as pending."""
        ...

    def rollouts(self, *, active_only: bool = False) -> list[RolloutState]:
        """Rollouts, newest first."""
        ...

    def rollout(self, rollout_id: str) -> tuple[RolloutState, str]:
        """One rollout's state and its spec's YAML text."""
        ...

    def report(self, rollout_id: str) -> Report:
        """State, history, telemetry and judgement, as ``controller.report`` tells them."""
        ...

    def command(self, rollout_id: str, command: Command, *, reason: str | None = None) -> RolloutState:
        """Pause, resume, abort, promote or approve, with the operator's ``reason`` (added to the
        history's and the audit log's); ``Conflict`` when it does not fit the phase."""
        ...

    def audit_events(self, rollout_id: str | None = None) -> list[dict[str, Any]]:
        """Audit events, oldest first, with their hashes."""
        ...

    def verify_audit(self) -> AuditCheck: ...

    def close(self) -> None: ...


class LocalOperations:
    """On the store and registry of a work folder (or the URLs given), audited as ``actor``."""

    def __init__(self, workspace: Workspace, *, actor: str) -> None:
        self.workspace = workspace
        self.actor = actor
        self._store: SqlStore | None = None

    @property
    def store(self) -> SqlStore:
        if self._store is None:  # opened on first use: `--help` and usage errors touch nothing
            self._store = self.workspace.store()
        return self._store

    def start(self, spec_text: str, *, source: str) -> RolloutState:
        from modelcanary.controller.operations import start_rollout

        return start_rollout(self.store, self.workspace.registry(), spec_text, source=source, actor=self.actor)

    def rollouts(self, *, active_only: bool = False) -> list[RolloutState]:
        return self.store.list_rollouts(active=True if active_only else None)

    def rollout(self, rollout_id: str) -> tuple[RolloutState, str]:
        return self.store.get(rollout_id)

    def report(self, rollout_id: str) -> Report:
        from modelcanary.controller.report import rollout_report

        return rollout_report(self.store, rollout_id)

    def command(self, rollout_id: str, command: Command, *, reason: str | None = None) -> RolloutState:
        from modelcanary.controller.operations import run_command

        return run_command(self.store, rollout_id, command, actor=self.actor, reason=reason)

    def audit_events(self, rollout_id: str | None = None) -> list[dict[str, Any]]:
        if rollout_id is not None:
            self.store.get(rollout_id)  # NotFound, as through the API: a mistyped id is no empty log
        return self.store.audit_events(rollout_id)

    def verify_audit(self) -> AuditCheck:
        count, broken = self.store.verify_audit()
        if broken is None:
            return AuditCheck(ok=True, count=count, broken=None)
        link = BrokenLink(id=broken.id, position=broken.position, reason=broken.reason)
        return AuditCheck(ok=False, count=count, broken=link)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
