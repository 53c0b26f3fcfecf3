"""How the gateway calls a model: a model with ``apredict`` (remote servers, Ray, a batching queue)
is awaited, so the event loop serves other requests meanwhile; a plain ``predict`` runs inline, as
an in-process model's few microseconds cost less than a thread hop.

>>> import asyncio
>>> from modelcanary.adapters.testing import FunctionModel
>>> asyncio.run(predict_async(FunctionModel(lambda columns: [len(columns["a"])]), {"a": [1, 2]}))
[2]
"""

from __future__ import annotations

import time
from typing import Any

from modelcanary.adapters.backends.batching import BatchingModel
from modelcanary.ports import Model


async def predict_async(model: Model, columns: dict[str, list[Any]], *, on_loop: bool = False) -> list[Any]:
    """``on_loop``: nothing needs to cut this call short (no deadline), so a batching queue may run
    its batch on the loop's thread, as the model would run unbatched."""
    if isinstance(model, BatchingModel):
        return await model.apredict(columns, on_loop=on_loop)
    apredict = getattr(model, "apredict", None)
    if apredict is not None:
        outputs: list[Any] = await apredict(columns)
        return outputs
    return model.predict(columns)


def cpu_ms_since(model: Model, cpu_start: float) -> float | None:
    """The model's CPU cost on this thread since ``time.thread_time()`` was ``cpu_start``: measured for
    a model that ran inline; None (not measured here) for an awaited one, whose work happens on another
    thread or server while this thread serves other requests, which must not be charged to it."""
    if getattr(model, "apredict", None) is not None:
        return None
    return (time.thread_time() - cpu_start) * 1e3
