"""Models served by a remote Open Inference Protocol (KServe V2) server: Triton, KServe, MLServer, or
another modelcanary gateway. A model ref ``v2+http://HOST:PORT[/PREFIX]/models/NAME[/versions/V]``
names one; a model that takes one 2-D tensor (Triton's and MLServer's sklearn models, ``input-0:
[-1, 3]``) is named with its columns in order, ``...?columns=amount,velocity,age``, and gets one
``[rows, 3]`` tensor in that order whatever order the client sent them in.

Forwarding is the gateway's hot path, so it goes through pooled keep-alive connections per server
(``http1.Http1Pool``: a lean HTTP/1.1 client; aiohttp's cost the gateway ~70 µs a forwarded request
here, and httpx's AsyncClient was ~9x slower still, MEASUREMENTS.md), awaited on the gateway's
event loop (``apredict``). The model's signature comes from the server's model metadata
once, at load time. Failures become ``BackendError`` (unreachable, timeout, a 5xx, any 4xx but 400
and 422, an answer that is not V2 outputs: the candidate-failure path, and a 502 or 504 for a
baseline) or ``RequestError`` (the server refused the input with a 400 or 422, and says why). A
timeout's ``BackendError`` is raised from a ``TimeoutError`` (``http1.HttpTimeout``): the gateway
tells the client 504 for it.

>>> columnar({"amount": [1.5, 2.0], "hour": [3, 4]}, None)[1]["datatype"]
'INT64'
"""

from __future__ import annotations

import asyncio
import http.client
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import orjson

from modelcanary.adapters.backends.http1 import MAX_RESPONSE_BYTES, Http1Pool, HttpError
from modelcanary.domain.errors import BackendError, RequestError
from modelcanary.domain.refs import parse_model_ref
from modelcanary.domain.state import ModelVersion
from modelcanary.ports import SIGNATURE_TYPES, V2_DATATYPES, V2_PROTOCOL_PARAMETERS, Column, answered_datatype


def _datatype(values: list[Any]) -> str:
    if all(isinstance(value, bool) for value in values):
        return "BOOL"
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        return "INT64"
    if all(isinstance(value, int | float) and not isinstance(value, bool) for value in values):
        return "FP64"
    return "BYTES"


def columnar(columns: dict[str, list[Any]], signature: tuple[Column, ...] | None) -> list[dict[str, Any]]:
    """One 1-D tensor per column, typed by the signature where it names the column."""
    types = {column.name: V2_DATATYPES.get(column.type) for column in signature or ()}
    return [
        {"name": name, "shape": [len(values)], "datatype": types.get(name) or _datatype(values), "data": values}
        for name, values in columns.items()
    ]


def outputs_of(response: Any, where: str) -> list[Any]:
    """One output per row from a V2 infer response: its ``predict`` tensor (or its only one), as
    numbers for a 1-D tensor and rows of numbers for a 2-D one. Its data must fill its shape
    exactly: regrouped, a ragged tensor would answer rows that were never asked (the gateway then
    checks there is one output per row it sent).

    >>> outputs_of({"outputs": [{"name": "predict", "shape": [2, 2], "data": [1, 2, 3, 4]}]}, "m")
    [[1, 2], [3, 4]]
    >>> outputs_of({"outputs": [{"name": "predict", "shape": [2, 2], "data": [1, 2, 3]}]}, "m")
    Traceback (most recent call last):
    modelcanary.domain.errors.BackendError: m: output 'predict' holds 3 values, but its shape [2, 2] needs 4
    """
    tensors = response.get("outputs") if isinstance(response, dict) else None
    if not isinstance(tensors, list) or not tensors:
        raise BackendError(f"{where}: the response has no outputs")
    tensor = next((t for t in tensors if isinstance(t, dict) and t.get("name") == "predict"), tensors[0])
    shape, data = tensor.get("shape"), tensor.get("data")
    if (
        not isinstance(shape, list)
        or not isinstance(data, list)
        or not 1 <= len(shape) <= 2
        or not all(type(size) is int and size >= 0 for size in shape)
        or (len(shape) == 2 and shape[1] == 0)
    ):
        raise BackendError(f"{where}: output {tensor.get('name')!r} is not a 1-D or 2-D tensor with data: {shape}")
    if data and isinstance(data[0], list):  # nested, as some servers send it
        data = [value for row in data for value in (row if isinstance(row, list) else (row,))]
    size = shape[0] if len(shape) == 1 else shape[0] * shape[1]
    if len(data) != size:
        raise BackendError(
            f"{where}: output {tensor.get('name')!r} holds {len(data)} values, but its shape {shape} needs {size}"
        )
    if len(shape) == 1:
        return data
    width = shape[1]
    return [data[offset : offset + width] for offset in range(0, len(data), width)]


def matrix(columns: dict[str, list[Any]], order: tuple[Column, ...], name: str, datatype: str) -> list[dict[str, Any]]:
    """One ``[rows, columns]`` tensor, its columns in ``order`` (for a model that takes one 2-D input).

    >>> matrix({"b": [2, 4], "a": [1, 3]}, (Column("a", "double"), Column("b", "double")), "input-0", "FP64")
    [{'name': 'input-0', 'shape': [2, 2], 'datatype': 'FP64', 'data': [1, 2, 3, 4]}]
    """
    try:
        picked = [columns[column.name] for column in order]
    except KeyError as exc:
        raise RequestError(f"the model needs input {exc.args[0]!r}", field="inputs") from exc
    rows = len(picked[0]) if picked else 0
    data = [value for row in zip(*picked, strict=True) for value in row]
    return [{"name": name, "shape": [rows, len(order)], "datatype": datatype, "data": data}]


class V2RemoteModel:
    def __init__(
        self, backend: V2RemoteBackend, ref: str, url: str, metadata: dict[str, Any], *, matrix_columns: list[str]
    ) -> None:
        self._backend = backend
        self.ref = ref
        self.url = url
        parts = urllib.parse.urlsplit(url)
        tls = parts.scheme == "https"
        self._server = (parts.hostname or "", parts.port or (443 if tls else 80), tls)
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")
        inputs = metadata.get("inputs") or []
        self._matrix: tuple[str, str] | None = None  # (input name, datatype) when it takes one 2-D tensor
        self.columns: tuple[Column, ...] | None
        if matrix_columns:
            name = inputs[0]["name"] if len(inputs) == 1 else "input-0"
            datatype = inputs[0].get("datatype", "FP64") if len(inputs) == 1 else "FP64"
            self._matrix = (name, datatype)
            kind = SIGNATURE_TYPES.get(datatype, "string")
            self.columns = tuple(Column(name=column, type=kind) for column in matrix_columns)
        else:
            signature = [(t["name"], SIGNATURE_TYPES.get(t.get("datatype"), "string")) for t in inputs]
            self.columns = tuple(Column(name=n, type=kind) for n, kind in signature) or None
        outputs = metadata.get("outputs") or []
        self.output_shape: list[int] | None = list(outputs[0]["shape"]) if len(outputs) == 1 else None
        self.output_datatype = answered_datatype(str(outputs[0].get("datatype", ""))) if len(outputs) == 1 else None
        self.takes_params = True  # a request's parameters are forwarded: the server knows what its model reads

    def _body(self, columns: dict[str, list[Any]], params: Any) -> bytes:
        """The infer request; a request's inference parameters go as its ``parameters``, for the
        server and its model to read or ignore (Triton's ``priority`` and ``timeout``, an MLflow
        model's params schema under MLServer), but for the protocol's own, which are the gateway's
        to set (``binary_data_output``: this client reads JSON answers)."""
        if params is not None and not isinstance(params, Mapping):
            raise RequestError("must be an object of parameter names and values", field="params")
        if self._matrix is not None and self.columns is not None:
            request: dict[str, Any] = {"inputs": matrix(columns, self.columns, *self._matrix)}
        else:
            request = {"inputs": columnar(columns, self.columns)}
        forwarded = {k: v for k, v in params.items() if k not in V2_PROTOCOL_PARAMETERS} if params else {}
        if forwarded:
            request["parameters"] = forwarded
        return orjson.dumps(request)

    def _outputs(self, status: int, raw: bytes) -> list[Any]:
        try:
            content = orjson.loads(raw)
        except orjson.JSONDecodeError:
            content = {"error": raw[:200].decode(errors="replace")}
        if status == 200:
            return outputs_of(content, self.ref)
        error = content.get("error") if isinstance(content, dict) else None
        if status in (400, 422):  # the input, as the V2 protocol says; another 4xx (404, 429) is the server's
            raise RequestError(f"{self.ref} refused the input: {error or status}", field="inputs", status=status)
        raise BackendError(f"{self.ref} answered {status}: {error or 'no reason given'}")

    async def apredict(self, columns: dict[str, list[Any]], params: Any = None) -> list[Any]:
        try:
            status, raw = await self._backend.pool(*self._server).post(self._path, self._body(columns, params))
        except HttpError as exc:
            raise BackendError(f"{self.ref}: {exc}") from exc
        return self._outputs(status, raw)

    def predict(self, columns: dict[str, list[Any]], params: Any = None) -> list[Any]:
        """The blocking call, for callers without an event loop (the gateway awaits ``apredict``):
        the same answers and errors, the same bound on an answer's size."""
        request = urllib.request.Request(
            self.url, data=self._body(columns, params), headers={"content-type": "application/json"}, method="POST"
        )
        limit = self._backend.max_response_bytes
        try:
            try:
                with urllib.request.urlopen(request, timeout=self._backend.timeout_s) as response:
                    status, raw = response.status, _capped(response, limit, self.ref)
            except urllib.error.HTTPError as exc:
                status, raw = exc.code, _capped(exc, limit, self.ref)
        # unreachable, a timeout, a reset (OSErrors); a reply that is not HTTP (HTTPExceptions)
        except (OSError, http.client.HTTPException) as exc:
            raise BackendError(f"{self.ref}: {type(exc).__name__}: {exc}") from exc
        return self._outputs(status, raw)


def _capped(response: Any, limit: int, where: str) -> bytes:
    """A blocking answer's body, refused past ``limit`` bytes as the pooled client refuses one."""
    raw = bytes(response.read(limit + 1))
    if len(raw) > limit:
        raise BackendError(f"{where}: the answer is larger than {limit} bytes")
    return raw


class V2RemoteBackend:
    """Loads ``v2+http(s)://`` refs. One pool of keep-alive connections per server serves every model
    it loads there; the pools belong to the event loop that first forwards a request (the gateway's)."""

    def __init__(
        self, *, timeout_s: float = 30.0, connections: int = 256, max_response_bytes: int = MAX_RESPONSE_BYTES
    ) -> None:
        self.timeout_s = timeout_s
        self.connections = connections  # at most, per server
        self.max_response_bytes = max_response_bytes
        self._pools: dict[tuple[str, int, bool], Http1Pool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def pool(self, host: str, port: int, tls: bool) -> Http1Pool:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._pools, self._loop = {}, loop
        pool = self._pools.get((host, port, tls))
        if pool is None:
            pool = self._pools[(host, port, tls)] = Http1Pool(
                host,
                port,
                tls=tls,
                limit=self.connections,
                timeout_s=self.timeout_s,
                max_response_bytes=self.max_response_bytes,
            )
        return pool

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools = {}

    def load(self, version: ModelVersion) -> V2RemoteModel:
        """Read the model's metadata (its inputs become the signature); ``BackendError`` if the
        server does not answer, does not serve it, or answers what is not V2 model metadata."""
        try:
            return self._load(version)
        except BackendError:
            raise
        except Exception as exc:  # metadata of another shape (a tensor without a name, inputs not a list)
            raise BackendError(f"{version.uri}: not usable V2 model metadata: {type(exc).__name__}: {exc}") from exc

    def _load(self, version: ModelVersion) -> V2RemoteModel:
        try:
            kind, parts = parse_model_ref(version.uri)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc
        if kind != "v2":
            raise BackendError(f"{version.uri} is not a v2+http(s):// model ref")
        path = f"{parts['base']}/v2/models/{parts['name']}"
        if parts["version"]:
            path += f"/versions/{parts['version']}"
        try:
            with urllib.request.urlopen(path, timeout=self.timeout_s) as response:
                metadata = orjson.loads(_capped(response, self.max_response_bytes, version.uri))
        except urllib.error.HTTPError as exc:
            raise BackendError(f"{version.uri}: the server answered {exc.code} for {path}") from exc
        # URLError and timeouts are OSErrors (so is a connection reset); a port that is not a number is
        # an InvalidURL and a reply that is not HTTP a BadStatusLine (HTTPExceptions); JSON errors ValueErrors
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise BackendError(f"{version.uri}: no model metadata at {path}: {type(exc).__name__}: {exc}") from exc
        matrix_columns = parts["columns"].split(",") if parts["columns"] else []
        inputs = metadata.get("inputs") or []
        for index, tensor in enumerate(inputs):
            shape = tensor.get("shape") or []
            if matrix_columns:
                if len(inputs) > 1 or len(shape) != 2 or shape[1] not in (-1, len(matrix_columns)):
                    raise BackendError(
                        f"{version.uri}: ?columns= names {len(matrix_columns)} columns of one 2-D input, but the "
                        f"model's inputs are {[(t.get('name'), t.get('shape')) for t in inputs]}"
                    )
            elif len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                raise BackendError(
                    f"{version.uri}: input {index} ({tensor.get('name')!r}, shape {shape}) is not one column; "
                    "name its columns in order in the ref: ...?columns=A,B,C"
                )
        return V2RemoteModel(self, version.uri, f"{path}/infer", metadata, matrix_columns=matrix_columns)
