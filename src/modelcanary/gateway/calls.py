"""How the gateway calls a model: a model with ``apredict`` (remote servers, Ray, a batching queue)
is awaited, so the event loop serves other requests meanwhile; a plain ``predict`` runs inline, as
an in-process model's few microseconds cost less than a thread hop.

>>> import asyncio
>>> from modelcanary.adapters.testing import FunctionModel
>>> costed = asyncio.run(predict_costed(FunctionModel(lambda columns: [len(columns["a"])]), {"a": [1, 2]}))
>>> costed.outputs, costed.cpu_ms is not None, costed.waited_ms
([2], True, 0.0)
>>> failed = asyncio.run(predict_costed(FunctionModel(lambda columns: 1 / 0), {"a": [1]}))
>>> failed.outputs, failed.cpu_ms is not None
(ZeroDivisionError('division by zero'), True)
"""

from __future__ import annotations

import time
from typing import Any

from modelcanary.adapters.backends.batching import BatchingModel
from modelcanary.adapters.backends.timing import Costed
from modelcanary.ports import Model


async def predict_costed(model: Model, columns: dict[str, list[Any]], *, on_loop: bool = False) -> Costed:
    """The model's outputs, or what it raised, and what the call cost in CPU time (ms; the cost
    guardrail's input), whether it answered or failed: the thread CPU time of an inline call, a
    batching queue's share of its batch's, and None (not measured here) for a remote model, whose
    work happens in another process while this thread serves other requests, which must not be
    charged to it. ``on_loop``: nothing needs to cut this call short (no deadline), so a batching
    queue may run its batch on the loop's thread, as the model would run unbatched."""
    if isinstance(model, BatchingModel):
        return await model.apredict_costed(columns, on_loop=on_loop)
    apredict = getattr(model, "apredict", None)
    if apredict is not None:
        try:
            return Costed(await apredict(columns), None)
        except Exception as exc:
            return Costed(exc, None)
    # inline, on this thread: what the thread spends is the model's (``timing.timed_predict``
    # written out, without the wall time: this is the baseline's request path)
    cpu = time.thread_time()
    try:
        outputs: list[Any] | Exception = model.predict(columns)
    except Exception as exc:
        outputs = exc
    return Costed(outputs, (time.thread_time() - cpu) * 1e3)
