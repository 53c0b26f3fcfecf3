"""A gateway's control side, off the request path: following the store's routing table (its
models loaded on a thread), flushing telemetry, and the shutdown's last writes. ``Gateway``
(``app.py``) brings the state it works on and the request path.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from modelcanary.domain.state import ModelVersion, Route
from modelcanary.gateway.serving import Serving

if TYPE_CHECKING:
    from modelcanary.gateway.faults import CandidateRunner
    from modelcanary.gateway.labels import Labels
    from modelcanary.gateway.metrics import Metrics
    from modelcanary.gateway.recorder import Recorder
    from modelcanary.ports import Backend, Model, RouteSource, TelemetryStore

log = logging.getLogger("modelcanary.gateway")
LAST_FLUSH_S = 10.0  # how long a gateway stopping keeps trying to write its last counts


def _settle_heap(*, first: bool) -> None:
    """Move what exists now (modules, loaded models: ~420,000 objects with MLflow and pandas) out
    of the garbage collector's sight with ``gc.freeze``. Otherwise every full collection walks all
    of it — measured here at 280 ms, a pause for every request in flight, every few tens of
    thousands of requests. The first time (at start, before serving) a full collection runs first;
    later (a model loaded mid-rollout) only the young generations, so no request waits on it: what
    older garbage exists then stays frozen, bounded by one load's leftovers."""
    gc.collect() if first else gc.collect(1)
    gc.freeze()


class Following:
    """The control methods of ``Gateway``, which holds the state they read and write."""

    if TYPE_CHECKING:
        _routes: RouteSource
        _backend: Backend
        _telemetry: TelemetryStore | None
        source: str
        recorder: Recorder
        metrics: Metrics
        labels: Labels
        candidates: CandidateRunner
        serving: dict[str, Serving]
        routes_version: int
        applied: bool
        unavailable: dict[str, str]
        _models: dict[str, Model]
        _tripped: set[str]
        _flush_lock: asyncio.Lock
        _loaded: bool
        _settled_once: bool

    async def refresh(self) -> bool:
        """Apply the store's routing table if it changed; models load in a thread."""
        version = await asyncio.to_thread(self._routes.routes_version)
        if version == self.routes_version:
            return False
        routes = await asyncio.to_thread(self._routes.routes)
        serving: dict[str, Serving] = {}
        failed: dict[str, str] = {}
        for endpoint, route in routes.items():
            try:
                baseline = await self._load(route.baseline)
                wanted = route.candidate is not None and (route.weight > 0 or route.shadow is not None)
                candidate = await self._load(route.candidate) if wanted and route.candidate else None
            except Exception as exc:
                # One endpoint whose model cannot load must not hold back the others (a rollback
                # included): it keeps what it served, and the next poll tries it again. Any exception,
                # not only ours: loading runs the model's own code (its flavor's module, its pickle),
                # and a backend may let what that raises through. Logged with its traceback once per
                # reason, not at every poll.
                failed[endpoint] = why = f"{type(exc).__name__}: {exc}"
                if self.unavailable.get(endpoint) != why:
                    log.exception("endpoint %s: cannot load its models; keeping its previous route", endpoint)
                if endpoint in self.serving:
                    serving[endpoint] = self.serving[endpoint]
                continue
            serving[endpoint] = Serving.build(
                route, baseline, candidate, series=self.metrics.endpoint(endpoint), old=self.serving.get(endpoint)
            )
        # a candidate this gateway's breaker took out stays out for the rest of its rollout
        self._tripped &= {route.rollout_id for route in routes.values() if route.rollout_id is not None}
        for endpoint, each in serving.items():
            if each.candidate is not None and each.route.rollout_id in self._tripped:
                serving[endpoint] = each = replace(each, candidate=None)
            each.series.weight.set(each.route.weight if each.candidate is not None else 0.0)
            each.series.breaker_open.set(1 if each.route.rollout_id in self._tripped else 0)
        self.serving = serving  # one assignment: a request sees the old table or the new one, whole
        for endpoint in self.unavailable.keys() - failed.keys():
            if endpoint in routes:
                log.info("endpoint %s: its models loaded", endpoint)
        self.unavailable, self.applied = failed, True
        in_use = {version.uri for s in serving.values() for version in (s.route.baseline, s.route.candidate) if version}
        self._models = {uri: model for uri, model in self._models.items() if uri in in_use}
        if not failed:
            self.routes_version = version
        if self._loaded:
            _settle_heap(first=not self._settled_once)
            self._loaded, self._settled_once = False, True
        log.info(
            "routing table %s applied: %s", version, {e: f"{s.route.weight:g}% candidate" for e, s in serving.items()}
        )
        return True

    def preload(self, route: Route) -> None:
        """Load a route's models now, on the calling thread, before the gateway serves: whatever
        loading raises reaches the caller, to name the route (``modelcanary gateway`` refuses an
        ``--endpoint`` whose model cannot load, which would otherwise answer 404 for ever)."""
        for version in (route.baseline, route.candidate):
            if version is not None and version.uri not in self._models:
                self._models[version.uri] = self._backend.load(version)
                self._loaded = True

    async def _load(self, version: ModelVersion) -> Model:
        model = self._models.get(version.uri)
        if model is None:
            model = self._models[version.uri] = await asyncio.to_thread(self._backend.load, version)
            self._loaded = True
        return model

    async def flush(self) -> bool:
        """Write the counts changed since the last flush; whether the store took them (a failed
        write leaves them changed: the counts are cumulative, so the next flush carries them).

        A flush cancelled while its write is under way (at shutdown) still waits for that write,
        which runs on a thread and cannot be stopped: its rows are kept if it fails, and the last
        flush is not overtaken by an older snapshot landing after it."""
        if self._telemetry is None:
            return True
        async with self._flush_lock:
            await self.labels.take_relayed()
            rows = self.recorder.changed()
            if not rows:
                return True
            write = asyncio.ensure_future(asyncio.to_thread(self._telemetry.write_telemetry, self.source, rows))
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                await asyncio.wait([write])
                if write.exception() is not None:
                    self.recorder.unflushed(rows)
                raise
            except Exception:
                self.recorder.unflushed(rows)
                log.exception("telemetry flush failed; will retry")
                return False
            return True

    async def last_flush(self, *, within_s: float = LAST_FLUSH_S) -> None:
        """The flush at shutdown, then the hand-off of what labels may still join to (predictions,
        labels waiting to mature) for another gateway to adopt; each tried again, for ``within_s``
        in all, while the store does not take it. What the store never takes is lost with this
        process."""
        deadline = time.monotonic() + within_s
        for attempt, what in ((self.flush, "the last telemetry"), (self.labels.hand_off, "what labels may join to")):
            pause = 0.25
            while not await attempt():
                if time.monotonic() + pause > deadline:
                    log.error("the store did not take %s within %g s; it is lost", what, within_s)
                    return
                await asyncio.sleep(pause)
                pause = min(2 * pause, 2.0)

    async def close(self) -> None:
        """Stop the candidate pool and release what the backend holds open (connection pools to remote models)."""
        self.candidates.close()
        aclose = getattr(self._backend, "aclose", None)
        if aclose is not None:
            await aclose()

    async def run(self, *, poll_s: float = 0.5, flush_s: float = 1.0) -> None:
        """Follow the routing table and flush telemetry until cancelled. Whatever one round
        raises is logged and the next round runs: this task is what applies a rollback."""
        last_flush = time.monotonic()
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("could not apply the routing table; serving the last one")
            if time.monotonic() - last_flush >= flush_s:
                try:
                    await self.flush()
                except Exception:
                    log.exception("telemetry flush failed; will retry")
                last_flush = time.monotonic()
            await asyncio.sleep(poll_s)
