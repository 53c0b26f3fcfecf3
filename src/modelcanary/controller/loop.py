"""The control loop: for each active rollout, sum its telemetry, judge, decide, save; then run the
side effects the saved decisions asked for. Decisions are saved before any side effect, so a crash
between the two only leaves actions pending, and they run on the next tick. A long-running
controller runs the side effects on a thread of their own (``actions.ActionThread``), so that a registry
or a webhook receiver that hangs never delays a decision.

Several controllers may share one store: given a ``holder`` name, a controller acts only while it
holds the ``controller`` lease, renewed every tick, and every write it makes carries the lease's
fencing token, so a controller that stalled past its lease (a long GC pause, a frozen VM) has its
writes refused instead of contradicting the new leader. What a token cannot guard it checks first:
before each side effect, and before writing what it read from metric sources (the store's telemetry
takes no token), a controller past half its lease renews it, and stops acting if another holds it.

Nothing stops the loop: an action that fails is recorded and tried again, a source that fails holds
its rollout, and an error in a whole tick is logged and holds every rollout until the next one.

A rollout whose spec names a metric source (models served outside the gateway) has its telemetry
read from that source every ``source.interval`` and written to the store under the source's name,
so the judge, the report and the API read it as they read the gateway's. A failed read keeps the
last good one in the store and holds the rollout: no step advances while its data is stale, though
a failing metric still rolls back and a step's maxDuration still runs out.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from modelcanary.controller.actions import ActionThread, SideEffects
from modelcanary.controller.gates import default_engine, gated
from modelcanary.controller.shards import Shards
from modelcanary.domain.errors import Fenced, ModelcanaryError
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import RolloutSpec, saved_spec
from modelcanary.domain.state import Outcome, RolloutState
from modelcanary.domain.telemetry import RolloutTelemetry, Variant, VariantTelemetry
from modelcanary.engine.analysis import analyse, look_at, pair
from modelcanary.engine.decide import decide
from modelcanary.engine.outcomes import CONTROLLER, decided_again, failing
from modelcanary.judges import prepare as prepare_judges
from modelcanary.ports import (
    ActionQueue,
    Fence,
    Leases,
    Measurement,
    MetricSource,
    Notifier,
    PolicyEngine,
    Registry,
    RolloutStore,
    TelemetryStore,
)

log = logging.getLogger("modelcanary.controller")


LEASE = "controller"


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold CPython's cycle collector off while a tick reads, judges and saves. A tick keeps some
    seventy objects per rollout alive until it ends (states, telemetry, judgements), so at a
    thousand rollouts the collector ran dozens of young and one full collection per tick, a full
    one walking the whole heap: 100-150 ms of a 400 ms tick, measured, for cycles a tick does not
    make (what it allocates is freed by reference counting when it ends). The collector runs again
    after the decisions are saved, as soon as allocations call for it; if it was off, it stays off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Store(RolloutStore, ActionQueue, TelemetryStore, Leases, Protocol):
    """What the controller needs of a store."""


def raised_at(exc: BaseException) -> str:
    """Where ``exc`` was raised in modelcanary's code (the innermost such frame, else the innermost
    of all): its file from the package's folder on, and its line."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "an unknown place"
    ours = [frame for frame in frames if f"{os.sep}modelcanary{os.sep}" in frame.filename]
    frame = (ours or frames)[-1]
    path = frame.filename
    cut = path.rfind(f"{os.sep}modelcanary{os.sep}")
    return f"{path[cut + 1 :] if cut >= 0 else os.path.basename(path)}:{frame.lineno}"


@dataclass
class Controller(SideEffects):
    store: Store
    registry: Registry
    clock: Callable[[], float] = time.time
    holder: str | None = None  # this controller's name for the lease; None: act without one (embedded)
    lease_ttl_s: float = 10.0
    fence: Fence | None = None  # the lease held since the last tick, if any
    policies: PolicyEngine | None = None  # gate policies' evaluator; Rego (regopy) when first needed
    notifier: Notifier | None = None  # webhooks; the standard-library one when first needed
    notify_attempts: int = 6  # a notification is given up (and audited as failed) after this many
    retry_backoff_s: float = 1.0  # an action's wait after its first failure, doubled after each other one
    retry_backoff_max_s: float = 60.0  # ... up to this
    sources: Callable[[str], MetricSource] | None = None  # name -> source; None: adapters.sources' factory
    shards: Shards | None = None  # worker processes that decide a share of the rollouts; None: this one alone
    _specs: dict[str, RolloutSpec] = field(default_factory=dict)
    _spec_errors: dict[str, tuple[str, str]] = field(default_factory=dict)  # id: (why its spec does not load, where)
    _states: dict[str, RolloutState] = field(default_factory=dict)  # each active rollout as last read or saved
    _read_at: dict[str, float] = field(default_factory=dict)  # when each sourced rollout was last read
    measurement_errors: dict[str, str] = field(default_factory=dict)  # rollout id -> why its last read failed
    _retries: dict[int, tuple[int, float]] = field(default_factory=dict)  # action id -> (failures, next try)
    _leased_at: float = -float("inf")  # when the lease was last taken or renewed, by ``clock``

    def __post_init__(self) -> None:
        prepare_judges()

    def _policy_engine(self) -> PolicyEngine:
        if self.policies is None:
            self.policies = default_engine()
        return self.policies

    def lead(self) -> bool:
        """Take or renew the lease; whether this controller may act now."""
        if self.holder is None:
            return True
        now = self.clock()
        fence = self.store.acquire_lease(LEASE, self.holder, ttl_s=self.lease_ttl_s, now=now)
        if fence != self.fence:
            log.info("%s: %s", self.holder, f"leading with token {fence.token}" if fence else "not leading")
        self.fence, self._leased_at = fence, now
        return fence is not None

    def _still_leading(self) -> bool:
        """Whether this controller may still act, mid-tick: without a lease always; with one, while
        less than half of it has run (a margin for clocks that differ), else if renewing it works: a
        tick that ran long keeps its lease, one that stalled past it learns another leads now."""
        if self.holder is None:
            return True
        if self.fence is None:  # lost this tick
            return False
        return self.clock() - self._leased_at < self.lease_ttl_s / 2 or self.lead()

    def _write_fence(self) -> Fence | None:
        """The fence a write carries: the lease's, or, without a lease (embedded, or a shard worker,
        which is given its leader's), None. A controller that has a holder but no lease any more is
        ``Fenced``: a write with no fence goes unchecked, and the side effects' thread may have
        just learnt that the lease moved."""
        fence = self.fence
        if fence is None and self.holder is not None:
            raise Fenced(f"{self.holder}: no longer holds the lease")
        return fence

    def step_down(self) -> None:
        """Release the lease on a clean shutdown, so another controller takes over at once."""
        if self.holder is not None and self.fence is not None:
            self.store.release_lease(self.fence, self.holder)
            self.fence = None

    def _load_specs(self, active: list[RolloutState]) -> None:
        """Parse the specs not seen yet, all in one read: a spec never changes after its rollout
        starts. The validated JSON is read when the store has it (0.05 ms), the YAML otherwise
        (10-25 ms), which matters when a new leader takes over a thousand rollouts at once."""
        self._specs = {state.id: self._specs[state.id] for state in active if state.id in self._specs}
        self._spec_errors.clear()
        missing = [state.id for state in active if state.id not in self._specs]
        for rollout_id, (text, as_json) in (self.store.specs(missing) if missing else {}).items():
            try:
                self._specs[rollout_id] = saved_spec(text, as_json, source=f"rollout {rollout_id}")
            except Exception as exc:  # saved by a version that read it differently: hold that one rollout
                log.exception("rollout %s: its saved spec no longer loads; holding it", rollout_id)
                self._spec_errors[rollout_id] = (f"its saved spec no longer loads: {exc}", raised_at(exc))

    def tick(self) -> list[RolloutState]:
        """``decide``, then run the side effects, in this thread (the long-running loops run them on
        a thread of their own: ``ActionThread``). The states whose phase or step changed."""
        changed = self.decide()
        self.run_actions()  # none once the lease is lost, this tick or while they run
        return changed

    def decide(self) -> list[RolloutState]:
        """Decide once for every active rollout, and save every decision in one transaction (each
        rollout on its own compare-and-set); no side effect. The states whose phase or step changed."""
        if not self.lead():
            return []
        with collector_paused():
            return self._decide_all()

    def tick_or_hold(self) -> None:
        """One tick that never raises: an error holds every rollout until the next tick, logged
        (with its traceback when it is not one of modelcanary's own)."""
        _or_hold("tick", self.tick)

    def decide_or_hold(self) -> None:
        """``decide``, never raising, as ``tick_or_hold``."""
        _or_hold("tick", self.decide)

    def actions_or_hold(self) -> None:
        """``run_actions``, never raising: an error leaves the actions pending until the next run."""
        _or_hold("side effects' run", self.run_actions)

    def _decide_all(self) -> list[RolloutState]:
        """Decide and save every active rollout: all of them here, or with ``shards`` this
        process's share while the workers decide theirs (a tick ends when every share has). The
        states whose phase or step changed."""
        try:
            if self.shards is None:
                return self.decide_shard()[0]
            return self._decide_shared(self.shards)
        except Fenced as exc:  # another controller leads now: act on nothing more
            log.warning("%s", exc)
            self.fence = None
            self._states = {}
            return []

    def _decide_shared(self, shards: Shards) -> list[RolloutState]:
        started = shards.submit(self.clock(), self._write_fence())
        changed: list[RolloutState] = []
        fenced: Fenced | None = None
        try:
            changed += self.decide_shard(shards.mine)[0]
        except Fenced as exc:
            fenced = exc
        for shard, future in enumerate(started, start=1):
            try:
                changed += future.result().changed
            except Fenced as exc:
                fenced = fenced or exc
            except Exception:  # a worker died or failed: its rollouts hold until the next tick
                log.exception("controller worker %d failed; its rollouts hold this tick", shard)
                shards.restart(shard)
        if fenced is not None:
            raise fenced
        return changed

    def decide_shard(self, mine: Callable[[str], bool] | None = None) -> tuple[list[RolloutState], list[str]]:
        """Read, judge, decide and save the active rollouts that are ``mine`` (all, without it),
        every decision in one transaction (each rollout on its own compare-and-set). The states
        whose phase or step changed, and the ids of every rollout saved. ``Fenced`` if the lease
        moved."""
        # the states this controller saved last tick are not read again while their version holds
        active = self.store.active_rollouts(self._states, mine=mine)
        self._states = {state.id: state for state in active}
        self._load_specs(active)
        self._read_sources(active)
        telemetry = self.store.read_telemetry_many([state.id for state in active if state.id in self._specs])
        decided: list[Outcome] = []
        for state in active:
            spec = self._specs.get(state.id)
            try:
                if spec is None:  # its saved spec no longer loads (logged by _load_specs)
                    failure, where = self._spec_errors[state.id]
                    outcome = failing(state, None, failure, where, now=self.clock())
                else:
                    try:
                        outcome = decided_again(
                            state, self._decide(state, spec, pair(telemetry[state.id])), now=self.clock()
                        )
                    except Exception as exc:  # one broken rollout must not hold every other one
                        log.exception("rollout %s: deciding it failed; holding it", state.id)
                        outcome = failing(state, spec, f"{type(exc).__name__}: {exc}", raised_at(exc), now=self.clock())
            except Exception:  # not even its hold could be recorded: it holds, in the log alone
                log.exception("rollout %s: could not record what holds it", state.id)
                continue
            if outcome is not None:
                decided.append(outcome)
        results = (
            self.store.save_many([(outcome, outcome.state.version) for outcome in decided], fence=self._write_fence())
            if decided
            else []
        )
        changed: list[RolloutState] = []
        saved_ids: list[str] = []
        for outcome, (saved, error) in zip(decided, results, strict=True):
            if saved is not None:
                self._states[saved.id] = saved
                saved_ids.append(saved.id)
            if error is not None:  # an operator acted meanwhile: decide again next tick, on fresh state
                log.info("%s", error)
                self._states.pop(outcome.state.id, None)
            elif saved is not None and outcome.transition is not None:
                log.info("rollout %s: %s", saved.id, outcome.transition.reason)
                changed.append(saved)
        return changed, saved_ids

    def _read_sources(self, active: list[RolloutState]) -> None:
        """Read each due rollout's metric source into the store; a failure is kept as data.
        ``Fenced``, writing nothing, if the lease passed to another controller meanwhile (a read
        can take a source's timeout, and a stalled leader's older read must not overwrite a newer
        one)."""
        self._read_at = {key: at for key, at in self._read_at.items() if key in self._specs}
        self.measurement_errors = {key: e for key, e in self.measurement_errors.items() if key in self._specs}
        rows: dict[str, list[tuple[str, Variant, VariantTelemetry]]] = {}
        for state in active:
            spec = self._specs.get(state.id)
            source = spec.spec.source if spec is not None else None
            if source is None or state.phase is Phase.PENDING:
                continue
            now = self.clock()
            if now < self._read_at.get(state.id, -float("inf")) + source.prometheus.interval:
                continue
            self._read_at[state.id] = now
            try:
                measurement = self._source(source.name).measure(source, since=state.created_at, until=now)
            except Exception as exc:  # measure must not raise; one that does holds its rollout, not the tick
                log.exception("rollout %s: metric source %s raised", state.id, source.name)
                measurement = Measurement(telemetry=None, error=f"{source.name}: {type(exc).__name__}: {exc}")
            if measurement.telemetry is None:
                self.measurement_errors[state.id] = measurement.error or "no telemetry"
                log.warning("rollout %s: holding on a measurement error: %s", state.id, measurement.error)
                continue
            self.measurement_errors.pop(state.id, None)
            read = measurement.telemetry
            rows.setdefault(source.name, []).extend(
                [(state.id, Variant.BASELINE, read.baseline), (state.id, Variant.CANDIDATE, read.candidate)]
            )
        if rows and not self._still_leading():
            raise Fenced(f"{self.holder}: the lease passed to another controller while reading metric sources")
        for name, read_rows in rows.items():
            self.store.write_telemetry(name, read_rows, fence=self._write_fence())

    def _source(self, name: str) -> MetricSource:
        if self.sources is None:
            from modelcanary.adapters.sources import metric_source

            self.sources = metric_source
        return self.sources(name)

    def _decide(self, state: RolloutState, spec: RolloutSpec, telemetry: RolloutTelemetry) -> Outcome | None:
        """The outcome to save for one rollout, or None when nothing changed: pure, given the clock."""
        now = self.clock()
        judgement, memory = None, state.judge_memory
        # an approval's wait is watched too, and a shadow phase (its lane's evidence rolls back)
        if state.phase in (Phase.SHADOW, Phase.CANARY, Phase.AWAITING_APPROVAL):
            judgement, memory = analyse(spec, look_at(state, spec, telemetry, now=now), state.judge_memory)
            error = self.measurement_errors.get(state.id)
            if error is not None:  # judged on the last good read, but nothing advances on stale data
                held = f"measurement error: {error}" + (f"; {judgement.hold}" if judgement.hold else "")
                judgement = judgement.model_copy(update={"hold": held})
        outcome = gated(
            lambda answers: decide(
                state,
                spec,
                judgement=judgement,
                candidate_requests=telemetry.candidate.requests,
                now=now,
                gates=answers,
            ),
            engine=self._policy_engine,
            spec=spec,
            judgement=judgement,
            actor=CONTROLLER,
            now=now,
        )
        if outcome.transition is None and memory == state.judge_memory:
            return None
        # the judge's memory is saved with every look, so the evidence survives a restart; the
        # outcome's state keeps the version it was decided from, for the compare-and-set
        new_state = outcome.state.model_copy(update={"judge_memory": memory, "version": state.version})
        return outcome.model_copy(update={"state": new_state})

    async def run(self, *, interval_s: float = 1.0, drain_s: float = 5.0) -> None:
        """Decide every ``interval_s`` until cancelled, counted from each tick's start (a tick that
        took 0.3 s followed by a full interval's sleep would judge every rollout each 1.3 s), with
        the side effects on an ``ActionThread``; store calls run in a thread so the gateway's loop
        stays free. Cancelled, it lets the side effect in progress finish, for up to ``drain_s``,
        then releases the lease, so that another controller takes over at once (``modelcanary
        serve`` stopping, as ``modelcanary controller`` does)."""
        actions = ActionThread(self, interval_s)
        actions.start()
        try:
            while True:
                started = _monotonic()
                await asyncio.to_thread(self.decide_or_hold)
                actions.wake()
                await _sleep(max(0.0, started + interval_s - _monotonic()))
        finally:
            await asyncio.to_thread(actions.stop, drain_s)
            await asyncio.to_thread(_or_hold, "stepping down", self.step_down)


# run()'s clock and wait, named here so that a test replaces these two, not time.monotonic and
# asyncio.sleep for every thread and event loop of its process
_monotonic = time.monotonic
_sleep = asyncio.sleep


def _or_hold(what: str, step: Callable[[], object]) -> None:
    try:
        step()
    except ModelcanaryError as exc:  # the store is unreachable, say: decide nothing until it is back
        log.warning("controller %s failed; holding every rollout until the next one: %s", what, exc)
    except Exception:
        log.exception("controller %s failed; holding every rollout until the next one", what)
