"""How the gateway calls a model: a model with ``apredict`` (remote servers, Ray, a batching queue)
is awaited, so the event loop serves other requests meanwhile; a plain ``predict`` runs inline, as
an in-process model's few microseconds cost less than a thread hop.

>>> import asyncio
>>> from modelcanary.adapters.testing import FunctionModel
>>> asyncio.run(predict_async(FunctionModel(lambda columns: [len(columns["a"])]), {"a": [1, 2]}))
[2]
"""

from __future__ import annotations

from typing import Any

from modelcanary.ports import Model


async def predict_async(model: Model, columns: dict[str, list[Any]]) -> list[Any]:
    apredict = getattr(model, "apredict", None)
    if apredict is not None:
        outputs: list[Any] = await apredict(columns)
        return outputs
    return model.predict(columns)
