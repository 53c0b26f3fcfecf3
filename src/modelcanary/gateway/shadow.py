"""The shadow lane: the candidate predicts copies of requests the baseline served, off the
response path.

A live request only appends a copy to a bounded queue (or, when the queue is full, counts it as
shed and drops it): it never waits for the shadow work. One worker task takes copies off the queue
and runs the candidate on a thread of its own, so shadow work never takes the live candidate's
workers either. It starts a copy only when the event loop has nothing else ready to run (a
turn of the loop comes back within ``QUIET_S``), and runs a candidate whose shadow predictions
take under ``INLINE_S`` of CPU on the loop's own thread (``_inline_ok``): started whenever a copy was
queued, on a thread, a shadow prediction of an in-process model contended with live requests
for the interpreter, and live p99 went from 5.5 to 10.4 ms at half the bare server's load
(docs/gateway-benchmark.md). So shadow work uses the loop's idle time; live requests waiting on
a remote model leave the loop idle, and shadow work goes on beside them. Under pressure the queue
fills and shadow work is what is dropped, counted. The results are recorded on the event loop
thread, like every other count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from modelcanary.domain.spec import Shadow
from modelcanary.gateway.faults import timed
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
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._queue: deque[Copy] = deque()
        self._wake: asyncio.Event | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.done = 0  # copies the candidate has predicted (or failed on)
        # a shadow prediction's CPU time on the thread it ran on, smoothed: what it would hold the
        # loop's thread for. Not its wall time, which counts the hop to the shadow thread and any
        # wait for a core: one slow hop on a busy machine kept the lane off the loop's thread for
        # tens of copies while the smoothing wore it off.
        self._cost_s: float | None = None

    def _inline_ok(self, copy: Copy, candidate: Any) -> bool:
        """Whether to run this copy on the loop's own thread: an in-process candidate trusted inline
        on the live path too (no deadline in its spec), whose shadow predictions have been short.
        On the shadow thread, its interpreter time contended with the loop's at every switch, and
        live p99 doubled at half load (docs/gateway-benchmark.md); inline, a live request that comes
        in meanwhile waits at most one such prediction."""
        return (
            getattr(candidate, "apredict", None) is None
            and copy.serving.guard.deadline is None
            and self._cost_s is not None
            and self._cost_s < INLINE_S
        )

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, copy: Copy) -> bool:
        """Queue a copy, or shed it (counted) when the queue is full; never waits."""
        if len(self._queue) >= copy.settings.queue:
            self._recorder.shed(copy.rollout_id, copy.segment)
            copy.serving.series.shed.inc()
            return False
        self._queue.append(copy)
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
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._quiet()
                copy = self._queue.popleft()
                candidate = copy.serving.candidate
                if candidate is None:  # the breaker took it out since: nothing to compare
                    continue
                started = time.perf_counter()
                if self._inline_ok(copy, candidate):
                    ran = timed(candidate, copy.columns)
                else:
                    ran = await loop.run_in_executor(self._pool, timed, candidate, copy.columns)
                took_s = time.perf_counter() - started
                cost_s = ran.cpu_ms / 1e3 if ran.cpu_ms is not None else took_s
                self._cost_s = cost_s if self._cost_s is None else 0.9 * self._cost_s + 0.1 * cost_s
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
