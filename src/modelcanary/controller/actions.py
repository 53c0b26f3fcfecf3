"""A controller's side effects: the actions its saved decisions queued in the store's outbox
(registry alias moves and tags, webhooks), run after the decisions are saved, each retried after
a backoff until it works (a notification until it is given up), and all of them stopped once the
lease passes to another controller. ``ActionThread`` runs them on a thread of their own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from modelcanary.domain.errors import Fenced, MissingVersion, ModelcanaryError, RegistryError
from modelcanary.domain.state import Action, ActionKind

if TYPE_CHECKING:
    from modelcanary.ports import ActionQueue, Fence, Notifier, Registry

log = logging.getLogger("modelcanary.controller")


class SideEffects:
    """The side-effect methods of ``Controller`` (which brings the fields and the lease)."""

    if TYPE_CHECKING:
        store: ActionQueue
        registry: Registry
        clock: Callable[[], float]
        holder: str | None
        fence: Fence | None
        notifier: Notifier | None
        notify_attempts: int
        retry_backoff_s: float
        retry_backoff_max_s: float
        _retries: dict[int, tuple[int, float]]

        def _still_leading(self) -> bool: ...

    def run_actions(self) -> None:
        """Run pending side effects; one that fails, whatever it raised, stays pending, and those
        after it still run. It is tried again after an exponential backoff (1 s, 2 s, ... up to
        ``retry_backoff_max_s``): a registry or a receiver that is down, each call of which may take
        its whole timeout, must not hold every tick's decisions, nor be hammered every tick. A
        notification is given up after ``notify_attempts``; a registry action only when the version it
        acts on is gone from the registry (``MissingVersion``), never for an outage. The backoff
        is kept in memory: a restart tries at once. Stops once the lease passes to another
        controller, which runs the rest."""
        now = self.clock()
        pending = self.store.pending_actions()
        # of the alias moves pending for one alias, only the newest is made: each backs off on its
        # own, so after an outage an older promotion's move, retried later, put the alias back
        newest = {_alias_of(action): action_id for action_id, action in pending if action.kind is ActionKind.SET_ALIAS}
        for action_id, action in pending:
            next_try = self._retries.get(action_id, (0, now))[1]
            superseded = action.kind is ActionKind.SET_ALIAS and newest[_alias_of(action)] != action_id
            if now < next_try and not superseded:
                continue
            if not self._still_leading():
                return
            # the lease this action runs under: ``decide`` may lose it meanwhile, on another thread,
            # and a done-mark without a fence would then go unchecked
            fence = self.fence
            if self.holder is not None and fence is None:
                return
            error: str | None
            found: dict[str, Any] | None = None
            if superseded:  # recorded, not made
                self._retries.pop(action_id, None)
                name, alias = _alias_of(action)
                error, final = (
                    f"superseded: a later promotion moves {name}@{alias} (action {newest[name, alias]})",
                    True,
                )
            else:
                error, final, found = self._attempt(action_id, action, now)
            try:
                self.store.mark_done(action_id, error=error, fence=fence, final=final, found=found)
            except Fenced as exc:  # it ran, and runs again under the new leader: every action is idempotent
                log.warning("%s", exc)
                if self.fence == fence:  # not a lease the decisions' thread has taken again since
                    self.fence = None
                return

    def _attempt(self, action_id: int, action: Action, now: float) -> tuple[str | None, bool, dict[str, Any] | None]:
        """Run one action: its error (None if it worked), whether that is final (a notification
        given up), and what it found (``_run``); a failure that is not final is tried again after
        its backoff."""
        try:
            found = self._run(action)
        except Exception as exc:
            ours = isinstance(exc, ModelcanaryError)
            reason = str(exc) if ours else f"{type(exc).__name__}: {exc}"
            failures = self._retries.get(action_id, (0, now))[0] + 1
            # an alias move or a tag on a version the registry no longer holds (deleted) can never
            # be made: retried for ever, it went unaudited, and the endpoint could not start again
            missing = isinstance(exc, MissingVersion)
            final = missing or (action.kind is ActionKind.NOTIFY and failures >= self.notify_attempts)
            if final:
                self._retries.pop(action_id, None)
                gone = f"action {action.key}: the version is gone from the registry, giving up"
                what = gone if missing else f"notification {action.key} failed {failures} times, giving up"
            else:
                # the doubling stops at the cap: 2 ** 1024 seconds is no float, and raised here, at
                # the 1,025th failure (17 h of an outage at a 60 s cap), it stopped every action after
                wait = min(self.retry_backoff_s * 2 ** min(failures - 1, 60), self.retry_backoff_max_s)
                self._retries[action_id] = (failures, now + wait)
                what = f"action {action.key} failed, will retry"
            # a foreign error is a bug, or an adapter letting one through: its traceback is logged
            (log.warning if ours else log.exception)("%s: %s", what, reason)
            return (f"gave up after {failures} attempts: {reason}" if final else reason), final, None
        self._retries.pop(action_id, None)
        return None, False, found

    def _run(self, action: Action) -> dict[str, Any] | None:
        """Make the action's effect; for an alias move, what the alias named before it (None where
        it named nothing, or could not be read), for its audit event: a move made by hand since the
        rollout started, which a promotion overwrites, shows there."""
        payload = action.payload
        if action.kind is ActionKind.SET_ALIAS:
            name, alias = _alias_of(action)
            try:
                before: str | None = self.registry.resolve(f"models:/{name}@{alias}").version
            except RegistryError:  # no such alias yet; an outage fails the move itself, next
                before = None
            self.registry.set_alias(name, alias, payload["version"])
            if before == payload["version"]:  # a restart between an earlier move and its done-mark, say
                why = "it named this version when this attempt read it: moved by an attempt cut short or by hand"
                return {"before": before, "before_unknown": why}
            return {"before": before}
        if action.kind is ActionKind.TAG_VERSION:
            self.registry.set_tag(payload["name"], payload["version"], payload["tag"], payload["value"])
        elif action.kind is ActionKind.NOTIFY:
            if self.notifier is None:
                from modelcanary.adapters.notify.webhook import WebhookNotifier

                self.notifier = WebhookNotifier()
            self.notifier.deliver(dict(payload))
        return None


def _alias_of(action: Action) -> tuple[str, str]:
    return str(action.payload["name"]), str(action.payload["alias"])


class Acting(Protocol):
    def actions_or_hold(self) -> None:
        """Run the pending side effects; whatever fails is logged, and nothing stops."""


class ActionThread:
    """A controller's side effects (registry alias moves and tags, webhooks) on a thread of their
    own, so that a registry or a receiver that hangs until its timeout never delays a decision: in
    the tick, one dead webhook held every rollout's next judgement (a rollback among them) by up to
    its 5 s deadline, and a dead registry by its retries, once per backoff. It runs the pending
    actions whenever woken (after each tick's decisions are saved) and at least every
    ``interval_s``, until ``stop``."""

    def __init__(self, controller: Acting, interval_s: float) -> None:
        self.controller = controller
        self.interval_s = interval_s
        self._due = threading.Event()
        self._stopping = False
        # a daemon: a process that exits without ``stop`` is not held up by it; an action cut
        # short stays pending in the store, and the next leader runs it
        self._thread = threading.Thread(target=self._loop, name="modelcanary-actions", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._due.set()

    def stop(self, wait_s: float) -> None:
        """Run no more actions; wait up to ``wait_s`` for the one in progress to finish."""
        self._stopping = True
        self._due.set()
        self._thread.join(wait_s)

    def _loop(self) -> None:
        while not self._stopping:
            self._due.wait(self.interval_s)
            self._due.clear()
            if not self._stopping:
                self.controller.actions_or_hold()
