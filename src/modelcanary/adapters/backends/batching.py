"""Dynamic batching for in-process models: concurrent requests to one model (one variant) are
grouped into one ``predict`` call, and each gets its own rows back.

A batch leaves when it holds ``max_batch_size`` rows, or ``max_wait_us`` after its first request
arrived, whichever comes first; and one batch runs at a time (under load batches grow by
themselves, with no wait added). A request bigger than ``max_batch_size`` runs alone.

Where a batch runs: on the event loop's own thread when every request in it came from a caller
that would run the model there unbatched (``on_loop``: the baseline, a candidate with no
deadline), and on a worker thread of its own otherwise (a candidate whose deadline must be able to
cut a call that hangs). On the worker the call bought no parallelism: a scikit-learn call on a few
rows holds the interpreter, and the hop to the worker and back (and the wait for the interpreter
there) cost the loop more than the call. Setup 4 of ``bench/gateway``, side by side on one machine,
batched over unbatched on the light model: 1.19x and 1.30x with every batch on the worker, 1.72x and
1.86x on the loop (``bench/results/batch-on-loop-20261203.md``).

What a batch's call costs in CPU (the thread CPU time of the thread it ran on, the cost
guardrail's input) is shared among its requests by their rows; a request retried alone pays its
share of the failed call and its own call. A batch on the worker also reports how long its
requests waited for the worker around the call (``Costed.waited_ms``).

When a batch fails, each of its requests is retried alone: the one whose input broke the batch gets
its own error, and the others their answers. A batch of one request is retried too, so that every
request has the same two tries whatever company it had: a model that fails at random (a flaky
feature store) then fails a request as often in a variant whose batches are full as in one whose
batches are single requests (a candidate at a small weight), where retrying only full batches made
the smaller variant's error rate read worse for the same model. (A model that fails on everything
therefore runs twice per request; its failures are the candidate-failure path's business.)

>>> import asyncio
>>> from modelcanary.adapters.testing import FunctionModel
>>> calls = []
>>> def double(columns):
...     calls.append(len(columns["x"]))
...     return [2 * x for x in columns["x"]]
>>> model = BatchingModel(FunctionModel(double), BatchSettings(max_batch_size=8, max_wait_us=1000))
>>> async def three():
...     return await asyncio.gather(*(model.apredict({"x": [i, i]}) for i in range(3)))
>>> asyncio.run(three()), calls
([[0, 0], [2, 2], [4, 4]], [6])
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from modelcanary.adapters.backends.timing import Costed, Timed, timed_predict, waited_ms
from modelcanary.domain.state import ModelVersion
from modelcanary.ports import Backend, Column, Model


@dataclass(frozen=True, kw_only=True)
class BatchSettings:
    max_batch_size: int = 64  # rows per predict call
    max_wait_us: int = 500  # how long the first request of a batch waits for company

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_wait_us < 0:
            raise ValueError(f"batching needs max_batch_size >= 1 and max_wait_us >= 0, got {self}")


@dataclass(slots=True)
class _Waiting:
    columns: dict[str, list[Any]]
    rows: int
    future: asyncio.Future[list[Any] | Exception]  # its outputs, or what its call raised
    on_loop: bool  # its caller would run the model on the loop's thread: so may its batch
    cpu_ms: float = 0.0  # its share of the CPU time of the calls that predicted it
    waited_ms: float = 0.0  # how long it waited for the worker around those calls


class BatchingModel:
    def __init__(self, model: Model, settings: BatchSettings) -> None:
        self.model = model
        self.settings = settings
        self.columns: tuple[Column, ...] | None = model.columns
        self.output_shape: list[int] | None = getattr(model, "output_shape", None)
        self.output_datatype: str | None = getattr(model, "output_datatype", None)
        self._pending: deque[_Waiting] = deque()
        self._rows = 0
        self._due = False  # the oldest waiting request has waited long enough, or a batch is full
        self._running = False
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelcanary-batch")
        # counters, for tests and telemetry
        self.batches = 0
        self.batched_requests = 0
        self.retried_alone = 0
        self.on_loop = 0  # calls run on the event loop's thread

    def predict(self, columns: dict[str, list[Any]]) -> list[Any]:
        return self.model.predict(columns)

    async def apredict(self, columns: dict[str, list[Any]], *, on_loop: bool = False) -> list[Any]:
        outputs = (await self.apredict_costed(columns, on_loop=on_loop)).outputs
        if isinstance(outputs, Exception):
            raise outputs
        return outputs

    async def apredict_costed(self, columns: dict[str, list[Any]], *, on_loop: bool = False) -> Costed:
        """``columns``' outputs (or what their call raised), predicted in a batch, with their share
        of its CPU time. ``on_loop``: the caller would run the model on the event loop's thread
        unbatched (nothing may need to cut the call short), so a batch of such requests runs there
        too."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(columns, len(next(iter(columns.values()), [])), loop.create_future(), on_loop)
        self._pending.append(waiting)
        self._rows += waiting.rows
        if self._rows >= self.settings.max_batch_size:
            self._due = True
        if self._due:
            self._submit()
        elif self._timer is None:
            self._timer = loop.call_later(self.settings.max_wait_us / 1e6, self._expire)
        outputs = await waiting.future
        return Costed(outputs, waiting.cpu_ms, waiting.waited_ms)

    def _expire(self) -> None:
        self._timer = None
        self._due = True
        self._submit()

    def _submit(self) -> None:
        """Start the next batch if none is running; what is left waits for the running one."""
        if self._running or not self._pending:
            return
        batch: list[_Waiting] = []
        rows = 0
        while self._pending and (not batch or rows + self._pending[0].rows <= self.settings.max_batch_size):
            waiting = self._pending.popleft()
            batch.append(waiting)
            rows += waiting.rows
        self._rows -= rows
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = self._rows >= self.settings.max_batch_size
        if self._pending and not self._due:
            self._timer = asyncio.get_running_loop().call_later(self.settings.max_wait_us / 1e6, self._expire)
        self._running = True
        task = asyncio.ensure_future(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            groups: dict[tuple[str, ...], list[_Waiting]] = {}
            # requests with other columns cannot share a frame, nor the same ones in another order: a
            # model of one unnamed tensor takes columns of other names by position (``TensorColumns``)
            for waiting in batch:
                groups.setdefault(tuple(waiting.columns), []).append(waiting)
            for group in groups.values():
                try:
                    await self._predict_group(group)
                except Exception as exc:  # not the model's (its failures are outputs): no caller waits for ever
                    for waiting in group:
                        if not waiting.future.done():
                            waiting.future.set_result(exc)
        finally:
            self._running = False
            if self._due or (self._pending and self._timer is None):
                self._submit()

    async def _call(self, columns: dict[str, list[Any]], on_loop: bool) -> tuple[Timed, float]:
        """The call, timed, and how long it waited for the worker around it (in ms; 0 on the loop)."""
        if on_loop:
            self.on_loop += 1
            return timed_predict(self.model, columns), 0.0
        started = time.perf_counter()
        timed = await asyncio.get_running_loop().run_in_executor(self._worker, timed_predict, self.model, columns)
        return timed, waited_ms(started, timed)

    async def _predict_group(self, group: list[_Waiting]) -> None:
        self.batches += 1
        self.batched_requests += len(group)
        if len(group) == 1:
            merged, rows = group[0].columns, group[0].rows
        else:
            merged = {name: [] for name in group[0].columns}
            for waiting in group:
                for name, values in waiting.columns.items():
                    merged[name].extend(values)
            rows = sum(waiting.rows for waiting in group)
        (outputs, cpu_ms, _wall_ms), waited = await self._call(merged, all(waiting.on_loop for waiting in group))
        for waiting in group:
            waiting.cpu_ms += cpu_ms * (waiting.rows / rows if rows else 1 / len(group))
            waiting.waited_ms += waited
        if isinstance(outputs, Exception) or not _one_each(outputs, rows):
            self.retried_alone += len(group)
            for waiting in group:
                await self._alone(waiting)
            return
        offset = 0
        for waiting in group:
            if not waiting.future.done():  # the client may have gone
                waiting.future.set_result(outputs[offset : offset + waiting.rows])
            offset += waiting.rows

    async def _alone(self, waiting: _Waiting) -> None:
        (outputs, cpu_ms, _wall_ms), waited = await self._call(waiting.columns, waiting.on_loop)
        waiting.cpu_ms += cpu_ms
        waiting.waited_ms += waited
        if waiting.future.done():
            return
        waiting.future.set_result(outputs)


def _one_each(outputs: Any, rows: int) -> bool:
    """Whether a batch's outputs are one per row (what cannot be counted is not)."""
    try:
        return len(outputs) == rows
    except TypeError:
        return False


class BatchingBackend:
    """Wraps every model another backend loads in its own ``BatchingModel`` (so batches are per
    variant: a baseline and a candidate never share one)."""

    def __init__(self, inner: Backend, settings: BatchSettings) -> None:
        self.inner = inner
        self.settings = settings

    def load(self, version: ModelVersion) -> BatchingModel:
        return BatchingModel(self.inner.load(version), self.settings)
