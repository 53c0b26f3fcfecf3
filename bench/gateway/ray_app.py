"""Setup (6): Ray Serve serving the model, default settings (HTTP proxy + one replica), the same
V2 body; with a third argument, the replica's ``max_ongoing_requests`` set to it (6b). Runs under
the bench's server venv (Ray is no project dependency).

    bench/.venv-servers/ray/bin/python bench/gateway/ray_app.py MODEL.joblib PORT [MAX_ONGOING]

Ray's default ``max_ongoing_requests`` is 5 (it was 100 before Ray 2.32): with more connections
than that, the proxy's router holds the rest and retries with backoff, and at 32 connections Ray
Serve 2.60 answered ~20 req/s here, against ~470 with the limit at 64.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

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
    deployment: Any = Fraud  # @serve.deployment made it a Deployment; mypy keeps the class's own type
    if sys.argv[3:]:
        deployment = deployment.options(max_ongoing_requests=int(sys.argv[3]))
    serve.run(deployment.bind(path), route_prefix="/", blocking=False)
    print("ray serve ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
