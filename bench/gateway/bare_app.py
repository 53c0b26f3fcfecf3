"""Setup (1): the bare model server a gateway has to be compared with. A raw ASGI app (no
framework), orjson, the model called on the event loop: the least a Python server can do per
request. It speaks the same V2 infer body as the others (one [rows, features] FP64 tensor).

    python -m bench.gateway.bare_app MODEL.joblib PORT
"""

from __future__ import annotations

import sys
from typing import Any

import joblib
import numpy as np
import orjson

HEADERS = [(b"content-type", b"application/json")]


HELLO = b'{"model_name":"fraud","outputs":[]}'


def make_app(model: Any, *, hello: bool = False) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
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
        if scope["method"] == "GET":  # readiness
            status, payload = 200, b'{"ready":true}'
        elif hello:
            status, payload = 200, HELLO
        else:
            request = orjson.loads(body)
            tensor = request["inputs"][0]
            x = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
            proba = model.predict_proba(x)
            out = {"name": "predict_proba", "datatype": "FP64", "shape": list(proba.shape), "data": proba.ravel()}
            payload = orjson.dumps(
                {"model_name": "fraud", "id": request.get("id"), "outputs": [out]}, option=orjson.OPT_SERIALIZE_NUMPY
            )
            status = 200
        await send({"type": "http.response.start", "status": status, "headers": HEADERS})
        await send({"type": "http.response.body", "body": payload})

    return app


def main() -> None:
    import uvicorn

    path, port = sys.argv[1], int(sys.argv[2])
    app = make_app(joblib.load(path), hello=sys.argv[3:] == ["hello"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
