"""The data plane: an ASGI app that routes each prediction to a variant, records telemetry and
joins late labels. Pydantic and FastAPI stay off this path (see MEASUREMENTS.md); bodies are
parsed with orjson.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from modelcanary.domain.errors import ModelcanaryError, RequestError, UnknownEndpoint
from modelcanary.domain.state import ModelVersion, Route
from modelcanary.domain.telemetry import Variant
from modelcanary.gateway import protocols, v2
from modelcanary.gateway.calls import cpu_ms_since, predict_async
from modelcanary.gateway.recorder import Recorder, parse_labels, score_of
from modelcanary.gateway.router import choose
from modelcanary.ports import Backend, Model, RouteSource, TelemetryStore

log = logging.getLogger("modelcanary.gateway")
MAX_BODY_BYTES = 8 * 1024 * 1024
VARIANT_HEADER = "x-modelcanary-variant"


@dataclass(frozen=True, slots=True)
class Serving:
    """One endpoint's route with its models loaded: what a request needs, swapped in whole."""

    route: Route
    baseline: Model
    candidate: Model | None

    def model(self, variant: Variant) -> Model:
        return self.candidate if variant is Variant.CANDIDATE and self.candidate is not None else self.baseline

    def version(self, variant: Variant) -> ModelVersion:
        if variant is Variant.CANDIDATE and self.route.candidate is not None:
            return self.route.candidate
        return self.route.baseline


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1e3


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)


def _error(exc: RequestError) -> Response:
    return _json({"error": str(exc), "field": exc.field}, status=exc.status)


class StaticRoutes:
    """A ``RouteSource`` for endpoints named on the command line, each serving one model with no
    rollout, with a store's routes (when there is a store) taking precedence endpoint by endpoint:
    a rollout started on a static endpoint takes it over, and gives it back when it ends."""

    def __init__(self, routes: dict[str, Route], store: RouteSource | None = None) -> None:
        self._static = routes
        self._store = store

    def routes_version(self) -> int:
        return self._store.routes_version() if self._store is not None else 0

    def routes(self) -> dict[str, Route]:
        return {**self._static, **(self._store.routes() if self._store is not None else {})}


class Gateway:
    def __init__(
        self,
        *,
        routes: RouteSource,
        backend: Backend,
        telemetry: TelemetryStore | None,
        source: str,
        max_predictions: int = 200_000,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_rows: int = protocols.MAX_ROWS,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_rows = max_rows
        self._routes = routes
        self._backend = backend
        self._telemetry = telemetry
        self.source = source
        self.recorder = Recorder(max_predictions=max_predictions)
        self.serving: dict[str, Serving] = {}
        self._routes_version = -1
        self._models: dict[str, Model] = {}

    # -- control: routes and flushes, off the request path -----------------------------------------

    async def refresh(self) -> bool:
        """Apply the store's routing table if it changed; models load in a thread."""
        version = await asyncio.to_thread(self._routes.routes_version)
        if version == self._routes_version:
            return False
        routes = await asyncio.to_thread(self._routes.routes)
        serving, failed = {}, []
        for endpoint, route in routes.items():
            try:
                baseline = await self._load(route.baseline)
                candidate = await self._load(route.candidate) if route.candidate and route.weight > 0 else None
            except ModelcanaryError:
                # One endpoint whose model cannot load must not hold back the others (a rollback
                # included): it keeps what it served, and the next poll tries it again.
                log.exception("endpoint %s: cannot load its models; keeping its previous route", endpoint)
                failed.append(endpoint)
                if endpoint in self.serving:
                    serving[endpoint] = self.serving[endpoint]
                continue
            serving[endpoint] = Serving(route=route, baseline=baseline, candidate=candidate)
        self.serving = serving  # one assignment: a request sees the old table or the new one, whole
        in_use = {version.uri for s in serving.values() for version in (s.route.baseline, s.route.candidate) if version}
        self._models = {uri: model for uri, model in self._models.items() if uri in in_use}
        if not failed:
            self._routes_version = version
        log.info(
            "routing table %s applied: %s", version, {e: f"{s.route.weight:g}% candidate" for e, s in serving.items()}
        )
        return True

    async def _load(self, version: ModelVersion) -> Model:
        model = self._models.get(version.uri)
        if model is None:
            model = self._models[version.uri] = await asyncio.to_thread(self._backend.load, version)
        return model

    async def flush(self) -> None:
        if self._telemetry is None:
            return
        rows = self.recorder.changed()
        if not rows:
            return
        try:
            await asyncio.to_thread(self._telemetry.write_telemetry, self.source, rows)
        except ModelcanaryError:
            self.recorder.unflushed(rows)  # cumulative counts: the next flush carries them
            log.exception("telemetry flush failed; will retry")

    async def close(self) -> None:
        """Release what the backend holds open (connection pools to remote models)."""
        aclose = getattr(self._backend, "aclose", None)
        if aclose is not None:
            await aclose()

    async def run(self, *, poll_s: float = 0.5, flush_s: float = 1.0) -> None:
        """Follow the routing table and flush telemetry until cancelled."""
        last_flush = time.monotonic()
        while True:
            try:
                await self.refresh()
            except ModelcanaryError:
                log.exception("could not apply the routing table; serving the last one")
            if time.monotonic() - last_flush >= flush_s:
                await self.flush()
                last_flush = time.monotonic()
            await asyncio.sleep(poll_s)

    # -- data plane ------------------------------------------------------------------------------

    def _serving(self, endpoint: str) -> Serving:
        serving = self.serving.get(endpoint)
        if serving is None:
            known = ", ".join(sorted(self.serving)) or "none"
            raise UnknownEndpoint(f"no endpoint {endpoint!r}; serving: {known}", field="endpoint")
        return serving

    async def _raw(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        if int(request.headers.get("content-length") or 0) > limit:
            raise RequestError(f"body larger than {limit} bytes", field="body", status=413)
        raw = await request.body()
        if len(raw) > limit:
            raise RequestError(f"body larger than {limit} bytes", field="body", status=413)
        return raw

    async def _body(self, request: Request) -> Any:
        raw = await self._raw(request)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"not valid JSON: {exc}", field="body") from exc

    async def _predict(
        self, serving: Serving, request: Request, columns: dict[str, list[Any]], prefix: str
    ) -> tuple[Variant, list[Any], list[str]]:
        """Route, predict, record. A failing candidate costs the client nothing: the baseline answers."""
        route = serving.route
        protocols.validate(columns, serving.baseline.columns, prefix=prefix, max_rows=self.max_rows)
        key: str | None = None
        sticky = route.sticky
        if sticky is not None and sticky.header is not None:
            key = request.headers.get(sticky.header)
        elif sticky is not None and sticky.field is not None and sticky.field in columns:
            key = str(columns[sticky.field][0])
            if not any(column.name == sticky.field for column in serving.baseline.columns or ()):
                del columns[sticky.field]  # routing only: the model does not take it
        variant = Variant.BASELINE
        if serving.candidate is not None and route.rollout_id is not None:
            variant = choose(route.rollout_id, key, route.weight)
        # the model runs on this thread, so thread CPU time is its cost (the cost guardrail)
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            outputs = await predict_async(serving.model(variant), columns)
        except Exception as exc:
            if variant is Variant.BASELINE:
                if isinstance(exc, RequestError):
                    raise
                log.exception("baseline model of %s failed", route.endpoint)
                self.recorder.record(route.rollout_id, variant, latency_ms=_ms_since(started), error=True)
                raise RequestError("the model failed on this input", field="model", status=500) from exc
            if not isinstance(exc, RequestError):
                log.warning("candidate model of %s failed: %r", route.endpoint, exc)
            failed_ms, failed_cpu_ms = _ms_since(started), cpu_ms_since(serving.model(variant), cpu)
            started, cpu = time.perf_counter(), time.thread_time()
            # The baseline answers. If it refuses the input too, the client sent it wrong: the
            # RequestError goes to the client and no variant is charged with an error.
            outputs = await predict_async(serving.baseline, columns)
            self.recorder.record(
                route.rollout_id, Variant.CANDIDATE, latency_ms=failed_ms, error=True, cpu_ms=failed_cpu_ms
            )
            variant = Variant.BASELINE
        ids = self.recorder.record(
            route.rollout_id,
            variant,
            latency_ms=_ms_since(started),
            error=False,
            cpu_ms=cpu_ms_since(serving.model(variant), cpu),
            scores=[score_of(output) for output in outputs],
        )
        return variant, outputs, ids

    async def infer_v2(self, request: Request) -> Response:
        try:
            serving = self._serving_v2(request)
            headers = request.headers
            body = v2.decode_body(
                await self._raw(request),
                header_length=headers.get(v2.HEADER_LENGTH),
                encoding=headers.get("content-encoding"),
            )
            infer = v2.parse_request(body)
            columns = protocols.v2_columns(body, serving.baseline.columns)
            variant, outputs, ids = await self._predict(serving, request, columns, "inputs")
            version = serving.version(variant)
            content = protocols.v2_response(
                model_name=serving.route.endpoint,
                model_version=f"{version.name}/{version.version}",
                request_id=infer.request_id,
                outputs=outputs,
                variant=variant.value,
                prediction_ids=ids,
            )
        except RequestError as exc:
            return _error(exc)
        payload, header_length = v2.encode_response(content, binary=infer.binary_output)
        if header_length is None:
            return Response(payload, media_type="application/json", headers={VARIANT_HEADER: variant.value})
        reply = {VARIANT_HEADER: variant.value, v2.HEADER_LENGTH: header_length}
        return Response(payload, media_type="application/octet-stream", headers=reply)

    async def invocations(self, request: Request) -> Response:
        try:
            serving = self._serving(request.path_params["endpoint"])
            body = await self._body(request)
            columns = protocols.mlflow_columns(body, serving.baseline.columns)
            variant, outputs, ids = await self._predict(serving, request, columns, protocols.mlflow_format(body))
        except RequestError as exc:
            return _error(exc)
        content = {"predictions": outputs, "prediction_ids": ids, "variant": variant.value}
        return _json(content, headers={VARIANT_HEADER: variant.value})

    async def feedback(self, request: Request) -> Response:
        try:
            accepted = self.recorder.label(parse_labels(await self._body(request)))
        except RequestError as exc:
            return _error(exc)
        return _json({"accepted": accepted})

    async def ready(self, _request: Request) -> Response:
        if self._routes_version < 0:
            return _json({"ready": False, "reason": "routing table not loaded yet"}, status=503)
        return _json({"ready": True, "endpoints": sorted(self.serving), "routes_version": self._routes_version})

    async def live(self, _request: Request) -> Response:
        return _json({"live": True})

    def _serving_v2(self, request: Request) -> Serving:
        """The endpoint of a V2 path; a path naming a version must name one this endpoint serves
        (the gateway, not the client, picks the variant: the version is checked, not obeyed)."""
        serving = self._serving(request.path_params["endpoint"])
        wanted = request.path_params.get("version")
        if wanted is not None and wanted not in self._versions(serving):
            raise RequestError(
                f"endpoint {serving.route.endpoint!r} serves versions {self._versions(serving)}, not {wanted!r}",
                field="version",
                status=404,
            )
        return serving

    @staticmethod
    def _versions(serving: Serving) -> list[str]:
        route = serving.route
        served = [route.baseline] + ([route.candidate] if serving.candidate is not None and route.candidate else [])
        return [version.version for version in served if version.version]

    async def model_metadata(self, request: Request) -> Response:
        try:
            serving = self._serving_v2(request)
        except RequestError as exc:
            return _error(exc)
        return _json(v2.model_metadata(serving.route.endpoint, self._versions(serving), serving.baseline))

    async def model_ready(self, request: Request) -> Response:
        try:
            serving = self._serving_v2(request)
        except RequestError as exc:
            return _error(exc)
        return _json({"name": serving.route.endpoint, "ready": True})

    async def server_metadata(self, _request: Request) -> Response:
        return _json(v2.server_metadata())

    def routes(self) -> list[HttpRoute]:
        return [
            HttpRoute("/v2", self.server_metadata, methods=["GET"]),
            HttpRoute("/v2/models/{endpoint}/infer", self.infer_v2, methods=["POST"]),
            HttpRoute("/v2/models/{endpoint}", self.model_metadata, methods=["GET"]),
            HttpRoute("/v2/models/{endpoint}/ready", self.model_ready, methods=["GET"]),
            HttpRoute("/v2/models/{endpoint}/versions/{version}/infer", self.infer_v2, methods=["POST"]),
            HttpRoute("/v2/models/{endpoint}/versions/{version}", self.model_metadata, methods=["GET"]),
            HttpRoute("/v2/models/{endpoint}/versions/{version}/ready", self.model_ready, methods=["GET"]),
            HttpRoute("/v1/endpoints/{endpoint}/invocations", self.invocations, methods=["POST"]),
            HttpRoute("/v1/feedback", self.feedback, methods=["POST"]),
            HttpRoute("/v2/health/ready", self.ready, methods=["GET"]),
            HttpRoute("/v2/health/live", self.live, methods=["GET"]),
        ]


def create_app(gateway: Gateway, *, background: list[Callable[[], Any]] | None = None) -> Starlette:
    """The ASGI app; ``gateway.run`` and any ``background`` coroutines run for the app's lifetime."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> Any:
        await gateway.refresh()
        tasks = [asyncio.create_task(gateway.run())]
        tasks += [asyncio.create_task(start()) for start in background or ()]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await gateway.flush()
            await gateway.close()

    return Starlette(routes=gateway.routes(), lifespan=lifespan)
