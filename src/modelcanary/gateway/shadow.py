"""The shadow lane: the candidate predicts copies of requests the baseline served, off the
response path.

A live request only appends a copy to a bounded queue (or, when the queue is full, counts it as
shed and drops it): it never waits for the shadow work. One worker task takes copies off the queue
and runs the candidate on a thread of its own, so shadow work never takes the live candidate's
workers either; under pressure the queue fills and shadow work is what is dropped. The results are
recorded on the event loop thread, like every other count.
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

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, copy: Copy) -> bool:
        """Queue a copy, or shed it (counted) when the queue is full; never waits."""
        if len(self._queue) >= copy.settings.queue:
            self._recorder.shed(copy.rollout_id, copy.segment)
            copy.serving.series.shed.inc()
            return False
        self._queue.append(copy)
        if self._wake is not None:
            self._wake.set()
        return True

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
                copy = self._queue.popleft()
                candidate = copy.serving.candidate
                if candidate is None:  # the breaker took it out since: nothing to compare
                    continue
                started = time.perf_counter()
                ran = await loop.run_in_executor(self._pool, timed, candidate, copy.columns)
                took_s = time.perf_counter() - started
                if ran.error is not None:
                    log.warning("shadow prediction of %s failed: %r", copy.serving.route.endpoint, ran.error)
                scores = [score_of(output) for output in ran.outputs] if ran.outputs is not None else None
                self._recorder.shadow(
                    copy.rollout_id,
                    segment=copy.segment,
                    prediction_ids=copy.prediction_ids,
                    baseline_scores=copy.baseline_scores,
                    candidate_scores=scores
                    if scores is not None and len(scores) == len(copy.baseline_scores)
                    else None,
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
