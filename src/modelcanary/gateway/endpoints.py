"""The gateway's HTTP endpoints other than predictions, on Starlette: V2 server and model metadata
and readiness, health, labels (``POST /v1/feedback``) and ``/metrics``. Predictions take the raw
ASGI path of ``entry.Entry``; these are few and may afford a framework."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from modelcanary.domain.errors import RequestError
from modelcanary.gateway import protocols, v2
from modelcanary.gateway.entry import error_reply, read_body

if TYPE_CHECKING:
    from modelcanary.gateway.app import Gateway


def routes(gateway: Gateway) -> list[HttpRoute]:
    handlers = _Endpoints(gateway)
    return [
        HttpRoute("/v2", handlers.server_metadata, methods=["GET"]),
        HttpRoute("/v2/models/{endpoint}", handlers.model_metadata, methods=["GET"]),
        HttpRoute("/v2/models/{endpoint}/ready", handlers.model_ready, methods=["GET"]),
        HttpRoute("/v2/models/{endpoint}/versions/{version}", handlers.model_metadata, methods=["GET"]),
        HttpRoute("/v2/models/{endpoint}/versions/{version}/ready", handlers.model_ready, methods=["GET"]),
        HttpRoute("/v1/feedback", handlers.feedback, methods=["POST"]),
        HttpRoute("/v2/health/ready", handlers.ready, methods=["GET"]),
        HttpRoute("/v2/health/live", handlers.live, methods=["GET"]),
        HttpRoute("/metrics", handlers.prometheus, methods=["GET"]),
    ]


async def no_route(request: Request, exc: Exception) -> Response:
    """A path or method the gateway has no route for, answered as its other errors are (JSON with
    ``error`` and ``field``), not as Starlette's plain text."""
    status = getattr(exc, "status_code", 404)
    why, field = ("no such path", "path") if status == 404 else ("not a method this path takes", "method")
    answer = _error(RequestError(f"{request.method} {request.url.path}: {why}", field=field, status=status))
    answer.headers.update(getattr(exc, "headers", None) or {})  # a 405's Allow
    return answer


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _error(exc: RequestError) -> Response:
    status, body, _headers = error_reply(exc)
    return Response(body, status_code=status, media_type="application/json")


class _Endpoints:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def feedback(self, request: Request) -> Response:
        """``POST /v1/feedback``: labels, all or none (``labels.Labels``)."""
        try:
            limit = self._gateway.max_body_bytes
            raw = await read_body(request.receive, request.headers, limit)
            # compressed as a prediction's body may be (it was read as JSON: a 400)
            raw = v2.decoded(raw, encoding=request.headers.get("content-encoding"), limit=limit)
            return _json(await self._gateway.labels.accept(protocols.json_body(raw)))
        except RequestError as exc:
            return _error(exc)

    async def ready(self, _request: Request) -> Response:
        """Ready once a routing table is applied: an endpoint whose models cannot load is listed
        under ``unavailable`` (with why) and has no ready model, but holds back no other endpoint."""
        gateway = self._gateway
        if not gateway.applied:
            return _json({"ready": False, "reason": "routing table not loaded yet"}, status=503)
        answer: dict[str, Any] = {
            "ready": True,
            "endpoints": sorted(gateway.serving),
            "routes_version": gateway.routes_version,
        }
        if gateway.unavailable:
            answer["unavailable"] = gateway.unavailable
        return _json(answer)

    async def live(self, _request: Request) -> Response:
        return _json({"live": True})

    async def prometheus(self, _request: Request) -> Response:
        body, content_type = self._gateway.metrics.exposition()
        return Response(body, media_type=content_type)

    async def model_metadata(self, request: Request) -> Response:
        try:
            serving = self._gateway.serving_of(request.path_params["endpoint"], request.path_params.get("version"))
        except RequestError as exc:
            return _error(exc)
        return _json(v2.model_metadata(serving.route.endpoint, serving.versions(), serving.baseline))

    async def model_ready(self, request: Request) -> Response:
        try:
            serving = self._gateway.serving_of(request.path_params["endpoint"], request.path_params.get("version"))
        except RequestError as exc:
            return _error(exc)
        return _json({"name": serving.route.endpoint, "ready": True})

    async def server_metadata(self, _request: Request) -> Response:
        return _json(v2.server_metadata())
