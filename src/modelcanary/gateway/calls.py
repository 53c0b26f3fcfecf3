"""How the gateway calls a model: a model with ``apredict`` (remote servers, Ray, a batching queue)
is awaited, so the event loop serves other requests meanwhile; a plain ``predict`` runs inline, as
an in-process model's few microseconds cost less than a thread hop.

>>> import asyncio
>>> from modelcanary.adapters.testing import FunctionModel
>>> costed = asyncio.run(predict_costed(FunctionModel(lambda columns: [len(columns["a"])]), {"a": [1, 2]}))
>>> costed.outputs, costed.cpu_ms is not None, costed.waited_ms
([2], True, 0.0)
"""

from __future__ import annotations

from typing import Any

from modelcanary.adapters.backends.batching import BatchingModel
from modelcanary.adapters.backends.timing import Costed, timed_predict
from modelcanary.ports import Model


async def predict_costed(model: Model, columns: dict[str, list[Any]], *, on_loop: bool = False) -> Costed:
    """The model's outputs, and what the call cost in CPU time (ms; the cost guardrail's input):
    the thread CPU time of an inline call, a batching queue's share of its batch's, and None (not
    measured here) for a remote model, whose work happens in another process while this thread
    serves other requests, which must not be charged to it. ``on_loop``: nothing needs to cut this
    call short (no deadline), so a batching queue may run its batch on the loop's thread, as the
    model would run unbatched."""
    if isinstance(model, BatchingModel):
        return await model.apredict_costed(columns, on_loop=on_loop)
    apredict = getattr(model, "apredict", None)
    if apredict is not None:
        return Costed(await apredict(columns), None)
    outputs, cpu_ms, _wall_ms = timed_predict(model, columns)
    if isinstance(outputs, Exception):
        raise outputs
    return Costed(outputs, cpu_ms)
