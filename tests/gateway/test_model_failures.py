"""What the client gets, and what is counted, when a model fails or answers wrong: a gateway on
loopback in front of a V2 server on loopback that misbehaves on request (errors, hang-ups, a body
cut short, no answer, too few outputs), beside in-process models that raise or answer ragged rows."""

from __future__ import annotations

import re
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from modelcanary.adapters.backends.refs import RefBackend
from modelcanary.adapters.backends.v2remote import V2RemoteBackend
from modelcanary.adapters.testing import FakeBackend, FunctionModel
from modelcanary.domain.state import ModelVersion, Route, remote_version
from modelcanary.domain.telemetry import Variant, VariantTelemetry
from modelcanary.domain.traffic import CircuitBreaker
from modelcanary.gateway.app import VARIANT_HEADER, Gateway, StaticRoutes
from modelcanary.ports import Column

TIMEOUT_S = 0.5  # the remote's, so a remote that never answers costs a test half a second
COLUMNS = (Column(name="a", type="double"),)
METADATA = {
    "name": "m",
    "inputs": [{"name": "a", "datatype": "FP64", "shape": [-1]}],
    "outputs": [{"name": "predict", "datatype": "FP64", "shape": [-1]}],
}


def _http(status: int, content: Any) -> bytes:
    body = orjson.dumps(content)
    return b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


def _outputs(values: list[float]) -> dict[str, Any]:
    return {"outputs": [{"name": "predict", "shape": [len(values)], "datatype": "FP64", "data": values}]}


class Upstream(socketserver.ThreadingTCPServer):
    """A V2 server on loopback: its model's metadata for a GET, and for an infer request what
    ``mode`` says (a keep-alive HTTP/1.1 server otherwise, as Triton is)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"
        self.release = threading.Event()  # lets go of requests held by the "no-answer" mode

    @property
    def ref(self) -> str:
        return f"v2+http://127.0.0.1:{self.server_address[1]}/models/m"

    def answer(self, rows: int) -> bytes | None:
        """The reply to an infer request of ``rows`` rows; None to hang up without one."""
        mode = self.mode
        if mode == "ok":
            return _http(200, _outputs([0.5] * rows))
        if mode == "too-few":
            return _http(200, _outputs([0.5]))
        if mode == "ragged":  # a [rows, 2] tensor with one value too many
            return _http(200, {"outputs": [{"name": "predict", "shape": [rows, 2], "data": [0.5] * (2 * rows + 1)}]})
        if mode.isdigit():
            return _http(int(mode), {"error": f"the server says {mode}"})
        if mode == "cut-short":
            return b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n" + b'{"outputs": ['
        if mode == "no-answer":
            self.release.wait(30)
        return None


class _Handler(socketserver.StreamRequestHandler):
    server: Upstream

    def handle(self) -> None:
        while line := self.rfile.readline():
            length = 0
            while (header := self.rfile.readline()) not in (b"\r\n", b""):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = self.rfile.read(length)
            if line.startswith(b"GET"):
                self.wfile.write(_http(200, METADATA))
                continue
            reply = self.server.answer(len(orjson.loads(body)["inputs"][0]["data"]))
            if reply is None:
                return
            self.wfile.write(reply)
            if self.server.mode == "cut-short":
                return


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def answering(upstream: Upstream) -> Iterator[None]:
    """Each test starts with the remote answering, and leaves none of its requests held."""
    upstream.mode = "ok"
    upstream.release.clear()
    yield
    upstream.release.set()


def _raises(_columns: dict[str, list[Any]]) -> list[Any]:
    raise RuntimeError("the candidate crashed")


def _ragged(columns: dict[str, list[Any]]) -> list[Any]:
    return [[0.2, 0.8]] * (len(columns["a"]) - 1) + [[0.5]]


@dataclass
class Served:
    client: httpx.Client
    gateway: Gateway
    running: Any  # conftest's RunningGateway

    def counts(self, rollout_id: str) -> Callable[[Variant], VariantTelemetry]:
        """A rollout's cumulative counts by variant, read on the gateway's thread (they live there)."""
        rows = self.running.call(_changed(self.gateway))
        seen = {(rid, variant): counts for rid, variant, counts in rows}
        return lambda variant: seen.get((rollout_id, variant)) or VariantTelemetry()


async def _changed(gateway: Gateway) -> Any:
    return gateway.recorder.changed()


@pytest.fixture(scope="module")
def served(serve_module: Any, upstream: Upstream) -> Iterator[Served]:
    """One gateway, an endpoint per case: the remote as a baseline alone (``remote-baseline``), as the
    candidate of every request beside an in-process baseline (``remote-candidate``); an in-process
    candidate answering rows of unequal widths (``ragged``); a candidate that raises beside the remote
    as the baseline (``both``, ``both-refuse``, each a rollout of its own with a breaker of 2)."""
    remote = remote_version(upstream.ref)
    assert remote is not None
    baseline = ModelVersion(name="b", version="1")
    raising = ModelVersion(name="c", version="1")
    two = CircuitBreaker(consecutive_failures=2)

    def canary(endpoint: str, baseline: ModelVersion, candidate: ModelVersion, breaker: CircuitBreaker) -> Route:
        return Route(
            endpoint=endpoint,
            baseline=baseline,
            candidate=candidate,
            weight=100.0,
            rollout_id=f"r-{endpoint}",
            breaker=breaker,
        )

    routes = [
        Route(endpoint="remote-baseline", baseline=remote),
        canary("remote-candidate", baseline, remote, CircuitBreaker(consecutive_failures=1000)),
        canary("ragged", baseline, ModelVersion(name="ragged", version="1"), CircuitBreaker(consecutive_failures=1000)),
        canary("both", remote, raising, two),
        canary("both-refuse", remote, raising, two),
    ]
    models = {
        "b/1": FunctionModel(lambda columns: [[0.9, 0.1]] * len(columns["a"]), COLUMNS),
        "c/1": FunctionModel(_raises, COLUMNS),
        "ragged/1": FunctionModel(_ragged, COLUMNS),
    }
    backend = RefBackend({"registry": FakeBackend(models), "v2": V2RemoteBackend(timeout_s=TIMEOUT_S)})
    gateway = Gateway(
        routes=StaticRoutes({route.endpoint: route for route in routes}), backend=backend, telemetry=None, source="gw"
    )
    running = serve_module.start(gateway)
    with running.client() as client:
        yield Served(client, gateway, running)


def _scoring(rows: int) -> dict[str, Any]:
    return {"dataframe_split": {"columns": ["a"], "data": [[float(row)] for row in range(rows)]}}


@pytest.mark.parametrize(
    ("mode", "status", "says"),
    [
        ("500", 502, r"failed: v2\+http://127\.0\.0\.1:\d+/models/m answered 500: the server says 500$"),
        ("503", 502, "failed: .* answered 503: the server says 503$"),
        ("404", 502, "failed: .* answered 404: the server says 404$"),  # it does not serve the model: not the input
        ("429", 502, "failed: .* answered 429: the server says 429$"),  # it is overloaded: not the input either
        ("hang-up", 502, "failed: .*/models/m: the server closed the connection"),
        ("cut-short", 502, "failed: .*/models/m: the server closed the connection"),
        ("too-few", 502, "failed: .*/models/m returned 1 outputs for 3 rows$"),
        ("ragged", 502, r"failed: .*/models/m: output 'predict' holds 7 values, but its shape \[3, 2\] needs 6$"),
        ("no-answer", 504, r"did not answer in time: .*/models/m: no response within 0\.5 s$"),
    ],
)
def test_a_failing_remote_baseline_is_a_bad_gateway_naming_the_model_and_what_happened(
    served: Served, upstream: Upstream, mode: str, status: int, says: str
) -> None:
    upstream.mode = mode
    response = served.client.post("/v1/endpoints/remote-baseline/invocations", json=_scoring(3))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert response.json()["field"] == "model" and error.startswith("model: the baseline model ")
    assert re.search(says, error), error
    upstream.release.set()
    upstream.mode = "ok"
    assert served.client.post("/v1/endpoints/remote-baseline/invocations", json=_scoring(3)).status_code == 200


@pytest.mark.parametrize("status", [400, 422])
def test_a_remote_baselines_refusal_of_the_input_is_the_clients_to_fix(
    served: Served, upstream: Upstream, status: int
) -> None:
    upstream.mode = str(status)
    response = served.client.post("/v1/endpoints/remote-baseline/invocations", json=_scoring(1))
    assert response.status_code == status
    assert f"refused the input: the server says {status}" in response.json()["error"]


@pytest.mark.parametrize("mode", ["too-few", "ragged", "404", "no-answer"])
def test_a_remote_candidate_answering_wrong_is_a_failure_and_the_baseline_answers(
    served: Served, upstream: Upstream, mode: str
) -> None:
    guard = served.gateway.serving["remote-candidate"].guard
    before = guard.failures
    upstream.mode = mode
    response = served.client.post("/v1/endpoints/remote-candidate/invocations", json=_scoring(3))
    assert response.status_code == 200, response.text
    assert response.headers[VARIANT_HEADER] == "baseline"
    assert response.json()["predictions"] == [[0.9, 0.1]] * 3
    assert len(response.json()["prediction_ids"]) == 3
    assert guard.failures == before + 1
    upstream.release.set()
    upstream.mode = "ok"
    again = served.client.post("/v1/endpoints/remote-candidate/invocations", json=_scoring(3))
    assert again.headers[VARIANT_HEADER] == "candidate" and again.json()["predictions"] == [0.5] * 3


def test_a_candidate_whose_rows_a_v2_tensor_cannot_carry_fails_before_its_success_is_counted(served: Served) -> None:
    body = {"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}]}
    response = served.client.post("/v2/models/ragged/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers[VARIANT_HEADER] == "baseline"
    tensor = {"name": "predict", "shape": [2, 2], "datatype": "FP64", "data": [0.9, 0.1] * 2}
    assert response.json()["outputs"] == [tensor]
    assert len(response.json()["parameters"]["prediction_ids"].split(",")) == 2
    counts = served.counts("r-ragged")
    assert (counts(Variant.CANDIDATE).requests, counts(Variant.CANDIDATE).errors) == (1, 1)
    assert (counts(Variant.BASELINE).requests, counts(Variant.BASELINE).errors) == (1, 0)


def test_a_candidates_failure_counts_when_the_baseline_fails_too(served: Served, upstream: Upstream) -> None:
    """The remote baseline answers 500 and the candidate raises: the client gets the 502, and the
    candidate's failures are counted, and trip its breaker (two in a row), all the same."""
    upstream.mode = "500"
    statuses = [served.client.post("/v1/endpoints/both/invocations", json=_scoring(1)).status_code for _ in range(3)]
    serving = served.gateway.serving["both"]
    assert (serving.guard.failures, serving.guard.tripped, serving.candidate) == (2, True, None)
    counts = served.counts("r-both")
    assert (counts(Variant.CANDIDATE).requests, counts(Variant.CANDIDATE).errors) == (2, 2)
    assert counts(Variant.CANDIDATE).breaker_trips == 1
    assert (counts(Variant.BASELINE).requests, counts(Variant.BASELINE).errors) == (3, 3)
    assert statuses == [502] * 3


def test_input_the_remote_baseline_refuses_is_not_the_failing_candidates_fault(
    served: Served, upstream: Upstream
) -> None:
    upstream.mode = "422"
    endpoint = "/v1/endpoints/both-refuse/invocations"
    statuses = [served.client.post(endpoint, json=_scoring(1)).status_code for _ in range(3)]
    assert statuses == [422] * 3
    assert served.gateway.serving["both-refuse"].guard.failures == 0
    assert served.counts("r-both-refuse")(Variant.CANDIDATE).errors == 0
