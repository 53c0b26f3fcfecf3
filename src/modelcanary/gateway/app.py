"""The data plane: an ASGI app that routes each prediction to a variant, records telemetry and
joins late labels. Pydantic and FastAPI stay off this path (see MEASUREMENTS.md); bodies are
parsed with orjson.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp

from modelcanary.domain.errors import BackendError, RequestError, UnknownEndpoint
from modelcanary.domain.telemetry import Variant
from modelcanary.gateway import answers, endpoints, protocols, scoring, v2
from modelcanary.gateway.answers import score_of
from modelcanary.gateway.cache import Lookup, counted
from modelcanary.gateway.calls import predict_costed
from modelcanary.gateway.entry import Entry, Handler, Reply
from modelcanary.gateway.faults import CandidateRunner, DeadlineMissed, Ran
from modelcanary.gateway.following import Following
from modelcanary.gateway.labels import Labels
from modelcanary.gateway.metrics import Metrics
from modelcanary.gateway.recorder import Recorder
from modelcanary.gateway.router import choose
from modelcanary.gateway.serving import Serving, StaticRoutes
from modelcanary.gateway.shadow import Copy, ShadowLane
from modelcanary.ports import Backend, Model, RouteSource, TelemetryStore

__all__ = ["MAX_BODY_BYTES", "VARIANT_HEADER", "Gateway", "Serving", "StaticRoutes", "create_app"]

log = logging.getLogger("modelcanary.gateway")
MAX_BODY_BYTES = 8 * 1024 * 1024
VARIANT_HEADER = "x-modelcanary-variant"
_VARIANT_HEADER = VARIANT_HEADER.encode()
# What a protocol makes of a variant's outputs (the V2 answer, its output tensor): run before the
# success is recorded, so outputs the protocol cannot carry are the model's failure, not a 500 after.
Form = Callable[[Variant, list[Any]], Any]


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1e3


def _answered(
    predicted: list[Any], rows: int, lookup: Lookup | None, form: Form | None, serving: Serving, variant: Variant
) -> tuple[list[Any], Any]:
    """Every row's output (the cached ones with ``predicted``, the model's for the ``rows`` it was
    asked) and the protocol's answer of them. ``BackendError`` when they cannot answer the request:
    a number of outputs other than the rows' (a remote that drops rows), or outputs the protocol
    cannot carry (rows of unequal widths in a V2 tensor). Both variants pass here before a success
    is recorded, so telemetry never counts an answer the client does not get."""
    if len(predicted) != rows:
        raise BackendError(f"{serving.version(variant).uri} returned {len(predicted)} outputs for {rows} rows")
    outputs = lookup.fill(predicted) if lookup is not None else predicted
    if form is None:
        return outputs, outputs
    try:
        return outputs, form(variant, outputs)
    except RequestError as exc:
        raise BackendError(f"{serving.version(variant).uri}: its outputs cannot be answered: {exc}") from exc


def _baseline_failure(exc: Exception) -> RequestError:
    """What the client hears when the baseline fails: a model served elsewhere (or one whose outputs
    cannot answer) is a bad gateway, 502, or 504 when it did not answer in time (an adapter raises
    that ``BackendError`` from a ``TimeoutError``), with what happened; an in-process model that
    raised is a 500."""
    if not isinstance(exc, BackendError):
        return RequestError("the model failed on this input", field="model", status=500)
    if isinstance(exc.__cause__, TimeoutError):
        return RequestError(f"the baseline model did not answer in time: {exc}", field="model", status=504)
    return RequestError(f"the baseline model failed: {exc}", field="model", status=502)


class Gateway(Following):
    def __init__(
        self,
        *,
        routes: RouteSource,
        backend: Backend,
        telemetry: TelemetryStore | None,
        source: str,
        max_predictions: int = 200_000,
        candidate_workers: int = 4,
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
        self.metrics = Metrics(self.recorder)
        self.shadow = ShadowLane(self.recorder, lambda endpoint: self.serving.get(endpoint))
        self.labels = Labels(
            self.recorder,
            telemetry,
            source,
            self.metrics.relayed_labels,
            lambda endpoint, variant: self.metrics.endpoint(endpoint).of(variant),
        )
        self.serving: dict[str, Serving] = {}
        self.routes_version = -1  # of the last routing table applied whole (every model loaded)
        self.applied = False  # a routing table was applied, whole or but for endpoints in ``unavailable``
        self.unavailable: dict[str, str] = {}  # endpoints whose models the last refresh could not load: why
        self._models: dict[str, Model] = {}
        self.candidates = CandidateRunner(workers=candidate_workers)
        self._tripped: set[str] = set()  # rollouts whose candidate this gateway took out
        self._flush_lock = asyncio.Lock()  # flushes in order: an older snapshot never lands last
        self._tasks: set[asyncio.Task[bool]] = set()
        self._loaded = False  # a model was loaded since the heap was last settled
        self._settled_once = False

    # -- data plane ------------------------------------------------------------------------------

    def serving_of(self, endpoint: str, version: str | None = None) -> Serving:
        """The endpoint a path names; a V2 path naming a version must name one it serves (the
        gateway, not the client, picks the variant: the version is checked, not obeyed)."""
        serving = self.serving.get(endpoint)
        if serving is None:
            why = self.unavailable.get(endpoint)
            if why is not None:  # its models did not load (the registry down, say): not a wrong name
                why = f"endpoint {endpoint!r} is not loaded yet, retried every refresh: {why}"
                raise RequestError(why, field="endpoint", status=503)
            known = ", ".join(sorted(self.serving)) or "none"
            raise UnknownEndpoint(f"no endpoint {endpoint!r}; serving: {known}", field="endpoint")
        if version is not None and version not in serving.versions():
            raise RequestError(
                f"endpoint {serving.route.endpoint!r} serves versions {serving.versions()}, not {version!r}",
                field="version",
                status=404,
            )
        return serving

    async def _predict(
        self,
        serving: Serving,
        headers: Mapping[str, str],
        columns: dict[str, list[Any]],
        prefix: str,
        *,
        typed: bool = False,
        form: Form | None = None,
        params: Any = None,
        params_field: str = "params",
    ) -> tuple[Variant, Any, list[str]]:
        """Route, predict, record. A failing candidate costs the client nothing: the baseline answers.
        ``typed``: the protocol's parser checked each value's type against the signature. The answer is ``form``'s
        of the outputs, or the outputs; ``params``: its inference parameters, sent in ``params_field``."""
        serving = serving.with_params(params) if params is not None else serving
        route = serving.route
        rows = protocols.validate(columns, serving.baseline.columns, prefix=prefix, max_rows=self.max_rows, typed=typed)
        segmenter, segment = serving.segmenter, None
        key = segmenter.sticky_key(headers, columns)  # a field's value in one spelling: 42 and 42.0 are one user
        if segmenter.active:
            segment = segmenter.segment(headers, columns)
        for name in segmenter.routing_only:
            columns.pop(name, None)  # routing only: the model does not take it
        rollout_id = route.rollout_id
        candidate = (
            serving.candidate
            if rollout_id is not None
            and (segment is None or segmenter.eligible(segment))
            and choose(rollout_id, key, route.weight) is Variant.CANDIDATE
            else None
        )
        if key is not None and rollout_id is not None and serving.keys.first(key):
            # a user's first request at this weight: the split of users is what the sample-ratio check tests
            self.recorder.new_key(rollout_id, Variant.BASELINE if candidate is None else Variant.CANDIDATE, segment)
        try:
            if candidate is not None and rollout_id is not None:
                return await self._candidate(serving, candidate, rollout_id, columns, rows, segment, form)
            return await self._baseline(serving, columns, rows, segment, form)
        except RequestError as exc:
            raise protocols.in_request_terms(exc, prefix, params_field) from exc

    async def _baseline(
        self,
        serving: Serving,
        columns: dict[str, list[Any]],
        rows: int,
        segment: str | None,
        form: Form | None,
        *,
        shadow: bool = True,
    ) -> tuple[Variant, Any, list[str]]:
        """The baseline: inline on the loop's thread (an in-process model) or awaited (a remote one, a
        batching queue); the fast path, and the fallback. Its refusal of the input goes to the
        client as it is; its failure is a 5xx (``_baseline_failure``)."""
        route = serving.route
        started = time.perf_counter()
        series = serving.series.baseline
        lookup = serving.baseline_cache.lookup(columns) if serving.baseline_cache is not None else None
        predicted: list[Any] | Exception
        cpu_ms: float | None = None
        try:
            if lookup is None:
                predicted, cpu_ms, _ = await predict_costed(serving.baseline, columns, on_loop=True)
            elif lookup.missing:
                predicted, cpu_ms, _ = await predict_costed(
                    serving.baseline, lookup.missing_columns(columns), on_loop=True
                )
                rows = len(lookup.missing)
            else:  # all from the cache: no model call to time or charge
                predicted, rows, cpu_ms = [], 0, None
            if isinstance(predicted, Exception):
                raise predicted
            outputs, answer = _answered(predicted, rows, lookup, form, serving, Variant.BASELINE)
        except RequestError:
            raise
        except Exception as exc:
            log.exception("baseline model of %s failed", route.endpoint)
            latency_ms = _ms_since(started)
            self.recorder.record(
                route.rollout_id, Variant.BASELINE, latency_ms=latency_ms, error=True, cpu_ms=cpu_ms, segment=segment
            )
            series.failed(latency_ms)
            if shadow:  # the lane's error rate is the candidate's on the same traffic, failures included
                self._copy(serving, columns, [], [None] * len(next(iter(columns.values()), ())), segment)
            raise _baseline_failure(exc) from exc
        # no latency for an answer wholly from the cache: no model answered (``VariantTelemetry.observe``)
        answered_ms = _ms_since(started) if rows else None
        scores = [score_of(output) for output in outputs]
        ids = self.recorder.record(
            route.rollout_id,
            Variant.BASELINE,
            latency_ms=answered_ms,
            error=False,
            cpu_ms=cpu_ms,
            scores=scores,
            sink=series,
            segment=segment,
            cache=counted(lookup, series),
            mature_s=route.label_maturity_s,
        )
        series.observe(answered_ms, scores)
        if shadow:
            self._copy(serving, columns, ids, scores, segment)
        return Variant.BASELINE, answer, ids

    def _copy(
        self,
        serving: Serving,
        columns: dict[str, list[Any]],
        ids: list[str],
        scores: list[float | None],
        segment: str | None,
    ) -> None:
        """Offer the shadow lane a copy of a request the baseline served (``ids``, ``scores``: its
        predictions, to pair with the candidate's) or failed on (no ids: nothing to pair, but the
        lane's error rate counts the candidate on it, as the baseline's counts the failure), when
        the rollout has a lane and the request is in its sample."""
        route = serving.route
        settings = route.shadow
        if (
            settings is not None
            and serving.candidate is not None
            and route.rollout_id is not None
            and random.random() < settings.sample
        ):
            self.shadow.offer(Copy(serving, route.rollout_id, settings, columns, ids, scores, segment))

    async def _candidate(
        self,
        serving: Serving,
        candidate: Model,
        rollout_id: str,
        columns: dict[str, list[Any]],
        rows: int,
        segment: str | None,
        form: Form | None,
    ) -> tuple[Variant, Any, list[str]]:
        """The candidate within its deadline; on any failure the baseline answers, the failure is
        counted, and enough of them in a row take the candidate out of this gateway."""
        started = time.perf_counter()
        lookup = serving.candidate_cache.lookup(columns) if serving.candidate_cache is not None else None
        # only a call to the model tells the breaker anything: an answer wholly from the cache does not
        called = lookup is None or bool(lookup.missing)
        if not called:  # all from the cache: no model call to time or charge
            ran, asked = Ran([], None, None), 0
        else:
            todo, asked = (
                (lookup.missing_columns(columns), len(lookup.missing)) if lookup is not None else (columns, rows)
            )
            ran = await self.candidates.predict(candidate, todo, serving.guard.deadline)
        series = serving.series.candidate
        if ran.outputs is not None:
            try:
                outputs, answer = _answered(ran.outputs, asked, lookup, form, serving, Variant.CANDIDATE)
            except BackendError as exc:
                ran = ran._replace(outputs=None, error=exc)
            else:
                if called:
                    serving.guard.success()
                # as if it ran inline, as the baseline does: a deadline's pool is not the model's time
                latency_ms = _ms_since(started) - ran.waited_ms if called else None
                scores = [score_of(output) for output in outputs]
                ids = self.recorder.record(
                    rollout_id,
                    Variant.CANDIDATE,
                    latency_ms=latency_ms,
                    error=False,
                    cpu_ms=ran.cpu_ms,
                    scores=scores,
                    sink=series,
                    segment=segment,
                    cache=counted(lookup, series),
                    mature_s=serving.route.label_maturity_s,
                )
                series.observe(latency_ms, scores)
                return Variant.CANDIDATE, answer, ids
        failed_ms = _ms_since(started) - ran.waited_ms  # as for an answer: the pool's wait is not the model's
        if isinstance(ran.error, DeadlineMissed):
            serving.series.abandoned.inc()
        if not isinstance(ran.error, RequestError):
            log.warning("candidate model of %s failed: %r", serving.route.endpoint, ran.error)
        # The baseline answers. If it refuses the input too (a 4xx), the client sent it wrong: the
        # RequestError goes to the client and no variant is charged with an error. If it fails as
        # well (a 5xx), the candidate's failure still counts, for the breaker too.
        try:
            answer = await self._baseline(serving, columns, rows, segment, form, shadow=False)
        except RequestError as exc:
            if exc.status >= 500:
                self._candidate_failed(serving, rollout_id, ran, failed_ms, segment)
            raise
        self._candidate_failed(serving, rollout_id, ran, failed_ms, segment)
        return answer

    def _candidate_failed(
        self, serving: Serving, rollout_id: str, ran: Ran, failed_ms: float, segment: str | None
    ) -> None:
        """Charge the candidate one failed request, and trip the breaker if that was one too many."""
        self.recorder.record(
            rollout_id, Variant.CANDIDATE, latency_ms=failed_ms, error=True, cpu_ms=ran.cpu_ms, segment=segment
        )
        serving.series.candidate.failed(failed_ms)
        if serving.guard.failure():
            self._trip(serving, rollout_id, ran.error)

    def _trip(self, serving: Serving, rollout_id: str, error: BaseException | None) -> None:
        """Take the candidate out of this gateway now, and tell the controller through the store now."""
        breaker = serving.guard.breaker
        assert breaker is not None
        reason = (
            f"the candidate failed {breaker.consecutive_failures} times in a row on gateway {self.source} "
            f"(last: {type(error).__name__}: {error}); the gateway took it out"
        )
        log.error("endpoint %s, rollout %s: %s", serving.route.endpoint, rollout_id, reason)
        self._tripped.add(rollout_id)
        # The endpoint's serving now, not the one this request began with: a routing refresh may have
        # swapped in another (same rollout, a new weight) while the candidate ran.
        endpoint = serving.route.endpoint
        current = self.serving.get(endpoint)
        if current is not None and current.candidate is not None and current.route.rollout_id == rollout_id:
            self.serving = {**self.serving, endpoint: replace(current, candidate=None)}
        serving.series.breaker_trips.inc()
        serving.series.breaker_open.set(1)
        serving.series.weight.set(0.0)
        self.recorder.trip(rollout_id, Variant.CANDIDATE, reason)
        task = asyncio.get_running_loop().create_task(self.flush())
        self._tasks.add(task)  # hold a reference until it is done (the loop keeps only weak ones)
        task.add_done_callback(self._tasks.discard)

    async def infer_v2(self, endpoint: str, version: str | None, headers: Mapping[str, str], raw: bytes) -> Reply:
        """``POST /v2/models/{endpoint}[/versions/{version}]/infer`` (raw ASGI: see ``asgi``)."""
        serving = self.serving_of(endpoint, version)
        body = v2.decode_body(
            raw,
            header_length=headers.get(v2.HEADER_LENGTH),
            encoding=headers.get("content-encoding"),
            limit=self.max_body_bytes,
        )
        infer = v2.parse_request(body)
        columns = protocols.v2_columns(body, serving.baseline.columns)

        def answer(variant: Variant, outputs: list[Any]) -> dict[str, Any]:
            served = serving.version(variant)
            return answers.v2_response(
                model_name=serving.route.endpoint,
                model_version=served.version or None,  # a version the metadata lists (none for a remote model)
                request_id=infer.request_id,
                outputs=outputs,
                variant=variant.value,
                prediction_ids=(),  # known once the answer is recorded, below
            )

        # the V2 parser checked each value against its tensor's datatype and the signature's type
        variant, content, ids = await self._predict(
            serving, headers, columns, "inputs", typed=True, form=answer, params=infer.params, params_field="parameters"
        )
        content["parameters"]["prediction_ids"] = ",".join(ids)  # a V2 parameter is text, a number or a bool
        payload, header_length = v2.encode_response(content, binary=infer.binary_output)
        reply = [(_VARIANT_HEADER, variant.value.encode())]
        if header_length is not None:
            reply.append((v2.HEADER_LENGTH.encode(), header_length.encode()))
        return 200, payload, reply

    async def invocations(self, endpoint: str, _version: str | None, headers: Mapping[str, str], raw: bytes) -> Reply:
        """``POST /v1/endpoints/{endpoint}/invocations``: MLflow's scoring protocol."""
        serving = self.serving_of(endpoint)
        encoding = headers.get("content-encoding")
        raw = raw if encoding is None else v2.decoded(raw, encoding=encoding, limit=self.max_body_bytes)
        columns, prefix, params = scoring.read(raw, headers.get("content-type"), serving.baseline.columns)
        variant, predictions, ids = await self._predict(
            serving, headers, columns, prefix, form=answers.json_predictions, params=params
        )
        rest = orjson.dumps({"prediction_ids": ids, "variant": variant.value})
        return 200, b'{"predictions":' + predictions + b"," + rest[1:], [(_VARIANT_HEADER, variant.value.encode())]


def create_app(
    gateway: Gateway, *, background: list[Callable[[], Any]] | None = None, beside: ASGIApp | None = None
) -> ASGIApp:
    """The ASGI app; ``gateway.run`` and any ``background`` coroutines run for the app's lifetime.
    Predictions are answered on the raw path of ``entry.Entry``, the rest by Starlette;
    ``beside`` (the control API) gets every path the gateway's routes do not match."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> Any:
        await gateway.refresh()
        tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(gateway.shadow.run())]
        tasks += [asyncio.create_task(start()) for start in background or ()]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await gateway.last_flush()
            await gateway.close()

    routes: list[BaseRoute] = [*endpoints.routes(gateway), *([Mount("", app=beside)] if beside is not None else [])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=dict.fromkeys((404, 405), endpoints.no_route))
    handlers: dict[str, Handler] = {"infer": gateway.infer_v2, "invocations": gateway.invocations}
    return Entry(app, handlers, max_body_bytes=gateway.max_body_bytes)
