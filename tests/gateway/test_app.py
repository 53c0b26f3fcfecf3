"""The gateway over real HTTP on loopback, serving real MLflow models from a real registry, with its
routing table and telemetry in a real SQLite store."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.adapters.testing import FakeBackend, FunctionModel
from modelcanary.domain.errors import RequestError
from modelcanary.domain.state import ModelVersion, Route
from modelcanary.domain.telemetry import LATENCY_EDGES_MS, RolloutTelemetry
from modelcanary.domain.traffic import StickyKey
from modelcanary.engine.analysis import pair
from modelcanary.gateway.app import MAX_BODY_BYTES, VARIANT_HEADER, Gateway
from modelcanary.ports import Column

ROLLOUT = "fraud-rollout-1"
STICKY = "x-user-id"
Rows = list[dict[str, float]]


# -- fixtures: one shared gateway at 50% for the read-mostly tests ----------------------------------


@pytest.fixture(scope="module")
def versions(mlflow_registry: Any) -> tuple[ModelVersion, ModelVersion]:
    registry = MlflowRegistry(mlflow_registry.uri)
    return registry.resolve("models:/fraud@champion"), registry.resolve("models:/fraud@challenger")


def fraud_route(
    versions: tuple[ModelVersion, ModelVersion], *, weight: float = 50.0, rollout_id: str = ROLLOUT
) -> Route:
    baseline, candidate = versions
    return Route(
        endpoint="fraud",
        baseline=baseline,
        candidate=candidate,
        weight=weight,
        rollout_id=rollout_id,
        sticky=StickyKey(header=STICKY),
    )


@pytest.fixture(scope="module")
def shared(
    serve_module: Any, tmp_path_factory: pytest.TempPathFactory, pyfunc_backend: Any, versions: Any
) -> Iterator[Any]:
    store = SqlStore(f"sqlite:///{tmp_path_factory.mktemp('gateway') / 'store.db'}")
    store.put_route(fraud_route(versions))
    yield serve_module.start(Gateway(routes=store, backend=pyfunc_backend, telemetry=store, source="gw-shared"))
    serve_module.stop_all()
    store.close()


@pytest.fixture(scope="module")
def client(shared: Any) -> Iterator[httpx.Client]:
    with shared.client() as http:
        yield http


@pytest.fixture(scope="module")
def rows(mlflow_registry: Any) -> Rows:
    return list(mlflow_registry.rows)


@pytest.fixture(scope="module")
def expected(pyfunc_backend: Any, versions: Any) -> Callable[[str, Rows], list[list[float]]]:
    """What each variant's model says about some rows, asked directly (no HTTP)."""
    models = {"baseline": pyfunc_backend.load(versions[0]), "candidate": pyfunc_backend.load(versions[1])}

    def predict(variant: str, rows: Rows) -> list[list[float]]:
        predicted: list[list[float]] = models[variant].predict({name: [row[name] for row in rows] for name in rows[0]})
        return predicted

    return predict


def v2_body(rows: Sequence[Mapping[str, object]], **extra: Any) -> dict[str, Any]:
    inputs = [
        {"name": name, "shape": [len(rows)], "datatype": "FP64", "data": [row[name] for row in rows]}
        for name in rows[0]
    ]
    return {"inputs": inputs, **extra}


def user(index: int) -> dict[str, str]:
    return {STICKY: f"user-{index}"}


def infer(client: httpx.Client, rows: Rows, *, who: int = 0, endpoint: str = "fraud") -> httpx.Response:
    return client.post(f"/v2/models/{endpoint}/infer", json=v2_body(rows), headers=user(who))


def predict_ids(client: httpx.Client, rows: Rows, who: int = 0) -> tuple[str, list[str]]:
    response = infer(client, rows, who=who)
    assert response.status_code == 200, response.text
    return response.headers[VARIANT_HEADER], response.json()["parameters"]["prediction_ids"].split(",")


# -- predictions ----------------------------------------------------------------------------------


def test_once_models_are_loaded_the_heap_is_out_of_the_collectors_sight(
    serve: Any, tmp_path: Path, pyfunc_backend: Any, versions: Any
) -> None:
    """Modules and models (~420,000 objects) frozen: a full collection no longer walks them all.
    The freeze is process-wide, and earlier tests' gateways froze the heap already, so it is undone
    first: the count must come from this gateway's first routing table."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    store = SqlStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.put_route(fraud_route(versions))
    serve.start(Gateway(routes=store, backend=pyfunc_backend, telemetry=store, source="gw-freeze"))
    assert gc.get_freeze_count() > 100_000


def test_v2_infer_with_one_tensor_per_column(client: httpx.Client, rows: Rows, expected: Any) -> None:
    response = client.post("/v2/models/fraud/infer", json=v2_body(rows[:3], id="req-7"), headers=user(1))
    assert response.status_code == 200, response.text
    body = response.json()
    variant = response.headers[VARIANT_HEADER]
    assert variant in ("baseline", "candidate")
    assert body["parameters"]["variant"] == variant
    assert body["id"] == "req-7"
    assert body["model_name"] == "fraud"
    assert body["model_version"] == ("1" if variant == "baseline" else "2")  # as the metadata lists them
    (output,) = body["outputs"]
    assert output["shape"] == [3, 2]
    assert output["datatype"] == "FP64"
    assert [output["data"][i : i + 2] for i in (0, 2, 4)] == expected(variant, rows[:3])
    ids = body["parameters"]["prediction_ids"].split(",")
    assert len(ids) == 3 and len(set(ids)) == 3


def test_v2_infer_with_one_2d_tensor(client: httpx.Client, rows: Rows, expected: Any, mlflow_registry: Any) -> None:
    features = mlflow_registry.features
    tensor = {
        "name": "input-0",
        "shape": [4, len(features)],
        "datatype": "FP64",
        "data": [[row[name] for name in features] for row in rows[:4]],
    }
    response = client.post("/v2/models/fraud/infer", json={"inputs": [tensor]}, headers=user(2))
    assert response.status_code == 200, response.text
    body = response.json()
    variant = body["parameters"]["variant"]
    assert response.headers[VARIANT_HEADER] == variant
    assert body["outputs"][0]["shape"] == [4, 2]
    data = body["outputs"][0]["data"]
    assert [data[i : i + 2] for i in range(0, 8, 2)] == expected(variant, rows[:4])
    assert len(body["parameters"]["prediction_ids"].split(",")) == 4
    assert "id" not in body


def _mlflow_bodies(rows: Rows) -> dict[str, dict[str, Any]]:
    names = list(rows[0])
    return {
        "dataframe_split": {"dataframe_split": {"columns": names, "data": [[row[n] for n in names] for row in rows]}},
        "dataframe_records": {"dataframe_records": rows},
        "instances": {"instances": [[row[n] for n in names] for row in rows]},
        "inputs": {"inputs": {n: [row[n] for row in rows] for n in names}},
    }


@pytest.mark.parametrize("form", ["dataframe_split", "dataframe_records", "instances", "inputs"])
def test_mlflow_invocations_in_each_format(client: httpx.Client, rows: Rows, expected: Any, form: str) -> None:
    response = client.post("/v1/endpoints/fraud/invocations", json=_mlflow_bodies(rows[:3])[form], headers=user(3))
    assert response.status_code == 200, response.text
    body = response.json()
    variant = response.headers[VARIANT_HEADER]
    assert body["variant"] == variant
    assert body["predictions"] == expected(variant, rows[:3])
    assert len(set(body["prediction_ids"])) == 3


def test_mlflow_invocations_in_csv_as_pandas_writes_it(client: httpx.Client, rows: Rows, expected: Any) -> None:
    """``text/csv``, which MLflow's server reads (and its docs tell clients to send): it was read as
    JSON and refused. Other types are a 415 naming Content-Type, as MLflow's server answers."""
    import pandas as pd

    csv = pd.DataFrame(rows[:3]).to_csv(index=False)
    response = client.post(
        "/v1/endpoints/fraud/invocations", content=csv, headers={"content-type": "text/csv", **user(3)}
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == expected(response.headers[VARIANT_HEADER], rows[:3])
    header, first, *rest = csv.splitlines()
    wrong = "\n".join([header, "abc" + first[first.index(",") :], *rest])  # the first column's first value
    bad = client.post("/v1/endpoints/fraud/invocations", content=wrong, headers={"content-type": "text/csv"})
    assert (bad.status_code, bad.json()["field"]) == (400, f"csv.{header.split(',')[0]}")
    assert bad.json()["error"].endswith("line 2: 'abc' is not a double value")
    other = client.post("/v1/endpoints/fraud/invocations", content=b"x", headers={"content-type": "text/plain"})
    assert (other.status_code, other.json()["field"]) == (415, "Content-Type")


def test_the_same_user_always_gets_the_same_variant(client: httpx.Client, rows: Rows) -> None:
    for who in range(8):
        seen = {infer(client, rows[:1], who=who).headers[VARIANT_HEADER] for _ in range(5)}
        seen.add(
            client.post(
                "/v1/endpoints/fraud/invocations", json={"dataframe_records": rows[:1]}, headers=user(who)
            ).headers[VARIANT_HEADER]
        )
        assert len(seen) == 1, f"user-{who} saw {seen}"


def test_both_variants_serve_at_weight_50(client: httpx.Client, rows: Rows) -> None:
    seen = Counter(infer(client, rows[:1], who=who).headers[VARIANT_HEADER] for who in range(200))
    assert 60 <= seen["candidate"] <= 140, seen
    assert seen["baseline"] + seen["candidate"] == 200


# -- health and metadata --------------------------------------------------------------------------


def test_health_and_metadata(client: httpx.Client, mlflow_registry: Any) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert (body["ready"], body["endpoints"]) == (True, ["fraud"])
    assert body["routes_version"] >= 0  # which routing table this gateway serves
    metadata = client.get("/v2/models/fraud").json()
    assert metadata["name"] == "fraud"
    assert metadata["versions"] == ["1", "2"]  # the baseline's and, during the rollout, the candidate's
    assert metadata["inputs"] == [{"name": n, "datatype": "FP64", "shape": [-1]} for n in mlflow_registry.features]
    assert metadata["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1, 2]}]
    assert client.get("/v2/models/fraud/versions/2").json() == metadata
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    assert client.get("/v2/models/fraud/ready").json() == {"name": "fraud", "ready": True}
    assert client.get("/v2/models/fraud/versions/1/ready").status_code == 200


def test_v2_paths_name_what_is_not_served(client: httpx.Client, rows: Rows) -> None:
    missing = client.get("/v2/models/nope/ready")
    assert (missing.status_code, missing.json()["field"]) == (404, "endpoint")
    wrong = client.post("/v2/models/fraud/versions/7/infer", json=v2_body(rows[:1]))
    assert wrong.status_code == 404
    assert wrong.json()["error"] == "version: endpoint 'fraud' serves versions ['1', '2'], not '7'"


# -- request errors -------------------------------------------------------------------------------


def test_an_unknown_endpoint_is_404_naming_it(client: httpx.Client, rows: Rows) -> None:
    for response in (
        infer(client, rows[:1], endpoint="nosuch"),
        client.post("/v1/endpoints/nosuch/invocations", json={"dataframe_records": rows[:1]}),
        client.get("/v2/models/nosuch"),
    ):
        assert response.status_code == 404
        assert "'nosuch'" in response.json()["error"]
        assert "fraud" in response.json()["error"]  # and says what is served
        assert response.json()["field"] == "endpoint"


@pytest.mark.parametrize("path", ["/v2/models/fraud/infer", "/v1/endpoints/fraud/invocations", "/v1/feedback"])
def test_malformed_json_is_400_on_the_body(client: httpx.Client, path: str) -> None:
    response = client.post(path, content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["field"] == "body"
    assert "JSON" in response.json()["error"]


def test_a_missing_column_is_named(client: httpx.Client, rows: Rows) -> None:
    partial = [{k: v for k, v in row.items() if k != "age"} for row in rows[:2]]
    for response in (
        client.post("/v2/models/fraud/infer", json=v2_body(partial)),
        client.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": partial}),
    ):
        assert 400 <= response.status_code < 500
        assert "'age'" in response.json()["error"]


def test_a_string_in_a_double_column_is_named(client: httpx.Client, rows: Rows) -> None:
    bad = [dict(rows[0], amount="lots")]
    response = client.post("/v2/models/fraud/infer", json=v2_body(bad))
    assert 400 <= response.status_code < 500
    assert response.json()["field"] == "inputs[0].data"  # the tensor (amount) and, in the message, the index
    assert "'lots'" in response.json()["error"]
    response = client.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": bad})
    assert 400 <= response.status_code < 500
    assert response.json()["field"] == "dataframe_records.amount"


def test_a_bad_tensor_names_its_field(client: httpx.Client, rows: Rows) -> None:
    body = v2_body(rows[:2])
    body["inputs"][1]["shape"] = [3]
    response = client.post("/v2/models/fraud/infer", json=body)
    assert response.status_code == 400
    assert response.json()["field"] == "inputs[1].data"


def test_a_body_too_large_is_413(client: httpx.Client) -> None:
    response = client.post(
        "/v2/models/fraud/infer", content=b" " * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["field"] == "body"


def test_a_streamed_body_too_large_is_413(client: httpx.Client) -> None:
    """Without a content-length (chunked), the limit still holds."""

    def chunks() -> Iterator[bytes]:
        for _ in range(9):
            yield b" " * (1024 * 1024)

    response = client.post("/v2/models/fraud/infer", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_integral_values_in_a_double_column_are_accepted(client: httpx.Client) -> None:
    body = {
        "inputs": [
            {"name": "amount", "shape": [1], "datatype": "FP64", "data": [120]},
            {"name": "velocity", "shape": [1], "datatype": "FP64", "data": [2]},
            {"name": "age", "shape": [1], "datatype": "FP64", "data": [365]},
        ]
    }
    response = client.post("/v2/models/fraud/infer", json=body, headers=user(1))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("payload", [b"42", b"null"])
def test_a_scoring_body_that_is_not_an_object_is_400(shared: Any, payload: bytes) -> None:
    with shared.client() as own:  # a 500 makes uvicorn drop the connection: keep it off the shared client's
        response = own.post(
            "/v1/endpoints/fraud/invocations", content=payload, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["field"] == "body"


# -- feedback -------------------------------------------------------------------------------------


def test_single_and_batch_labels_are_accepted(client: httpx.Client, rows: Rows) -> None:
    _, ids = predict_ids(client, rows[:3], who=5)
    single = client.post("/v1/feedback", json={"prediction_id": ids[0], "label": 1})
    assert single.status_code == 200 and single.json() == {"accepted": 1, "relayed": 0}
    batch = client.post(
        "/v1/feedback",
        json={"labels": [{"prediction_id": ids[1], "label": 0}, {"prediction_id": ids[2], "label": True}]},
    )
    assert batch.status_code == 200 and batch.json() == {"accepted": 2, "relayed": 0}


def test_labels_may_come_compressed_as_predictions_may(client: httpx.Client, rows: Rows) -> None:
    """A gzip body was read as JSON: a 400 (found by review)."""
    import gzip
    import json

    _, ids = predict_ids(client, rows[:2], who=7)
    body = gzip.compress(json.dumps([{"prediction_id": each, "label": 1} for each in ids]).encode())
    answer = client.post("/v1/feedback", content=body, headers={"content-encoding": "gzip"})
    assert answer.status_code == 200 and answer.json() == {"accepted": 2, "relayed": 0}


def test_an_unknown_id_is_404_and_its_batch_changes_nothing(client: httpx.Client, rows: Rows) -> None:
    _, ids = predict_ids(client, rows[:2], who=6)
    alone = client.post("/v1/feedback", json={"prediction_id": "never-issued", "label": 1})
    assert alone.status_code == 404
    assert "never-issued" in alone.json()["error"]

    items = [{"prediction_id": ids[0], "label": 1}, {"prediction_id": "never-issued", "label": 0}]
    batch = client.post("/v1/feedback", json={"labels": items})
    assert batch.status_code == 404
    assert batch.json()["field"] == "labels[1].prediction_id"
    # all or nothing: the good ids of the refused batch can still be labelled
    again = client.post(
        "/v1/feedback", json=[{"prediction_id": ids[0], "label": 1}, {"prediction_id": ids[1], "label": 0}]
    )
    assert again.status_code == 200 and again.json() == {"accepted": 2, "relayed": 0}


def test_a_label_other_than_0_or_1_is_400_naming_it(client: httpx.Client, rows: Rows) -> None:
    _, ids = predict_ids(client, rows[:2], who=7)
    items = [{"prediction_id": ids[0], "label": 1}, {"prediction_id": ids[1], "label": 2}]
    response = client.post("/v1/feedback", json={"labels": items})
    assert response.status_code == 400
    assert response.json()["field"] == "labels[1].label"
    assert client.post("/v1/feedback", json={"labels": items[:1]}).json() == {"accepted": 1, "relayed": 0}


def test_a_second_label_for_the_same_prediction_is_404(client: httpx.Client, rows: Rows) -> None:
    _, (prediction_id,) = predict_ids(client, rows[:1], who=8)
    assert client.post("/v1/feedback", json={"prediction_id": prediction_id, "label": 1}).status_code == 200
    second = client.post("/v1/feedback", json={"prediction_id": prediction_id, "label": 0})
    assert second.status_code == 404
    # and twice in one batch is refused as a whole
    _, (other,) = predict_ids(client, rows[:1], who=8)
    twice = client.post(
        "/v1/feedback", json=[{"prediction_id": other, "label": 1}, {"prediction_id": other, "label": 1}]
    )
    assert twice.status_code == 404
    assert twice.json()["field"] == "labels[1].prediction_id"


# -- telemetry, failures and route changes: each on a gateway of its own --------------------------


def _telemetry(store: SqlStore, rollout_id: str) -> RolloutTelemetry:
    return pair(store.read_telemetry(rollout_id))


def test_telemetry_reaches_the_store(
    serve: Any, store: SqlStore, pyfunc_backend: Any, versions: Any, rows: Rows
) -> None:
    store.put_route(fraud_route(versions, rollout_id="r-telemetry"))
    running = serve.start(Gateway(routes=store, backend=pyfunc_backend, telemetry=store, source="gw-1"))
    served: Counter[str] = Counter()
    labelled: Counter[str] = Counter()
    row_counts: Counter[str] = Counter()
    with running.client() as http:
        for who in range(40):
            batch = rows[: 1 + who % 3]
            if who % 2:
                response = infer(http, batch, who=who)
                ids = response.json()["parameters"]["prediction_ids"].split(",")
            else:
                response = http.post(
                    "/v1/endpoints/fraud/invocations", json={"dataframe_records": batch}, headers=user(who)
                )
                ids = response.json()["prediction_ids"]
            assert response.status_code == 200
            variant = response.headers[VARIANT_HEADER]
            served[variant] += 1
            row_counts[variant] += len(ids)
            if who % 4 < 2:  # label some of them, in one batch per request
                items = [{"prediction_id": i, "label": who % 2} for i in ids]
                assert http.post("/v1/feedback", json={"labels": items}).json() == {"accepted": len(ids), "relayed": 0}
                labelled[variant] += len(ids)
    assert served["baseline"] and served["candidate"]
    running.flush()

    total = _telemetry(store, "r-telemetry")
    for variant, counts in (("baseline", total.baseline), ("candidate", total.candidate)):
        assert counts.requests == served[variant]
        assert counts.errors == 0
        assert sum(counts.latency_counts) == served[variant]
        assert sum(counts.score_counts) == row_counts[variant]
        assert counts.labels == labelled[variant]
        # the model's CPU time: positive, and no more than the requests' wall time it was measured
        # in (each latency bucket's upper edge bounds the requests in it)
        edges = [*LATENCY_EDGES_MS, float("inf")]
        assert 0 < counts.cpu_ms <= sum(n * edges[i] for i, n in enumerate(counts.latency_counts) if n)
    assert sorted(variant.value for variant, _ in store.read_telemetry("r-telemetry")) == ["baseline", "candidate"]


def test_telemetry_is_flushed_in_the_background(
    serve: Any, store: SqlStore, pyfunc_backend: Any, versions: Any, rows: Rows
) -> None:
    store.put_route(fraud_route(versions, weight=100.0, rollout_id="r-background"))
    running = serve.start(Gateway(routes=store, backend=pyfunc_backend, telemetry=store, source="gw-1"))
    with running.client() as http:
        for who in range(5):
            assert infer(http, rows[:1], who=who).headers[VARIANT_HEADER] == "candidate"
    deadline = time.monotonic() + 5
    while _telemetry(store, "r-background").candidate.requests < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _telemetry(store, "r-background").candidate.requests == 5


def _fake_models(features: tuple[str, ...], candidate: Callable[[dict[str, list[Any]]], list[Any]]) -> FakeBackend:
    """Both variants as functions: for the one test whose baseline must refuse an input by a rule
    of its own (a real scikit-learn model answers any finite number)."""
    columns = tuple(Column(name=name, type="double") for name in features)

    def baseline(inputs: dict[str, list[Any]]) -> list[Any]:
        if any(value < 0 for value in inputs["amount"]):
            raise RequestError("amount must not be negative", field="inputs.amount", status=422)
        return [[0.8, 0.2] for _ in inputs["amount"]]

    return FakeBackend({"fraud/1": FunctionModel(baseline, columns), "fraud/2": FunctionModel(candidate, columns)})


def test_a_failing_candidate_costs_the_client_nothing(
    serve: Any, store: SqlStore, versions: Any, rows: Rows, with_candidate: Any, expected: Any
) -> None:
    def broken(_inputs: dict[str, list[Any]]) -> list[Any]:
        raise RuntimeError("candidate crashed")

    store.put_route(fraud_route(versions, weight=100.0, rollout_id="r-broken"))
    running = serve.start(Gateway(routes=store, backend=with_candidate(broken), telemetry=store, source="gw-1"))
    with running.client() as http:
        for who in range(6):
            response = infer(http, rows[:2], who=who)
            assert response.status_code == 200, response.text
            assert response.headers[VARIANT_HEADER] == "baseline"
            data = response.json()["outputs"][0]["data"]
            assert [data[0:2], data[2:4]] == expected("baseline", rows[:2])  # the real baseline's answer
            (prediction_id, _) = response.json()["parameters"]["prediction_ids"].split(",")
            assert http.post("/v1/feedback", json={"prediction_id": prediction_id, "label": 0}).status_code == 200
    running.flush()
    total = _telemetry(store, "r-broken")
    assert (total.candidate.requests, total.candidate.errors, total.candidate.labels) == (6, 6, 0)
    assert (total.baseline.requests, total.baseline.errors, total.baseline.labels) == (6, 0, 6)


@pytest.mark.parametrize(("value", "datatype"), [(2**63 + 5, "UINT64"), (2**70, None)], ids=["uint64", "past 64 bits"])
def test_outputs_are_encoded_or_refused_before_their_success_is_counted(
    serve: Any, store: SqlStore, versions: Any, rows: Rows, with_candidate: Any, value: int, datatype: str | None
) -> None:
    """A model's uint64 ids past INT64's range are UINT64 in a V2 answer (JSON or binary); an
    integer no 64-bit type holds is the candidate's failure, in both protocols: the baseline
    answers, and the failure is counted. It used to be a 500 counted as a success."""

    def ids(inputs: dict[str, list[Any]]) -> list[Any]:
        return [value for _ in inputs["amount"]]

    store.put_route(fraud_route(versions, weight=100.0, rollout_id="r-ints"))
    running = serve.start(Gateway(routes=store, backend=with_candidate(ids), telemetry=store, source="gw-1"))
    with running.client() as http:
        for binary in (False, True):
            body = dict(v2_body(rows[:1]), parameters={"binary_data_output": binary})
            response = http.post("/v2/models/fraud/infer", json=body, headers=user(0))
            assert response.status_code == 200, response.text
            expected = "candidate" if datatype else "baseline"
            assert response.headers[VARIANT_HEADER] == expected
            if datatype and not binary:
                assert response.json()["outputs"][0] == {
                    "name": "predict",
                    "shape": [1],
                    "datatype": datatype,
                    "data": [value],
                }
        scoring = http.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": rows[:1]}, headers=user(0))
        assert scoring.status_code == 200, scoring.text
        assert scoring.json()["variant"] == ("candidate" if datatype else "baseline")
        if datatype:
            assert scoring.json()["predictions"] == [value]
    running.flush()
    total = _telemetry(store, "r-ints")
    assert (total.candidate.requests, total.candidate.errors) == (3, 0 if datatype else 3)


def test_input_both_variants_refuse_is_not_a_candidate_error(
    serve: Any, store: SqlStore, versions: Any, rows: Rows, mlflow_registry: Any
) -> None:
    def strict(inputs: dict[str, list[Any]]) -> list[Any]:
        if any(value < 0 for value in inputs["amount"]):
            raise RequestError("amount must not be negative", field="inputs.amount", status=422)
        return [[0.7, 0.3] for _ in inputs["amount"]]

    store.put_route(fraud_route(versions, weight=100.0, rollout_id="r-refused"))
    running = serve.start(
        Gateway(routes=store, backend=_fake_models(mlflow_registry.features, strict), telemetry=store, source="gw-1")
    )
    with running.client() as http:
        response = infer(http, [dict(rows[0], amount=-5.0)])
        assert response.status_code == 422
        assert infer(http, rows[:1]).headers[VARIANT_HEADER] == "candidate"
    running.flush()
    total = _telemetry(store, "r-refused")
    assert (total.candidate.requests, total.candidate.errors) == (1, 0)


def _wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for the gateway to apply a route; the timeout only keeps a broken gateway from hanging
    the test (how fast routes propagate is bench.controlplane's to measure)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "the gateway did not apply the new route"
        time.sleep(0.05)


def test_a_route_change_in_the_store_is_applied_while_serving(
    serve: Any, store: SqlStore, pyfunc_backend: Any, versions: Any, rows: Rows
) -> None:
    store.put_route(fraud_route(versions, weight=100.0, rollout_id="r-moving"))
    running = serve.start(Gateway(routes=store, backend=pyfunc_backend, telemetry=store, source="gw-1"))
    with running.client() as http:
        assert infer(http, rows[:1]).headers[VARIANT_HEADER] == "candidate"
        assert infer(http, rows[:1], endpoint="churn").status_code == 404

        store.put_route(fraud_route(versions, weight=0.0, rollout_id="r-moving"))  # e.g. a rollback
        _wait_until(lambda: infer(http, rows[:1]).headers[VARIANT_HEADER] == "baseline")
        assert {infer(http, rows[:1], who=who).headers[VARIANT_HEADER] for who in range(20)} == {"baseline"}

        candidate = versions[1]
        store.put_route(Route(endpoint="churn", baseline=candidate))  # a new endpoint
        _wait_until(lambda: infer(http, rows[:1], endpoint="churn").status_code == 200)
        assert http.get("/v2/health/ready").json()["endpoints"] == ["churn", "fraud"]
        assert http.get("/v2/models/churn").json()["versions"] == [candidate.version]


def test_each_user_is_counted_once_at_each_weight_on_the_variant_it_was_sent_to(
    serve: Any, store: SqlStore, pyfunc_backend: Any, versions: Any, rows: Rows
) -> None:
    """The split of users that the sample-ratio check tests under sticky routing: a user's first
    request at a weight counts it once, on its variant, and the gateway says it counts keys; the
    routing table read again at the same weight counts no one again; a new weight, everyone."""
    store.put_route(fraud_route(versions, weight=50.0, rollout_id="r-keys"))
    running = serve.start(Gateway(routes=store, backend=pyfunc_backend, telemetry=store, source="gw-keys"))
    users: dict[str, set[int]] = {"baseline": set(), "candidate": set()}
    with running.client() as http:
        for who in range(30):
            for _ in range(1 + who % 3):
                users[infer(http, rows[:1], who=who).headers[VARIANT_HEADER]].add(who)
        store.put_route(fraud_route(versions, weight=50.0, rollout_id="r-keys"))  # a new table, the same split
        _wait_until(lambda: running.gateway.routes_version == store.routes_version())
        for who in range(30):
            assert infer(http, rows[:1], who=who).status_code == 200
        running.flush()
        total = _telemetry(store, "r-keys")
        assert (total.baseline.keys, total.candidate.keys) == (len(users["baseline"]), len(users["candidate"]))
        assert users["baseline"] and users["candidate"]
        assert (total.baseline.key_gateways, total.candidate.key_gateways) == (1, 1)
        assert total.baseline.requests + total.candidate.requests == sum(1 + who % 3 for who in range(30)) + 30

        store.put_route(fraud_route(versions, weight=100.0, rollout_id="r-keys"))
        _wait_until(lambda: running.gateway.routes_version == store.routes_version())
        for who in range(30):
            assert infer(http, rows[:1], who=who).headers[VARIANT_HEADER] == "candidate"
        running.flush()
        after = _telemetry(store, "r-keys")
        assert (after.baseline.keys, after.candidate.keys) == (len(users["baseline"]), len(users["candidate"]) + 30)


def test_a_route_that_cannot_load_does_not_hold_back_other_endpoints(
    serve: Any, store: SqlStore, pyfunc_backend: Any, versions: Any, rows: Rows
) -> None:
    store.put_route(fraud_route(versions, weight=100.0, rollout_id="r-isolated"))
    running = serve.start(Gateway(routes=store, backend=pyfunc_backend, telemetry=store, source="gw-1"))
    with running.client() as http:
        assert infer(http, rows[:1]).headers[VARIANT_HEADER] == "candidate"
        # another endpoint's route names a version this backend cannot load
        store.put_route(Route(endpoint="churn", baseline=ModelVersion(name="churn", version="404")))
        store.put_route(fraud_route(versions, weight=0.0, rollout_id="r-isolated"))  # fraud rolls back
        _wait_until(lambda: infer(http, rows[:1]).headers[VARIANT_HEADER] == "baseline")
        # never loaded, so not served: 503, which a client retries (a 404, as before, said no such name)
        churn = infer(http, rows[:1], endpoint="churn")
        assert churn.status_code == 503 and "'churn' is not loaded yet" in churn.json()["error"]
        assert infer(http, rows[:1], endpoint="nonesuch").status_code == 404


def test_a_gateway_whose_first_table_has_an_endpoint_that_cannot_load_is_ready_and_says_which(
    serve: Any, store: SqlStore, pyfunc_backend: Any, versions: Any, rows: Rows, caplog: pytest.LogCaptureFixture
) -> None:
    """Readiness waited for a table applied whole: one endpoint whose model cannot load kept the
    gateway out of its load balancer for ever, its healthy endpoints too; and its traceback was
    logged at every poll, twice a second."""
    store.put_route(Route(endpoint="fraud", baseline=versions[0]))
    store.put_route(Route(endpoint="churn", baseline=versions[1]))  # fraud/2: its flavor is not installed
    backend = CandidateWillNotLoad(pyfunc_backend)
    running = serve.start(Gateway(routes=store, backend=backend, telemetry=store, source="gw-unready"))
    with running.client() as http:
        _wait_until(lambda: backend.attempts >= 3)  # tried again at every poll
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 200
        assert ready.json()["unavailable"] == {"churn": "ModuleNotFoundError: No module named 'catboost'"}
        assert ready.json()["endpoints"] == ["fraud"] and infer(http, rows[:1]).status_code == 200
        assert http.get("/v2/models/churn/ready").status_code == 503
        assert "No module named 'catboost'" in http.get("/v2/models/churn/ready").json()["error"]
    tracebacks = [record for record in caplog.records if "cannot load its models" in record.getMessage()]
    assert len(tracebacks) == 1


# -- what a model or a request must not break ------------------------------------------------------


class CandidateWillNotLoad:
    """The session's real models, but loading the candidate (``fraud/2``) raises what the model's
    own code raises when its flavor's module is not installed: no backend wraps that for certain."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.attempts = 0

    def load(self, version: ModelVersion) -> Any:
        if version.version == "2":
            self.attempts += 1
            raise ModuleNotFoundError("No module named 'catboost'")
        return self.real.load(version)


def test_a_candidate_that_will_not_load_leaves_the_gateway_serving_and_following_the_store(
    serve: Any, store: SqlStore, pyfunc_backend: Any, versions: Any, rows: Rows
) -> None:
    store.put_route(fraud_route(versions, weight=0.0, rollout_id="r-unloadable"))  # candidate not loaded yet
    backend = CandidateWillNotLoad(pyfunc_backend)
    running = serve.start(Gateway(routes=store, backend=backend, telemetry=store, source="gw-unloadable"))
    with running.client() as http:
        applied = http.get("/v2/health/ready").json()["routes_version"]
        store.put_route(fraud_route(versions, weight=50.0, rollout_id="r-unloadable"))
        _wait_until(lambda: backend.attempts >= 2)  # failed, and tried again on the next poll
        for who in range(10):  # the previous route serves on: the baseline only
            assert infer(http, rows[:1], who=who).headers[VARIANT_HEADER] == "baseline"
        assert http.get("/v2/health/ready").json()["routes_version"] == applied
        store.put_route(Route(endpoint="churn", baseline=versions[0]))  # another endpoint is not held back
        _wait_until(lambda: infer(http, rows[:1], endpoint="churn").status_code == 200)
        store.put_route(fraud_route(versions, weight=0.0, rollout_id="r-unloadable"))  # the rollback
        _wait_until(lambda: http.get("/v2/health/ready").json()["routes_version"] == store.routes_version())
        assert infer(http, rows[:1]).headers[VARIANT_HEADER] == "baseline"
    # flushed by the gateway's own background task: no explicit flush here
    _wait_until(lambda: _telemetry(store, "r-unloadable").baseline.requests == 11)


class FailsOnce:
    """The real store, but each method named in ``armed`` raises once what a driver may raise
    unwrapped: an ``OSError``, not a ``ModelcanaryError``."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.armed: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)
        if name not in self.armed:
            return method

        def once(*_args: Any, **_kwargs: Any) -> Any:
            self.armed.discard(name)
            raise OSError(f"{name}: connection reset by peer")

        return once


def test_an_unexpected_store_error_is_logged_and_the_gateway_carries_on_losing_nothing(
    serve: Any, store: SqlStore, pyfunc_backend: Any, versions: Any, rows: Rows
) -> None:
    store.put_route(fraud_route(versions, weight=0.0, rollout_id="r-flaky"))
    flaky = FailsOnce(store)
    running = serve.start(Gateway(routes=flaky, backend=pyfunc_backend, telemetry=flaky, source="gw-flaky"))
    flaky.armed |= {"routes", "take_labels", "write_telemetry"}  # reading the routing table, flushing
    with running.client() as http:
        assert infer(http, rows[:3]).headers[VARIANT_HEADER] == "baseline"  # one request: one write carries it
        _wait_until(lambda: "write_telemetry" not in flaky.armed)  # ... and that write failed
        store.put_route(fraud_route(versions, weight=100.0, rollout_id="r-flaky"))
        _wait_until(lambda: http.get("/v2/health/ready").json()["routes_version"] == store.routes_version())
        assert infer(http, rows[:1]).headers[VARIANT_HEADER] == "candidate"
    assert not flaky.armed
    _wait_until(lambda: _telemetry(store, "r-flaky").baseline.requests == 1)  # written by a later flush


def test_a_sticky_header_named_in_mixed_case_keeps_each_user_on_one_variant(
    serve: Any, store: SqlStore, registry: MlflowRegistry, pyfunc_backend: Any, long_rollout_spec: str, rows: Rows
) -> None:
    """ASGI servers give header names lowercased; the spec's ``X-User-Id`` must still find its header."""
    from modelcanary.controller.loop import Controller
    from modelcanary.controller.operations import start_rollout

    spec = long_rollout_spec.replace("stickyKey: {header: x-user-id}", "stickyKey: {header: X-User-Id}")
    assert "X-User-Id" in spec
    start_rollout(store, registry, spec, source="test", actor="test")
    assert len(Controller(store=store, registry=registry, holder="controller").tick()) == 1  # into its 50% step
    running = serve.start(Gateway(routes=store, backend=pyfunc_backend, telemetry=store, source="gw-sticky"))
    seen: dict[int, set[str]] = {}
    with running.client() as http:
        for who in range(12):
            for spelling in ("X-User-Id", "x-user-id", "X-USER-ID"):
                for _ in range(2):
                    response = http.post(
                        "/v2/models/fraud/infer", json=v2_body(rows[:1]), headers={spelling: f"user-{who}"}
                    )
                    assert response.status_code == 200, response.text
                    seen.setdefault(who, set()).add(response.headers[VARIANT_HEADER])
    assert all(len(variants) == 1 for variants in seen.values()), seen
    assert set().union(*seen.values()) == {"baseline", "candidate"}  # and the split still splits


def test_a_compressed_body_that_inflates_past_the_limit_is_413(client: httpx.Client, rows: Rows) -> None:
    """The limit bounds the body decompressed too: 8 MiB of padding gzips to a few kilobytes."""
    import gzip
    import json

    request = json.dumps(v2_body(rows[:1])).encode()
    bomb = gzip.compress(request[:-1] + b" " * MAX_BODY_BYTES + b"}")
    assert len(bomb) < MAX_BODY_BYTES // 100
    headers = {"content-type": "application/json", "content-encoding": "gzip", **user(1)}
    response = client.post("/v2/models/fraud/infer", content=bomb, headers=headers)
    assert response.status_code == 413, response.text
    assert response.json()["field"] == "body"
    assert "decompressed" in response.json()["error"]
    fits = client.post("/v2/models/fraud/infer", content=gzip.compress(request), headers=headers)
    assert fits.status_code == 200, fits.text
    # MLflow's scoring protocol reads the coding as well (it read the gzip as JSON: "not valid UTF-8")
    scoring = json.dumps({"dataframe_records": rows[:1]}).encode()
    scored = client.post("/v1/endpoints/fraud/invocations", content=gzip.compress(scoring), headers=headers)
    assert scored.status_code == 200, scored.text
    brotli = {**headers, "content-encoding": "br"}
    refused = client.post("/v1/endpoints/fraud/invocations", content=scoring, headers=brotli)
    assert (refused.status_code, refused.json()["field"]) == (415, "Content-Encoding")


def test_a_tensor_nested_deeper_than_its_shape_is_400_naming_it(shared: Any, rows: Rows) -> None:
    """Nested hundreds of lists deep it once passed Python's recursion limit: a 500."""
    body = v2_body(rows[:1])
    for _ in range(600):
        body["inputs"][1]["data"] = [body["inputs"][1]["data"]]
    with shared.client() as own:  # a 500 makes uvicorn drop the connection: keep it off the shared client's
        response = own.post("/v2/models/fraud/infer", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "inputs[1].data"


def test_a_dataframe_split_column_named_twice_is_400_naming_it(client: httpx.Client, rows: Rows) -> None:
    names = [*rows[0], "amount"]
    body = {"dataframe_split": {"columns": names, "data": [[row[name] for name in names] for row in rows[:2]]}}
    response = client.post("/v1/endpoints/fraud/invocations", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "dataframe_split.columns"
    assert "'amount'" in response.json()["error"]
