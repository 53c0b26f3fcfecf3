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
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from modelcanary.adapters.backends.batching import BatchingModel
from modelcanary.adapters.backends.timing import Costed
from modelcanary.ports import Column, Model

M = TypeVar("M", Model, Model | None)  # a model, or none (an endpoint without a candidate)


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


class Parametrised:
    """A model that reads inference parameters (``takes_params``), bound to one request's, as the
    request sent them (the model refuses what is not an object): what the gateway calls in its
    place for that request, inline or awaited as the model is."""

    def __init__(self, model: Any, params: Any) -> None:
        self.model = model
        self.params = params
        self.columns: tuple[Column, ...] | None = model.columns
        self.apredict: Callable[[dict[str, list[Any]]], Awaitable[list[Any]]] | None = (
            partial(model.apredict, params=params) if getattr(model, "apredict", None) is not None else None
        )

    def predict(self, columns: dict[str, list[Any]]) -> list[Any]:
        outputs: list[Any] = self.model.predict(columns, params=self.params)
        return outputs


def with_params(model: M, params: Any) -> M | Parametrised:
    """``model`` for a request with inference parameters: bound to them if it reads them, and then
    out of its batching queue (the requests of one batch call would have to share them); as it is
    if it does not, as MLflow's server ignores params for a model without a params schema."""
    inner = model.model if isinstance(model, BatchingModel) else model
    if inner is None or not getattr(inner, "takes_params", False):
        return model
    return Parametrised(inner, params)
