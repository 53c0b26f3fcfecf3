"""Fault isolation for the candidate: a deadline it can be abandoned at, and a circuit breaker.

The baseline runs inline on the event loop thread, as before: it has nobody to fall back on, and a
thread hop would cost every request. The candidate runs inline too unless its route gives it a
deadline; then it runs in a small thread pool and the request waits for it at most that long,
the time it waits for a worker included. A thread cannot be killed, so a candidate that hangs keeps
its worker busy after its call was abandoned: once every worker is held by an abandoned call still
running, further candidate calls fail at once instead of queueing behind them. Healthy calls only
queue: a burst of them beyond the pool's size is the candidate's load, not its fault.

Everything here is touched only on the event loop thread (the pool's done-callbacks are scheduled
back onto the loop), so nothing needs a lock.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

from modelcanary.adapters.backends.timing import Timed, timed_predict, waited_ms
from modelcanary.domain.traffic import CircuitBreaker
from modelcanary.gateway.calls import predict_costed
from modelcanary.ports import Model


class CandidateFault(Exception):
    """The candidate did not answer in time, or could not be started."""


class DeadlineMissed(CandidateFault):
    """The candidate did not answer within its deadline; its call was abandoned."""


@dataclass
class Guard:
    """One rollout's candidate on one gateway: its failures in a row, and whether it is out.

    >>> guard = Guard(CircuitBreaker(consecutive_failures=2))
    >>> guard.failure(), guard.failure(), guard.tripped
    (False, True, True)
    >>> guard = Guard(CircuitBreaker(consecutive_failures=2))
    >>> guard.failure(), guard.success(), guard.failure(), guard.tripped
    (False, None, False, False)
    """

    breaker: CircuitBreaker | None
    consecutive: int = 0
    failures: int = 0
    tripped: bool = False

    @property
    def deadline(self) -> float | None:
        return self.breaker.deadline if self.breaker is not None else None

    def success(self) -> None:
        self.consecutive = 0

    def failure(self) -> bool:
        """Count one failure; True exactly once, when it trips the breaker."""
        self.consecutive += 1
        self.failures += 1
        if self.breaker is None or self.tripped or self.consecutive < self.breaker.consecutive_failures:
            return False
        self.tripped = True
        return True


class Ran(NamedTuple):
    """What one candidate call came to: its outputs or its error, the CPU time it took (None where
    it was not measured: a remote model, a call abandoned or never started), and how long the
    request waited for a thread around the call (the deadline's pool, a batch's worker): the
    isolation's time, not the model's, which the candidate's recorded latency leaves out."""

    outputs: list[Any] | None
    error: BaseException | None
    cpu_ms: float | None
    waited_ms: float = 0.0


def timed(model: Model, columns: dict[str, list[Any]]) -> Ran:
    """The call on this thread, with the CPU time it took (``timed_predict`` written out: this is
    the request path of a candidate without a deadline, and the wall time is not needed here)."""
    cpu = time.thread_time()
    try:
        outputs = model.predict(columns)
    except Exception as exc:
        return Ran(None, exc, (time.thread_time() - cpu) * 1e3)
    return Ran(outputs, None, (time.thread_time() - cpu) * 1e3)


class CandidateRunner:
    """Runs candidate predictions: inline without a deadline, in a bounded pool with one."""

    def __init__(self, *, workers: int = 4) -> None:
        self.workers = workers
        self.held = 0  # workers held by calls abandoned at their deadline and still running
        self.abandoned = 0  # calls that missed their deadline
        self._pool: ThreadPoolExecutor | None = None

    async def predict(self, model: Model, columns: dict[str, list[Any]], deadline: float | None) -> Ran:
        if getattr(model, "apredict", None) is not None:
            return await self._awaited(model, columns, deadline)
        if deadline is None:
            return timed(model, columns)
        if self.held >= self.workers:
            # every worker is stuck in a call nobody waits for: a new one would only wait out its deadline
            error = CandidateFault(f"not started: all {self.held} workers are held by calls past their deadline")
            return Ran(None, error, None)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="modelcanary-candidate")
        started = time.perf_counter()
        call = self._pool.submit(timed_predict, model, columns)
        future = asyncio.wrap_future(call)
        done, _ = await asyncio.wait((future,), timeout=deadline)
        if not done:
            self.abandoned += 1
            # A call still queued for a worker is dropped; one already running cannot be stopped, and
            # holds its worker until it returns.
            if not call.cancel():
                self.held += 1
                future.add_done_callback(self._released)
            return Ran(None, DeadlineMissed(f"no answer within its deadline of {deadline * 1e3:g} ms"), None)
        call_timed = future.result()
        # under load, while the loop's thread holds the interpreter, many times the call itself
        waited = waited_ms(started, call_timed)
        if isinstance(call_timed.outputs, Exception):
            return Ran(None, call_timed.outputs, call_timed.cpu_ms, waited)
        return Ran(call_timed.outputs, None, call_timed.cpu_ms, waited)

    async def _awaited(self, model: Model, columns: dict[str, list[Any]], deadline: float | None) -> Ran:
        """A model the loop awaits (remote, Ray, a batching queue) needs no pool: a missed deadline
        cancels the await. A remote model's CPU is spent elsewhere, so none is charged here; a
        batching queue's share of its batch's is, whether its call answered or failed
        (``calls.predict_costed``)."""
        try:
            costed = await asyncio.wait_for(predict_costed(model, columns, on_loop=deadline is None), deadline)
        except TimeoutError:
            self.abandoned += 1
            return Ran(None, DeadlineMissed(f"no answer within its deadline of {(deadline or 0.0) * 1e3:g} ms"), None)
        except Exception as exc:
            return Ran(None, exc, None)
        if isinstance(costed.outputs, Exception):
            return Ran(None, costed.outputs, costed.cpu_ms, costed.waited_ms)
        return Ran(costed.outputs, None, costed.cpu_ms, costed.waited_ms)

    def _released(self, _future: asyncio.Future[Timed]) -> None:
        self.held -= 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
