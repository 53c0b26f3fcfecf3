"""What a model call costs: the CPU time of the thread that made it (the cost guardrail's input),
and its own wall time, so that the time a request spent waiting for a thread around the call (a
deadline's pool, a batch's worker) can be told apart from the model's.

>>> from modelcanary.adapters.testing import FunctionModel
>>> timed = timed_predict(FunctionModel(lambda columns: [len(columns["a"])]), {"a": [1, 2]})
>>> timed.outputs, timed.cpu_ms >= 0, timed.wall_ms >= 0
([2], True, True)
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from modelcanary.ports import Model


class Timed(NamedTuple):
    """One call: its outputs (or what it raised), the CPU time in ms of the thread that made it,
    and its wall time in ms."""

    outputs: list[Any] | Exception
    cpu_ms: float
    wall_ms: float


class Costed(NamedTuple):
    """A prediction as the gateway records it: the outputs (or what the model raised: a failed
    call is charged its CPU time too, as each variant's are), the CPU time in ms the model spent
    on them (None where it is not measured: a model in another process), and the time in ms the
    request waited for a thread around the call (the hop to a worker and back), which is the
    gateway's isolation, not the model's, and is left out of the latency the judge compares."""

    outputs: list[Any] | Exception
    cpu_ms: float | None
    waited_ms: float = 0.0


def timed_predict(model: Model, columns: dict[str, list[Any]]) -> Timed:
    started, cpu = time.perf_counter(), time.thread_time()
    try:
        outputs: list[Any] | Exception = model.predict(columns)
    except Exception as exc:
        outputs = exc
    return Timed(outputs, (time.thread_time() - cpu) * 1e3, (time.perf_counter() - started) * 1e3)


def waited_ms(started: float, call: Timed) -> float:
    """How long a request waited for a thread around ``call`` (to reach a worker, and for the loop
    to take the answer back), in ms: the round trip since ``started`` (``time.perf_counter()``
    before handing the call over) less the call's own wall time."""
    return max(0.0, (time.perf_counter() - started) * 1e3 - call.wall_ms)
