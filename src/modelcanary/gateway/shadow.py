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

Copies are predicted in batches: a rollout's copies wait up to ``GATHER_S`` for company, and up to
``BATCH_ROWS`` rows of them (fewer while the candidate's cost per row is not known to be small:
``_batch_rows``) go to the candidate in one call. A scikit-learn model's call costs about the same
for one row as for 64 (79 and 87 µs, the benchmark's logistic regression, ad hoc on this machine
kind), so a 100% shadow lane cost the loop's thread as much as the live candidate did; batched it
costs a fraction. A batch that fails is retried copy by copy, so that only the copy whose input
broke it fails (a candidate that fails on everything then runs twice per copy, as under live
batching). A copy's time in ``/metrics`` is its batch's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modelcanary.domain.traffic import Shadow
from modelcanary.gateway.answers import score_of
from modelcanary.gateway.calls import with_params
from modelcanary.gateway.faults import CandidateFault, DeadlineMissed, Ran, timed
from modelcanary.gateway.recorder import Recorder
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
# Batches: a rollout's oldest queued copy waits this long for others to share its call (it is off
# the response path; its predictions wait minutes for a label anyway), and a call takes at most
# this many rows; and at most the rows whose estimated time is under a quarter of the budget of a
# call (INLINE_S on the loop's thread, the deadline on the lane's), so a batch neither holds the
# loop nor misses the deadline that one copy would not.
GATHER_S = 0.02
BATCH_ROWS = 64


@dataclass(frozen=True, slots=True)
class Copy:
    """A request the baseline served, copied for the candidate; or one it failed on (no
    prediction ids: nothing to pair), whose copy counts in the lane's error rate only."""

    serving: Serving
    rollout_id: str
    settings: Shadow
    columns: dict[str, list[Any]]
    prediction_ids: Sequence[str]
    baseline_scores: Sequence[float | None]
    segment: str | None
    queued: float = field(default_factory=time.monotonic)


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
        self._row_s: dict[str, float] = {}  # per candidate, a call's wall time per row, smoothed: batch size
        # candidates a batch of copies failed on: called copy by copy from then on (``run``)
        self._alone: set[str] = set()

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
                rollout_id, wait_s = self._due()
                if rollout_id is None:
                    await asyncio.sleep(wait_s)
                    continue
                await self._quiet()
                first = self._queues[rollout_id][0]
                candidate = self._candidate(first)
                if candidate is None:  # the breaker took it out since, or its rollout ended: nothing to compare
                    self._take(rollout_id, BATCH_ROWS)
                    continue
                key = _key(first)
                inline = self._inline_ok(first, candidate)
                batch = self._take(rollout_id, self._batch_rows(key, first, inline))
                ran, took_s = await self._predict(batch, candidate, key, inline)
                if len(batch) == 1 or _answered(ran, batch):
                    self._record(batch, ran, took_s)
                    continue
                # The copy whose input broke the batch fails alone. But a call that fails at
                # random (a flaky candidate, a remote one's 5xx) fails its retries seldom: a copy
                # would fail only where both its calls did, and the lane's error rate, compared
                # with the baseline's live one (one call a request), would read the candidate's
                # rate squared. So from now on this candidate's copies are called one at a time.
                log.info(
                    "a batch of %d shadow copies for %s failed: retrying each alone, and calling each alone from now",
                    len(batch),
                    key,
                )
                self._alone.add(key)
                for copy in batch:
                    if inline:
                        await self._quiet()
                    ran, took_s = await self._predict([copy], candidate, key, inline)
                    self._record([copy], ran, took_s)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _predict(self, batch: list[Copy], candidate: Any, key: str, inline: bool) -> tuple[Ran, float]:
        """The candidate's call on a batch's rows (on the loop's thread if ``inline``), and its
        time; what it cost kept for the next calls' choices."""
        columns = batch[0].columns if len(batch) == 1 else _merged(batch)
        started = time.perf_counter()
        if inline:
            ran = timed(candidate, columns)
        else:
            ran = await self._on_thread(batch[0], columns, candidate, key)
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
        if ran.error is None:
            row_s = took_s / sum(len(copy.baseline_scores) for copy in batch)
            before = self._row_s.get(key)
            self._row_s[key] = row_s if before is None else (before + row_s) / 2
        return ran, took_s

    def _record(self, batch: list[Copy], ran: Ran, took_s: float) -> None:
        """Each copy's share of its call's outputs (a failed copy, None), paired with the
        baseline's and counted."""
        if ran.error is not None:
            log.warning("shadow prediction of %s failed: %r", batch[0].serving.route.endpoint, ran.error)
        outputs = ran.outputs if ran.error is None and _answered(ran, batch) else None
        if ran.error is None and outputs is None:
            # one output per row or none: a copy answered short is a failed copy, in the telemetry
            # and in /metrics alike
            log.warning(
                "shadow prediction of %s: %d outputs for %d rows",
                batch[0].serving.route.endpoint,
                len(ran.outputs or ()),
                sum(len(copy.baseline_scores) for copy in batch),
            )
        offset = 0
        for copy in batch:
            rows = len(copy.baseline_scores)
            scores = [score_of(output) for output in outputs[offset : offset + rows]] if outputs is not None else None
            offset += rows
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
                series.failed(took_s * 1e3)
            else:
                series.observe(took_s * 1e3, scores)
            self.done += 1

    async def _on_thread(self, copy: Copy, columns: dict[str, list[Any]], candidate: Any, key: str) -> Ran:
        """A prediction of ``columns`` on the lane's thread, within the deadline of the candidate
        ``copy`` went to (or ``SHADOW_DEADLINE_S``). A call past it cannot be stopped: it keeps
        its thread, and the lane takes a new one, so a candidate that hangs stalls no other
        rollout's copies."""
        assert self._pool is not None
        stuck = self._abandoned.get(key, 0)
        if stuck >= ABANDONED_LIMIT:
            return Ran(None, CandidateFault(f"not started: {stuck} shadow calls past their deadline still run"), None)
        deadline = copy.serving.guard.deadline or SHADOW_DEADLINE_S
        future = asyncio.wrap_future(self._pool.submit(timed, candidate, columns))
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
        """The candidate to run a copy on: the one serving its rollout now, if any, bound to the
        copy's inference parameters if it reads them (``Serving.with_params``)."""
        if self._serving is None:
            return copy.serving.candidate
        now = self._serving(copy.serving.route.endpoint)
        candidate = now.candidate if now is not None and now.route.rollout_id == copy.rollout_id else None
        params = copy.serving.params
        return with_params(candidate, params) if params is not None else candidate

    def _due(self) -> tuple[str | None, float]:
        """The first rollout, in turn, with a batch due (a full one queued, or its oldest copy has
        waited ``GATHER_S``); or none, and how long until one is."""
        now, wait_s = time.monotonic(), GATHER_S
        for rollout_id, queue in self._queues.items():
            waited = now - queue[0].queued
            if waited >= GATHER_S or len(queue) >= BATCH_ROWS:
                return rollout_id, 0.0
            wait_s = min(wait_s, GATHER_S - waited)
        return None, wait_s

    def _batch_rows(self, key: str, copy: Copy, inline: bool) -> int:
        """How many rows the candidate's next call may take: one until its time per row is
        known, then as many as a quarter of the call's budget allows (``INLINE_S`` on the loop's
        thread, the deadline on the lane's), at most ``BATCH_ROWS``. A call's time over its rows
        overstates a row's (the call's fixed cost is most of it), so batches grow over a few calls.
        One for good once a batch of the candidate's copies failed (``run``)."""
        row_s = self._row_s.get(key)
        if row_s is None or key in self._alone:
            return 1
        budget_s = INLINE_S if inline else (copy.serving.guard.deadline or SHADOW_DEADLINE_S)
        return max(1, min(BATCH_ROWS, int(budget_s / 4 / max(row_s, 1e-9))))

    def _take(self, rollout_id: str, rows: int) -> list[Copy]:
        """A rollout's oldest copy, and those after it with the same columns and inference
        parameters while the rows stay within ``rows``; the rollout then takes its turn after the
        others."""
        queue = self._queues[rollout_id]
        first = queue.popleft()
        batch, names, total = [first], first.columns.keys(), len(first.baseline_scores)
        params = _params_key(first.serving.params)
        while (
            queue
            and queue[0].columns.keys() == names
            and _params_key(queue[0].serving.params) == params
            and total + len(queue[0].baseline_scores) <= rows
        ):
            batch.append(queue.popleft())
            total += len(batch[-1].baseline_scores)
        if queue:
            self._queues.move_to_end(rollout_id)
        else:
            del self._queues[rollout_id]
        return batch


def _merged(batch: Sequence[Copy]) -> dict[str, list[Any]]:
    """A batch's columns, its copies' rows one after another."""
    merged: dict[str, list[Any]] = {name: [] for name in batch[0].columns}
    for copy in batch:
        for name, values in copy.columns.items():
            merged[name].extend(values)
    return merged


def _answered(ran: Ran, batch: Sequence[Copy]) -> bool:
    """Whether a call answered every row of its batch: one output per row."""
    return ran.outputs is not None and len(ran.outputs) == sum(len(copy.baseline_scores) for copy in batch)


def _params_key(params: Any) -> str | None:
    """A request's inference parameters as the lane tells them apart: by type too, where Python's
    ``==`` does not (``True == 1 == 1.0``, and a params schema takes one and refuses another).

    >>> _params_key({"b": True}) == _params_key({"b": 1})
    False
    >>> _params_key({"k": 1, "j": 2}) == _params_key({"j": 2, "k": 1})
    True
    """
    if params is None:
        return None
    return repr(sorted(params.items())) if isinstance(params, dict) else repr(params)


def _key(copy: Copy) -> str:
    """The candidate a copy is for, as the lane keeps its costs: its model's URI."""
    candidate = copy.serving.route.candidate
    return candidate.uri if candidate is not None else copy.rollout_id
