"""The shadow lane: the candidate predicts copies of requests the baseline served, off the
response path.

A live request only appends a copy to its rollout's bounded queue (or, when that queue is full,
counts it as shed and drops it): it never waits for the shadow work. Each rollout has a queue of
its own, so a slow candidate on one endpoint sheds only its own copies, and one worker task takes
copies from the queues in turn and runs the candidate on a thread of its own, so shadow work
never takes the live candidate's workers either. It starts a copy only when the event loop has
nothing else ready to run (a turn of the loop comes back within ``QUIET_S``), and runs a
candidate whose shadow predictions take under ``INLINE_S`` of CPU on the loop's own thread
(``_inline_ok``) if it already runs on that thread for live requests: started whenever a copy was
queued, on a thread, a shadow prediction of an in-process model contended with live requests
for the interpreter, and live p99 went from 5.5 to 10.4 ms at half the bare server's load
(docs/gateway-benchmark.md). A candidate that serves no one yet (its shadow phase) never runs on
the loop's thread, and one that held it longer than ``INLINE_S`` ``HELD_LOOP_LIMIT`` times (it
waits on I/O or a lock, which its CPU time does not show) does not again. On the thread, a call
has the candidate's deadline (``SHADOW_DEADLINE_S`` if its spec sets none): one past it fails its
copy and keeps its thread, and the lane takes another, so a candidate that hangs stalls no other
rollout's copies.

So shadow work uses the loop's idle time; live requests waiting on a remote model leave the loop
idle, and shadow work goes on beside them. Under pressure the queues fill and shadow work is what
is dropped, counted. The results are recorded on the event loop thread, like every other count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from modelcanary.domain.spec import Shadow
from modelcanary.gateway.faults import CandidateFault, DeadlineMissed, Ran, timed
from modelcanary.gateway.recorder import Recorder, score_of
from modelcanary.gateway.serving import Serving

log = logging.getLogger("modelcanary.gateway.shadow")
QUIET_S = 50e-6  # a turn of an idle loop: one poll for I/O, nothing to run
# How long to leave a busy loop alone before looking again. Under uvloop (the gateway's loop when
# uvicorn finds it) timers count whole milliseconds and this rounds down to the next turn: measured
# 446,000 such sleeps a second. A real 1 ms pause, with shadow work capped at half the loop's spare
# time, was tried (docs/gateway-benchmark.md): the lane then predicted 31-52% of the copies at half
# the bare app's load, and live p99 was no better in five rounds.
BUSY_PAUSE_S = 0.5e-3
INLINE_S = 1e-3  # a shadow prediction using less CPU than this runs on the loop's thread, in an idle moment
# inline predictions that held the loop past INLINE_S after which a candidate's copies run on the
# thread for good: more than one, as a collection or a preemption now and then stretches any call
HELD_LOOP_LIMIT = 3
# a shadow call on the thread gets the candidate's deadline, or this when its spec sets none: past
# it the copy fails and the lane takes a new thread, leaving the call its own; a candidate with
# this many such calls still running gets no more copies started (each fails at once)
SHADOW_DEADLINE_S = 10.0
ABANDONED_LIMIT = 4


@dataclass(frozen=True, slots=True)
class Copy:
    """A request the baseline served, copied for the candidate."""

    serving: Serving
    rollout_id: str
    settings: Shadow
    columns: dict[str, list[Any]]
    prediction_ids: Sequence[str]
    baseline_scores: Sequence[float | None]
    segment: str | None


class ShadowLane:
    def __init__(self, recorder: Recorder, serving: Callable[[str], Serving | None] | None = None) -> None:
        self._recorder = recorder
        # an endpoint's serving now (the gateway's table): a copy runs the candidate that serves
        # its rollout now, not the one its request saw (the breaker may have taken it out since)
        self._serving = serving
        self._queues: OrderedDict[str, deque[Copy]] = OrderedDict()  # per rollout, taken in turn
        self._wake: asyncio.Event | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.done = 0  # copies the candidate has predicted (or failed on)
        # per candidate (its model URI), a shadow prediction's CPU time on the thread it ran on,
        # smoothed: what it would hold the loop's thread for. Not its wall time on the shadow
        # thread, which counts the hop there and any wait for a core: one slow hop on a busy machine
        # kept the lane off the loop's thread for tens of copies while the smoothing wore it off.
        self._cost_s: dict[str, float] = {}
        self._abandoned: dict[str, int] = {}  # per candidate, its calls past their deadline still running
        self._held_loop: dict[str, int] = {}  # per candidate, the inline predictions that held the loop past INLINE_S

    def _inline_ok(self, copy: Copy, candidate: Any) -> bool:
        """Whether to run this copy on the loop's own thread: an in-process candidate that already
        runs there for live requests (it serves some, with no deadline in its spec), whose shadow
        predictions have been short and seldom held the loop. On the shadow thread, its interpreter
        time contended with the loop's at every switch, and live p99 doubled at half load
        (docs/gateway-benchmark.md); inline, a live request that comes in meanwhile waits at most
        one such prediction."""
        key = _key(copy)
        cost_s = self._cost_s.get(key)
        return (
            getattr(candidate, "apredict", None) is None
            and copy.serving.guard.deadline is None
            and copy.serving.route.weight > 0
            and self._held_loop.get(key, 0) < HELD_LOOP_LIMIT
            and cost_s is not None
            and cost_s < INLINE_S
        )

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def offer(self, copy: Copy) -> bool:
        """Queue a copy, or shed it (counted) when its rollout's queue is full; never waits."""
        queue = self._queues.get(copy.rollout_id)
        if queue is None:
            queue = self._queues[copy.rollout_id] = deque()
        if len(queue) >= copy.settings.queue:
            self._recorder.shed(copy.rollout_id, copy.segment)
            copy.serving.series.shed.inc()
            return False
        queue.append(copy)
        self._recorder.shadow_queued(copy.prediction_ids, copy.settings.keep)
        if self._wake is not None:
            self._wake.set()
        return True

    @staticmethod
    async def _quiet() -> None:
        """Until a turn of the event loop comes back at once: nothing else was ready to run."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0)
            if time.perf_counter() - started < QUIET_S:
                return
            await asyncio.sleep(BUSY_PAUSE_S)

    async def run(self) -> None:
        """Predict queued copies until cancelled."""
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="modelcanary-shadow")
        try:
            while True:
                if not self._queues:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._quiet()
                copy = self._next()
                candidate = self._candidate(copy)
                if candidate is None:  # the breaker took it out since, or its rollout ended: nothing to compare
                    continue
                key = _key(copy)
                started = time.perf_counter()
                inline = self._inline_ok(copy, candidate)
                if inline:
                    ran = timed(candidate, copy.columns)
                else:
                    ran = await self._on_thread(copy, candidate, key)
                took_s = time.perf_counter() - started
                if inline and took_s > INLINE_S:
                    self._held_loop[key] = held = self._held_loop.get(key, 0) + 1
                    if held == HELD_LOOP_LIMIT:
                        log.warning(
                            "shadow predictions of %s held the event loop past %g ms %d times (the last %.1f ms): "
                            "its copies run on a thread from now",
                            key,
                            INLINE_S * 1e3,
                            held,
                            took_s * 1e3,
                        )
                cost_s = ran.cpu_ms / 1e3 if ran.cpu_ms is not None else took_s
                before = self._cost_s.get(key)
                self._cost_s[key] = cost_s if before is None else 0.9 * before + 0.1 * cost_s
                if ran.error is not None:
                    log.warning("shadow prediction of %s failed: %r", copy.serving.route.endpoint, ran.error)
                scores = [score_of(output) for output in ran.outputs] if ran.outputs is not None else None
                if scores is not None and len(scores) != len(copy.baseline_scores):
                    # one output per row or none: a copy answered short is a failed copy, in the
                    # telemetry and in /metrics alike
                    log.warning(
                        "shadow prediction of %s: %d outputs for %d rows",
                        copy.serving.route.endpoint,
                        len(scores),
                        len(copy.baseline_scores),
                    )
                    scores = None
                self._recorder.shadow(
                    copy.rollout_id,
                    segment=copy.segment,
                    prediction_ids=copy.prediction_ids,
                    baseline_scores=copy.baseline_scores,
                    candidate_scores=scores,
                    keep_s=copy.settings.keep,
                )
                series = copy.serving.series.shadow
                if scores is None:
                    series.failed(took_s)
                else:
                    series.observe(took_s, scores)
                self.done += 1
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _on_thread(self, copy: Copy, candidate: Any, key: str) -> Ran:
        """The copy's prediction on the lane's thread, within the candidate's deadline (or
        ``SHADOW_DEADLINE_S``). A call past it cannot be stopped: it keeps its thread, and the
        lane takes a new one, so a candidate that hangs stalls no other rollout's copies."""
        assert self._pool is not None
        stuck = self._abandoned.get(key, 0)
        if stuck >= ABANDONED_LIMIT:
            return Ran(None, CandidateFault(f"not started: {stuck} shadow calls past their deadline still run"), None)
        deadline = copy.serving.guard.deadline or SHADOW_DEADLINE_S
        future = asyncio.wrap_future(self._pool.submit(timed, candidate, copy.columns))
        done, _ = await asyncio.wait((future,), timeout=deadline)
        if done:
            return future.result()
        self._abandoned[key] = stuck + 1
        future.add_done_callback(lambda _future: self._released(key))
        self._pool.shutdown(wait=False)  # its thread ends when the call returns
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="modelcanary-shadow")
        log.warning("a shadow prediction of %s gave no answer within %g s: the copy failed", key, deadline)
        return Ran(None, DeadlineMissed(f"no answer within {deadline:g} s"), None)

    def _released(self, key: str) -> None:
        self._abandoned[key] -= 1

    def _candidate(self, copy: Copy) -> Any:
        """The candidate to run a copy on: the one serving its rollout now, if any."""
        if self._serving is None:
            return copy.serving.candidate
        now = self._serving(copy.serving.route.endpoint)
        return now.candidate if now is not None and now.route.rollout_id == copy.rollout_id else None

    def _next(self) -> Copy:
        """The next copy, the rollouts with copies queued taking turns."""
        rollout_id, queue = next(iter(self._queues.items()))
        copy = queue.popleft()
        if queue:
            self._queues.move_to_end(rollout_id)
        else:
            del self._queues[rollout_id]
        return copy


def _key(copy: Copy) -> str:
    """The candidate a copy is for, as the lane keeps its costs: its model's URI."""
    candidate = copy.serving.route.candidate
    return candidate.uri if candidate is not None else copy.rollout_id
