"""Setup (6): Ray Serve serving the model, default settings (HTTP proxy + one replica), the same
V2 body. Runs under the bench's server venv (Ray is no project dependency).

    bench/.venv-servers/ray/bin/python bench/gateway/ray_app.py MODEL.joblib PORT
"""

from __future__ import annotations

import signal
import sys
import threading

import joblib
import numpy as np
import orjson
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response


@serve.deployment
class Fraud:
    def __init__(self, path: str) -> None:
        self.model = joblib.load(path)

    async def __call__(self, request: Request) -> Response:
        if request.method == "GET":
            return Response(b'{"ready":true}', media_type="application/json")
        body = orjson.loads(await request.body())
        tensor = body["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
        proba = self.model.predict_proba(x)
        out = {"name": "predict_proba", "datatype": "FP64", "shape": list(proba.shape), "data": proba.ravel()}
        payload = orjson.dumps(
            {"model_name": "fraud", "id": body.get("id"), "outputs": [out]}, option=orjson.OPT_SERIALIZE_NUMPY
        )
        return Response(payload, media_type="application/json")


def main() -> None:
    path, port = sys.argv[1], int(sys.argv[2])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # @serve.deployment makes Fraud a Deployment with .bind; mypy keeps a decorated class its own type
    serve.run(Fraud.bind(path), route_prefix="/", blocking=False)  # type: ignore[attr-defined]
    print("ray serve ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
