"""A model served by a remote V2 server: a second ``modelcanary gateway`` process on loopback serving
the real MLflow model. Loaded by ref, forwarded through the pooled aiohttp session, used as a
gateway's candidate; a remote that fails costs the client nothing (the baseline answers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from modelcanary.adapters.backends.inprocess import InProcessBackend
from modelcanary.adapters.backends.refs import RefBackend
from modelcanary.adapters.backends.v2remote import V2RemoteBackend, V2RemoteModel
from modelcanary.domain.errors import BackendError, RequestError
from modelcanary.domain.state import ModelVersion, Route, remote_version
from modelcanary.domain.telemetry import Variant
from modelcanary.gateway.app import Gateway, StaticRoutes


@pytest.fixture(scope="module")
def remote(gateway_processes: Any) -> str:
    """A ref to ``fraud`` v2 served by another gateway process, on granian (the other server it runs on)."""
    base = gateway_processes.start("--endpoint", "fraud=models:/fraud/2", "--server", "granian")
    return f"v2+{base}/models/fraud"


@pytest.fixture(scope="module")
def direct(pyfunc_backend: Any) -> Any:
    return pyfunc_backend.load(ModelVersion(name="fraud", version="2"))


def _columns(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    return {name: [row[name] for row in rows] for name in rows[0]}


def test_a_remote_model_loads_its_signature_and_predicts_as_the_model_does(
    remote: str, direct: Any, mlflow_registry: Any
) -> None:
    version = remote_version(remote)
    assert version is not None and version.uri == remote and not version.in_registry
    model = V2RemoteBackend().load(version)
    assert model.columns == direct.columns
    assert model.output_shape == [-1, 2]
    columns = _columns(mlflow_registry.rows[:4])
    assert model.predict(columns) == direct.predict(columns)

    async def forward() -> list[Any]:
        backend = V2RemoteBackend()
        try:
            loaded = backend.load(version)
            return list(await asyncio.gather(*(loaded.apredict(columns) for _ in range(20))))
        finally:
            await backend.aclose()

    assert asyncio.run(forward()) == [direct.predict(columns)] * 20


def test_the_remote_says_which_input_it_refuses(remote: str, mlflow_registry: Any) -> None:
    version = remote_version(remote)
    assert version is not None
    model = V2RemoteBackend().load(version)
    with pytest.raises(RequestError) as caught:
        model.predict({"amount": [1.0], "velocity": [1.0]})
    assert caught.value.status == 400
    assert "inputs: the model needs input 'age'" in str(caught.value)


def test_load_failures_name_the_ref(remote: str) -> None:
    with pytest.raises(BackendError, match="answered 404"):
        V2RemoteBackend().load(ModelVersion(name="x", version="", ref=remote.replace("/fraud", "/nope")))
    with pytest.raises(BackendError, match="no model metadata"):
        V2RemoteBackend(timeout_s=2).load(ModelVersion(name="x", version="", ref="v2+http://127.0.0.1:9/models/x"))


@pytest.fixture
def canary(serve: Any, mlflow_registry: Any, remote: str) -> Iterator[tuple[Any, Gateway]]:
    """A gateway whose candidate (all of the traffic) is the remote model; baseline in process."""
    candidate = remote_version(remote)
    route = Route(
        endpoint="fraud",
        baseline=ModelVersion(name="fraud", version="1"),
        candidate=candidate,
        weight=100.0,
        rollout_id="r-remote",
    )
    backend = RefBackend({"registry": InProcessBackend(mlflow_registry.uri), "v2": V2RemoteBackend(timeout_s=5)})
    gateway = Gateway(routes=StaticRoutes({"fraud": route}), backend=backend, telemetry=None, source="t")
    running = serve.start(gateway)
    with running.client() as client:
        yield client, gateway


def test_a_gateway_forwards_its_candidate_to_the_remote(
    canary: tuple[Any, Gateway], direct: Any, mlflow_registry: Any, pyfunc_backend: Any
) -> None:
    client, _gateway = canary
    rows = mlflow_registry.rows[:3]
    response = client.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": rows})
    assert response.status_code == 200, response.text
    assert response.json()["variant"] == "candidate"
    assert response.json()["predictions"] == direct.predict(_columns(rows))
    v2 = client.post(
        "/v2/models/fraud/infer",
        json={"inputs": [{"name": k, "shape": [3], "datatype": "FP64", "data": v} for k, v in _columns(rows).items()]},
    )
    assert v2.status_code == 200 and "model_version" not in v2.json()  # a remote model has none


def test_a_failing_remote_candidate_costs_the_client_nothing(
    serve: Any, pyfunc_backend: Any, mlflow_registry: Any
) -> None:
    """The remote (here a gateway in this process, so the test can stop it) goes away after loading:
    the baseline answers every request and the candidate's failures are counted."""
    remote = serve.start(
        Gateway(
            routes=StaticRoutes({"fraud": Route(endpoint="fraud", baseline=ModelVersion(name="fraud", version="2"))}),
            backend=pyfunc_backend,
            telemetry=None,
            source="remote",
        )
    )
    route = Route(
        endpoint="fraud",
        baseline=ModelVersion(name="fraud", version="1"),
        candidate=remote_version(f"v2+{remote.url}/models/fraud"),
        weight=100.0,
        rollout_id="r-down",
    )
    backend = RefBackend({"registry": pyfunc_backend, "v2": V2RemoteBackend(timeout_s=5)})
    gateway = Gateway(routes=StaticRoutes({"fraud": route}), backend=backend, telemetry=None, source="t")
    running = serve.start(gateway)
    rows = mlflow_registry.rows[:2]
    baseline = pyfunc_backend.load(ModelVersion(name="fraud", version="1"))
    with running.client() as client:
        assert client.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": rows}).json()["variant"] == (
            "candidate"
        )
        remote.stop()
        answers = [client.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": rows}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert {a.json()["variant"] for a in answers} == {"baseline"}
    assert answers[0].json()["predictions"] == baseline.predict(_columns(rows))
    counts = {variant: telemetry for _id, variant, telemetry in running.call(_changed(gateway))}
    assert counts[Variant.CANDIDATE].errors == 3 and counts[Variant.CANDIDATE].requests == 4
    assert counts[Variant.BASELINE].requests == 3 and counts[Variant.BASELINE].errors == 0
    # the in-process baseline's CPU is measured; the awaited remote's is not charged with the loop's
    # work, and none of its requests counts as measured (the cost guardrail sees no data, not 0 ms)
    assert counts[Variant.BASELINE].cpu_ms > 0 and counts[Variant.BASELINE].cpu_requests == 3
    assert (counts[Variant.CANDIDATE].cpu_ms, counts[Variant.CANDIDATE].cpu_requests) == (0, 0)


async def _changed(gateway: Gateway) -> Any:
    return gateway.recorder.changed()


@contextlib.contextmanager
def _on_loopback(app: Any) -> Iterator[int]:
    """``app`` served by uvicorn on a loopback port of its own, in a thread, while in the block."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def matrix_server(pyfunc_backend: Any) -> Iterator[str]:
    """A V2 server of Triton's and MLServer's sklearn kind: one 2-D input ``input-0: [-1, 3]``, answered
    by the real model, on loopback."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route as HttpRoute

    model = pyfunc_backend.load(ModelVersion(name="fraud", version="2"))
    names = ("amount", "velocity", "age")

    async def metadata(_request: Request) -> JSONResponse:
        inputs = [{"name": "input-0", "datatype": "FP64", "shape": [-1, 3]}]
        return JSONResponse({"name": "sk", "inputs": inputs, "outputs": [{"name": "predict", "shape": [-1, 2]}]})

    async def infer(request: Request) -> JSONResponse:
        tensor = (await request.json())["inputs"][0]
        rows = [tensor["data"][i : i + 3] for i in range(0, len(tensor["data"]), 3)]
        outputs = model.predict({name: [row[k] for row in rows] for k, name in enumerate(names)})
        flat = [value for row in outputs for value in row]
        return JSONResponse(
            {"outputs": [{"name": "predict", "shape": [len(rows), 2], "datatype": "FP64", "data": flat}]}
        )

    app = Starlette(
        routes=[HttpRoute("/v2/models/sk", metadata), HttpRoute("/v2/models/sk/infer", infer, methods=["POST"])]
    )
    with _on_loopback(app) as port:
        yield f"v2+http://127.0.0.1:{port}/models/sk"


def test_a_model_taking_one_2d_tensor_gets_the_named_columns_in_order(
    matrix_server: str, direct: Any, mlflow_registry: Any
) -> None:
    with pytest.raises(BackendError, match=r"not one column; name its columns in order in the ref: \.\.\.\?columns="):
        V2RemoteBackend().load(ModelVersion(name="sk", version="", ref=matrix_server))
    ref = f"{matrix_server}?columns=amount,velocity,age"
    version = remote_version(ref)
    assert version is not None
    model = V2RemoteBackend().load(version)
    assert [column.name for column in model.columns or ()] == ["amount", "velocity", "age"]
    rows = mlflow_registry.rows[:3]
    shuffled = {name: [row[name] for row in rows] for name in ("age", "amount", "velocity")}  # another order
    assert model.predict(shuffled) == direct.predict(_columns(rows))
    with pytest.raises(RequestError, match="the model needs input 'velocity'"):
        model.predict({"amount": [1.0], "age": [2.0]})
    with pytest.raises(BackendError, match="names 2 columns of one 2-D input"):
        V2RemoteBackend().load(ModelVersion(name="sk", version="", ref=f"{matrix_server}?columns=amount,age"))


def test_a_ref_whose_port_is_not_a_number_is_a_backend_error_naming_it() -> None:
    ref = "v2+http://triton:80O0/models/fraud"
    with pytest.raises(
        BackendError, match="no model metadata at http://triton:80O0/v2/models/fraud: InvalidURL"
    ) as caught:
        V2RemoteBackend(timeout_s=2).load(ModelVersion(name="fraud", version="", ref=ref))
    assert ref in str(caught.value)


@pytest.fixture
def answers() -> Iterator[Any]:
    """``answers(reply)``: the URL of a loopback server that reads a request's head and writes
    ``reply``, whatever it is, then hangs up: a server that is not a V2 server, or not HTTP."""
    import socket
    import threading

    listeners: list[socket.socket] = []

    def start(reply: bytes) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:  # closed: the test is over
                    return
                with conn:
                    head = b""
                    while b"\r\n\r\n" not in head and (chunk := conn.recv(4096)):
                        head += chunk
                    conn.sendall(reply)

        threading.Thread(target=serve, daemon=True).start()
        return f"v2+http://127.0.0.1:{listener.getsockname()[1]}/models/fraud"

    yield start
    for listener in listeners:
        listener.close()


def _http_200(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (b"\x00\x17\x03garbage, not HTTP\r\n\r\n", "no model metadata at .*: BadStatusLine"),
        (b"", "no model metadata at .*: RemoteDisconnected"),
        (_http_200(b"not json"), "no model metadata at .*: JSONDecodeError"),
        (_http_200(b"[1, 2]"), "not usable V2 model metadata"),
        (_http_200(b'{"inputs": [{"shape": [-1]}]}'), "not usable V2 model metadata"),
    ],
    ids=["garbage", "hangs-up", "not-json", "not-an-object", "input-without-name"],
)
def test_a_server_answering_what_is_not_v2_metadata_is_a_backend_error(answers: Any, reply: bytes, says: str) -> None:
    ref = answers(reply)
    with pytest.raises(BackendError, match=says) as caught:
        V2RemoteBackend(timeout_s=5).load(ModelVersion(name="fraud", version="", ref=ref))
    assert ref in str(caught.value)


def _http(status: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body)


@pytest.mark.parametrize(
    ("reply", "raises", "says"),
    [
        (_http(b"200 OK", b'{"outputs": [{"name": "predict", "shape": [1], "data": [0.25]}]}'), None, ""),
        (b"\x00\x17\x03garbage, not HTTP\r\n\r\n", BackendError, "BadStatusLine"),
        (
            b"",
            BackendError,
            "RemoteDisconnected|ConnectionResetError|BrokenPipeError",
        ),  # the body may still be going out
        (
            _http(b"200 OK", b'{"outputs": [{"name": "predict", "shape": [1], "data": [' + b"0," * 600 + b"1]}]}"),
            BackendError,
            "larger than 1024 bytes",
        ),
        (_http(b"500 Internal Server Error", b'{"error": "boom"}'), BackendError, "answered 500: boom"),
        (_http(b"400 Bad Request", b'{"error": "amount is not a number"}'), RequestError, "amount is not a number"),
    ],
    ids=["answers", "garbage", "hangs-up", "too-large", "server-error", "refuses-input"],
)
def test_the_blocking_call_answers_and_fails_as_the_pooled_one(
    answers: Any, reply: bytes, raises: type[Exception] | None, says: str
) -> None:
    # V2RemoteModel.predict, for callers without an event loop: bounded, and every failure one of
    # the two errors the gateway tells apart (a reply that was not HTTP escaped as http.client's own)
    ref = answers(reply)
    backend = V2RemoteBackend(timeout_s=5, max_response_bytes=1024)
    metadata = {"inputs": [{"name": "amount", "datatype": "FP64", "shape": [-1]}]}
    url = ref.removeprefix("v2+").replace("/models/", "/v2/models/") + "/infer"
    model = V2RemoteModel(backend, ref, url, metadata, matrix_columns=[])
    if raises is None:
        assert model.predict({"amount": [1.0]}) == [0.25]
        return
    with pytest.raises(raises, match=says) as caught:
        model.predict({"amount": [1.0]})
    assert ref in str(caught.value)


@pytest.fixture
def thresholds() -> Iterator[tuple[str, list[Any]]]:
    """A V2 server on loopback whose model reads an inference parameter: 1.0 where ``amount`` passes
    the request's ``threshold`` (0.5 without one); and the parameters each request carried."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route as HttpRoute

    seen: list[Any] = []

    async def metadata(_request: Request) -> JSONResponse:
        inputs = [{"name": "amount", "datatype": "FP64", "shape": [-1]}]
        return JSONResponse({"name": "th", "inputs": inputs, "outputs": [{"name": "predict", "shape": [-1]}]})

    async def infer(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append(body.get("parameters"))
        threshold = (body.get("parameters") or {}).get("threshold", 0.5)
        data = [float(value > threshold) for value in body["inputs"][0]["data"]]
        return JSONResponse({"outputs": [{"name": "predict", "shape": [len(data)], "datatype": "FP64", "data": data}]})

    app = Starlette(
        routes=[HttpRoute("/v2/models/th", metadata), HttpRoute("/v2/models/th/infer", infer, methods=["POST"])]
    )
    with _on_loopback(app) as port:
        yield f"v2+http://127.0.0.1:{port}/models/th", seen


def test_a_requests_params_are_forwarded_to_the_remote_as_its_parameters(
    serve: Any, thresholds: tuple[str, list[Any]]
) -> None:
    """MLflow's ``params`` and a V2 request's own ``parameters`` reach the remote server as the
    forwarded request's ``parameters``, for its model to read; the V2 protocol's own parameters
    (binary output) are the gateway's business and are not forwarded, whichever protocol sent them."""
    ref, seen = thresholds
    version = remote_version(ref)
    assert version is not None
    route = Route(endpoint="th", baseline=version)
    backend = RefBackend({"v2": V2RemoteBackend(timeout_s=5)})
    running = serve.start(Gateway(routes=StaticRoutes({"th": route}), backend=backend, telemetry=None, source="t"))
    rows = {"dataframe_records": [{"amount": 0.7}, {"amount": 0.95}]}
    with running.client() as client:
        # the V2 protocol's own parameters are the gateway's: a binary answer would be a 502 here
        for params, expected in (({}, [1.0, 1.0]), ({"threshold": 0.9, "binary_data_output": True}, [0.0, 1.0])):
            response = client.post("/v1/endpoints/th/invocations", json={**rows, "params": params})
            assert response.status_code == 200, response.text
            assert response.json()["predictions"] == expected, params
        tensor = {"name": "amount", "shape": [2], "datatype": "FP64", "data": [0.7, 0.95]}
        parameters = {"threshold": 0.9, "binary_data_output": False}
        v2 = client.post("/v2/models/th/infer", json={"inputs": [tensor], "parameters": parameters})
        assert v2.status_code == 200, v2.text
        assert v2.json()["outputs"][0]["data"] == [0.0, 1.0]
    assert seen == [None, {"threshold": 0.9}, {"threshold": 0.9}]
