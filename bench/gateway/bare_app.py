"""Setup (1): the bare model server a gateway has to be compared with. A raw ASGI app (no
framework), orjson, the model called on the event loop: the least a Python server can do per
request. It speaks the same V2 infer body as the others (one [rows, features] FP64 tensor).

    python -m bench.gateway.bare_app MODEL.joblib PORT [hello] [granian]
"""

from __future__ import annotations

import sys
from typing import Any

import joblib
import numpy as np
import orjson

from bench.gateway.model import MODEL_NAME
from modelcanary.sim.fraud import BASELINE_FEATURES

HEADERS = [(b"content-type", b"application/json")]
RSGI_HEADERS = [("content-type", "application/json")]
METADATA = orjson.dumps(
    {
        "name": MODEL_NAME,
        "platform": "sklearn",
        "inputs": [{"name": name, "datatype": "FP64", "shape": [-1]} for name in BASELINE_FEATURES],
        "outputs": [{"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]}],
    }
)


HELLO = b'{"model_name":"fraud","outputs":[]}'


class BareApp:
    """The model behind the least code a Python server can run per request: an ASGI app
    (``__call__``, served by uvicorn in setup 1) and an RSGI one (``__rsgi__``, served by granian
    as ``modelcanary gateway`` is, in setup 1g), both around one ``answer``."""

    def __init__(self, model: Any, *, hello: bool = False) -> None:
        self.model = model
        self.hello = hello

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if method == "GET":  # model metadata, else readiness
            return 200, METADATA if path == f"/v2/models/{MODEL_NAME}" else b'{"ready":true}'
        if self.hello:
            return 200, HELLO
        request = orjson.loads(body)
        tensors = request["inputs"]
        if len(tensors) == 1:  # one [rows, features] tensor
            x = np.asarray(tensors[0]["data"], dtype=np.float64).reshape(tensors[0]["shape"])
        else:  # one 1-D tensor per column, in the metadata's order
            data = {tensor["name"]: tensor["data"] for tensor in tensors}
            x = np.array([data[name] for name in BASELINE_FEATURES], dtype=np.float64).T
        proba = self.model.predict_proba(x)
        out = {"name": "predict_proba", "datatype": "FP64", "shape": list(proba.shape), "data": proba.ravel()}
        payload = orjson.dumps(
            {"model_name": "fraud", "id": request.get("id"), "outputs": [out]}, option=orjson.OPT_SERIALIZE_NUMPY
        )
        return 200, payload

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, payload = self.answer(scope["method"], scope["path"], body)
        await send({"type": "http.response.start", "status": status, "headers": HEADERS})
        await send({"type": "http.response.body", "body": payload})

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        status, payload = self.answer(scope.method, scope.path, await protocol())
        protocol.response_bytes(status, RSGI_HEADERS, payload)


def main() -> None:
    path, port, *flags = sys.argv[1:]
    app = BareApp(joblib.load(path), hello="hello" in flags)
    if "granian" in flags:
        from modelcanary.gateway import server

        server.run(app, "127.0.0.1", int(port), server="granian")
        return
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
