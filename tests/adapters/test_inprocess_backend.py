"""The in-process backend loading real registry versions with mlflow.pyfunc."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from modelcanary.adapters.backends.inprocess import InProcessBackend, PyfuncModel
from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.domain.errors import RegistryError, RequestError
from modelcanary.domain.state import ModelVersion
from modelcanary.domain.traffic import Batching, Cache, StickyKey
from modelcanary.ports import Column


@pytest.fixture(scope="module")
def champion(mlflow_registry: Any) -> PyfuncModel:
    registry = MlflowRegistry(mlflow_registry.uri)
    return InProcessBackend(mlflow_registry.uri).load(registry.resolve("models:/fraud@champion"))


def _columns(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    return {name: [row[name] for row in rows] for name in rows[0]}


def test_columns_come_from_the_signature(champion: PyfuncModel, mlflow_registry: Any) -> None:
    expected = tuple(Column(name=name, type="double", required=True) for name in mlflow_registry.features)
    assert champion.columns == expected


def test_predict_returns_one_probability_pair_per_row(champion: PyfuncModel, mlflow_registry: Any) -> None:
    outputs = champion.predict(_columns(mlflow_registry.rows[:5]))
    assert len(outputs) == 5
    for output in outputs:
        assert isinstance(output, list) and len(output) == 2
        assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in output)
        assert sum(output) == pytest.approx(1.0)


def test_two_versions_are_two_models(mlflow_registry: Any, registry: MlflowRegistry) -> None:
    backend = InProcessBackend(mlflow_registry.uri)
    rows = _columns(mlflow_registry.rows[:5])
    v1 = backend.load(registry.resolve("models:/fraud/1")).predict(rows)
    v2 = backend.load(registry.resolve("models:/fraud/2")).predict(rows)
    assert v1 != v2


@pytest.mark.parametrize(
    ("columns", "names"),
    [
        ({"amount": [10.0], "velocity": [1.0]}, "age"),  # a required column is missing
        ({"amount": ["ten"], "velocity": [1.0], "age": [3.0]}, "amount"),  # a string in a double column
    ],
)
def test_a_schema_mismatch_is_a_422_request_error(
    champion: PyfuncModel, columns: dict[str, list[object]], names: str
) -> None:
    with pytest.raises(RequestError) as caught:
        champion.predict(columns)
    assert caught.value.status == 422
    assert caught.value.field in ("inputs", f"inputs.{names}")
    assert names in str(caught.value)


def test_loading_an_unknown_version_is_a_registry_error(mlflow_registry: Any) -> None:
    with pytest.raises(RegistryError, match="models:/fraud/99"):
        InProcessBackend(mlflow_registry.uri).load(ModelVersion(name="fraud", version="99"))


def _broken_copy(tmp_path: Path, mlflow_registry: Any, breaking: str) -> Path:
    """A copy of fraud v1's model directory that MLflow reads but cannot load: its flavor's module
    is not installed, or its serialized estimator does not load (as one from another scikit-learn may not)."""
    import yaml

    path = tmp_path / "model"
    shutil.copytree(InProcessBackend(mlflow_registry.uri).model_path(ModelVersion(name="fraud", version="1")), path)
    mlmodel = path / "MLmodel"
    if breaking == "flavor":
        mlmodel.write_text(
            mlmodel.read_text().replace("loader_module: mlflow.sklearn", "loader_module: no_such_flavor")
        )
    else:
        (path / yaml.safe_load(mlmodel.read_text())["flavors"]["python_function"]["model_path"]).write_bytes(b"junk")
    return path


@pytest.mark.parametrize("breaking", ["flavor", "estimator"])
def test_a_model_that_fails_in_its_own_code_is_a_registry_error_naming_it(
    tmp_path: Path, mlflow_registry: Any, breaking: str
) -> None:
    from mlflow.exceptions import MlflowException

    path = _broken_copy(tmp_path, mlflow_registry, breaking)
    with pytest.raises(RegistryError) as caught:
        InProcessBackend(mlflow_registry.uri).load(ModelVersion(name="fraud", version="1", ref=str(path)))
    cause = caught.value.__cause__
    assert cause is not None and not isinstance(cause, MlflowException)
    assert str(caught.value).startswith(f"loading {path}: {type(cause).__name__}: ")
    if breaking == "flavor":
        assert isinstance(cause, ModuleNotFoundError)


# -- signature types, missing values and outputs, through a real gateway ----------------------------
#
# A registry of its own (a temp dir) with sklearn models fitted on float32, int32 and int64 columns,
# an imputer pipeline whose inferred signature has an optional double column, and pyfunc models that
# answer a list of numpy scalars, a dict of columns, or values JSON cannot carry. A real Gateway
# serves them in-process (httpx's ASGI transport); each answer is compared with the direct
# ``mlflow.pyfunc.load_model(uri).predict(frame)`` on a frame of the signature's dtypes.


class _NumpyInts:
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> list[Any]:
        import numpy as np

        return [np.int64(value > 0) for value in model_input["a"]]


class _Threshold:
    """Reads an inference parameter (its signature's params schema: threshold, default 0.5)."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> list[Any]:
        threshold = (params or {}).get("threshold", 0.5)
        return [float(value > threshold) for value in model_input["a"]]


class _NumpyFloats:
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> list[Any]:
        import numpy as np

        return [np.float32(value) * np.float32(2) for value in model_input["a"]]


class _DictOut:
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> dict[str, list[float]]:
        return {"score": (model_input["a"] * 2).tolist()}


class _Complex:
    """Outputs JSON cannot carry."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> list[Any]:
        import numpy as np

        return [np.complex128(value, 1.0) for value in model_input["a"]]


@dataclass
class Served:
    gateway: Any
    loop: asyncio.AbstractEventLoop
    client: Any  # httpx.AsyncClient on the gateway's ASGI app
    pyfuncs: dict[str, Any]  # name -> mlflow.pyfunc.load_model(uri), for the expected answers

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        response = self.loop.run_until_complete(self.client.post(path, json=body))
        return response.status_code, response.json()

    def invocations(self, endpoint: str, body: Any) -> tuple[int, Any]:
        return self.post(f"/v1/endpoints/{endpoint}/invocations", body)

    def infer(self, endpoint: str, inputs: list[dict[str, Any]]) -> tuple[int, Any]:
        return self.post(f"/v2/models/{endpoint}/infer", {"inputs": inputs})

    def direct(self, name: str, frame: pd.DataFrame) -> list[Any]:
        return list(self.pyfuncs[name].predict(frame).tolist())


def _log_all(experiment: str) -> None:
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.pyfunc.model import PythonModel
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(7)
    a, b, c = rng.normal(size=200), rng.normal(size=200), rng.normal(size=200)
    labels = (a + 2 * b - c > 0).astype(np.int64)
    floats = pd.DataFrame({"a": a, "b": b, "c": c})
    ints = pd.DataFrame({"n": rng.integers(0, 20, 200), "k": rng.integers(0, 20, 200)})
    int_labels = (ints["n"] > ints["k"]).astype(np.int64)
    with_nans = floats.copy()
    with_nans.loc[::5, "c"] = np.nan
    sklearn_models = {
        "f32": (LogisticRegression().fit(floats.astype(np.float32), labels), floats.astype(np.float32), True),
        "i32": (LogisticRegression().fit(ints.astype(np.int32), int_labels), ints.astype(np.int32), False),
        "lng": (LogisticRegression().fit(ints, int_labels), ints, False),
        "imp": (make_pipeline(SimpleImputer(), LogisticRegression()).fit(with_nans, labels), with_nans, True),
        # fitted on a numpy matrix: its inferred signature is one unnamed tensor, Tensor('float64', (-1, 3))
        "tens": (LogisticRegression().fit(floats.to_numpy(), labels), floats.to_numpy(), False),
    }
    one_double = ModelSignature(inputs=Schema([ColSpec("double", "a")]))
    pyfunc_models = {"npint": _NumpyInts, "npf32": _NumpyFloats, "dictout": _DictOut, "complex": _Complex}
    with_params = ModelSignature(
        inputs=Schema([ColSpec("double", "a")]), params=ParamSchema([ParamSpec("threshold", "double", 0.5)])
    )
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        for name, (model, frame, proba) in sklearn_models.items():
            outputs = model.predict_proba(frame) if proba else model.predict(frame)
            with mlflow.start_run(experiment_id=experiment, run_name=name):
                mlflow.sklearn.log_model(
                    model,
                    name="model",
                    registered_model_name=name,
                    signature=infer_signature(frame, outputs),
                    pyfunc_predict_fn="predict_proba" if proba else "predict",
                    pip_requirements=["scikit-learn"],
                    skops_trusted_types=["numpy.dtype"],
                )
        for name, cls in [*pyfunc_models.items(), ("params", _Threshold)]:
            with mlflow.start_run(experiment_id=experiment, run_name=name):
                mlflow.pyfunc.log_model(
                    name="model",
                    python_model=type(cls.__name__, (cls, PythonModel), {})(),
                    registered_model_name=name,
                    signature=with_params if name == "params" else one_double,
                    pip_requirements=["numpy"],
                )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    import httpx
    import mlflow

    from modelcanary.domain.state import Route
    from modelcanary.gateway.app import Gateway, StaticRoutes, create_app

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    root = tmp_path_factory.mktemp("typed-mlflow")
    registry = MlflowRegistry(f"sqlite:///{root / 'mlflow.db'}")
    # the models are logged through MLflow's fluent API, and read back through it: it reads the global URIs
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    loop = asyncio.new_event_loop()
    try:
        _log_all(registry.client.create_experiment("typed", artifact_location=(root / "artifacts").as_uri()))
        names = ["f32", "i32", "lng", "imp", "npint", "npf32", "dictout", "complex", "tens", "params"]
        versions = {name: registry.resolve(f"models:/{name}/1") for name in names}
        routes = {name: Route(endpoint=name, baseline=version) for name, version in versions.items()}
        # a rollout whose candidate answers what JSON cannot carry, beside a baseline that answers
        routes["canary"] = Route(
            endpoint="canary",
            baseline=versions["npf32"],
            candidate=versions["complex"],
            weight=100.0,
            rollout_id="r-canary",
        )
        # a rollout between two models that read params, each batched and cached
        routes["params-rollout"] = Route(
            endpoint="params-rollout",
            baseline=versions["params"],
            candidate=versions["params"],
            weight=50.0,
            rollout_id="r-params",
            sticky=StickyKey(header="x-user"),
            batching=Batching(max_batch_size=8, max_wait_us=0),
            cache=Cache(),
        )
        backend = InProcessBackend(registry.tracking_uri)
        gateway = Gateway(routes=StaticRoutes(routes), backend=backend, telemetry=None, source="typed")
        with warnings.catch_warnings():  # MLflow warns it infers no signature from the pyfuncs' type hints
            warnings.simplefilter("ignore")
            loop.run_until_complete(gateway.refresh())  # loads every model now
            pyfuncs = {name: mlflow.pyfunc.load_model(version.uri) for name, version in versions.items()}
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(gateway)), base_url="http://gateway")
    try:
        yield Served(gateway, loop, client, pyfuncs)
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


def _predictions(answer: tuple[int, Any]) -> Any:
    status, body = answer
    assert status == 200, body
    if "predictions" in body:
        return body["predictions"]
    (tensor,) = body["outputs"]
    data, shape = tensor["data"], tensor["shape"]
    return [data[i * shape[1] : (i + 1) * shape[1]] for i in range(shape[0])] if len(shape) == 2 else data


def test_model_metadata_states_the_output_as_infer_answers_it_or_not_at_all(served: Served) -> None:
    """A V2 client builds its decoding from the metadata: the output's datatype must be what infer
    answers (a classifier's labels INT64, not FP64), and a model whose signature states no output
    lists none rather than a guess."""
    rows: dict[str, dict[str, float]] = {
        "f32": {"a": 0.1, "b": -1.2, "c": 2.5},
        "lng": {"n": 3, "k": 4},
        "i32": {"n": 3, "k": 4},
    }
    for name, row in rows.items():
        metadata = served.loop.run_until_complete(served.client.get(f"/v2/models/{name}")).json()
        inputs = [{"name": key, "shape": [1], "datatype": "FP64", "data": [value]} for key, value in row.items()]
        status, body = served.infer(name, inputs)
        assert status == 200, body
        (answer,) = body["outputs"]
        (stated,) = metadata["outputs"]
        assert stated["datatype"] == answer["datatype"] == ("FP64" if name == "f32" else "INT64"), name
        assert len(stated["shape"]) == len(answer["shape"]), name
    for name in ("npint", "npf32"):  # a pyfunc logged with inputs only
        assert served.loop.run_until_complete(served.client.get(f"/v2/models/{name}")).json()["outputs"] == []


def test_params_reach_a_model_that_reads_them_as_mlflow_passes_them(served: Served) -> None:
    """MLflow's scoring server passes a request's ``params`` to a model whose signature has a params
    schema, converted to their types, the missing ones at their defaults and unknown ones dropped;
    a V2 request sends them as its ``parameters``. A value that does not fit is a 400 naming the
    parameter where the request sent it; a model without a params schema ignores them, as under
    MLflow."""
    records = [{"a": 0.7}, {"a": 0.95}]
    frame = pd.DataFrame(records)
    pyfunc = served.pyfuncs["params"]
    for params in ({"threshold": 0.9}, {"threshold": 1}, {"threshold": 0.9, "unknown": "x"}, {}):
        expected = list(pyfunc.predict(frame, params=params))
        answered = _predictions(served.invocations("params", {"dataframe_records": records, "params": params}))
        assert answered == expected, params
        inputs = [{"name": "a", "shape": [2], "datatype": "FP64", "data": [0.7, 0.95]}]
        v2 = {"inputs": inputs, "parameters": {**params, "binary_data_output": False}}
        assert _predictions(served.post("/v2/models/params/infer", v2)) == expected, params
    threshold = {"dataframe_records": records, "params": {"threshold": 0.9}}
    assert _predictions(served.invocations("params", threshold)) == [0.0, 1.0]
    assert _predictions(served.invocations("params", {"dataframe_records": records})) == [1.0, 1.0]  # its default
    status, body = served.invocations("params", {"dataframe_records": records, "params": {"threshold": "high"}})
    assert (status, body["field"]) == (400, "params.threshold"), body
    status, body = served.post("/v2/models/params/infer", {"inputs": inputs, "parameters": {"threshold": [1]}})
    assert (status, body["field"]) == (400, "parameters.threshold"), body
    status, body = served.invocations("params", {"dataframe_records": records, "params": [0.9]})
    assert (status, body["field"]) == (400, "params"), body
    for ignored in ({"threshold": 0.9}, [0.9]):  # even what is not an object, as MLflow ignores them
        assert _predictions(served.invocations("npf32", {"dataframe_records": records, "params": ignored}))


def test_params_go_to_both_variants_past_their_batching_queues_and_caches(served: Served) -> None:
    """A request's params reach whichever variant answers it; the request leaves out the variant's
    batching queue and cache, whose other requests and cached answers had other params (a cached
    answer for the default threshold answering a request for 0.9 is a wrong answer)."""
    body = {"dataframe_records": [{"a": 0.7}]}
    seen = set()
    for user in range(40):
        headers = {"x-user": f"u{user}"}
        for _ in range(2):  # the second would come from the cache
            for params, expected in (({}, [1.0]), ({"threshold": 0.9}, [0.0])):
                response = served.loop.run_until_complete(
                    served.client.post(
                        "/v1/endpoints/params-rollout/invocations", json={**body, "params": params}, headers=headers
                    )
                )
                assert response.status_code == 200, response.text
                assert response.json()["predictions"] == expected, (user, params)
                seen.add(response.headers["x-modelcanary-variant"])
    assert seen == {"baseline", "candidate"}
    serving = served.gateway.serving["params-rollout"]
    assert serving.baseline_cache is not None and serving.baseline_cache.hits > 0  # the requests without params


def test_float_integer_and_long_columns_take_json_numbers_as_mlflow_casts_them(served: Served) -> None:
    import numpy as np

    assert {column.type for column in served.gateway.serving["f32"].baseline.columns} == {"float"}
    assert {column.type for column in served.gateway.serving["i32"].baseline.columns} == {"integer"}
    assert {column.type for column in served.gateway.serving["lng"].baseline.columns} == {"long"}
    records = [{"a": 0.1, "b": -1.2, "c": 2.5}, {"a": 1, "b": 0.3, "c": -0.7}]
    f32 = served.direct("f32", pd.DataFrame(records).astype(np.float32))
    assert _predictions(served.invocations("f32", {"dataframe_records": records})) == f32
    fp32 = [{"name": name, "shape": [2], "datatype": "FP32", "data": [r[name] for r in records]} for name in "abc"]
    assert _predictions(served.infer("f32", fp32)) == f32

    ints = [{"n": 3, "k": 4}, {"n": 9, "k": 1}, {"n": 12, "k": 12}]
    for name, dtype in (("i32", np.int32), ("lng", np.int64)):
        expected = served.direct(name, pd.DataFrame(ints).astype(dtype))
        assert _predictions(served.invocations(name, {"dataframe_records": ints})) == expected
        # 3.0 is what a Python client sends for a whole number
        as_floats = [{key: float(value) for key, value in row.items()} for row in ints]
        assert _predictions(served.invocations(name, {"dataframe_records": as_floats})) == expected
        for datatype in ("INT32", "INT64", "FP64"):
            tensors = [
                {"name": key, "shape": [3], "datatype": datatype, "data": [row[key] for row in ints]} for key in "nk"
            ]
            assert _predictions(served.infer(name, tensors)) == expected, datatype


@pytest.mark.parametrize(
    ("endpoint", "body", "field", "says"),
    [
        ("lng", {"dataframe_records": [{"n": 2.5, "k": 1}]}, "dataframe_records.n", "whole numbers"),
        ("i32", {"dataframe_split": {"columns": ["n", "k"], "data": [[1, 2**31]]}}, "dataframe_split.k", "range"),
        ("f32", {"inputs": {"a": [1e39], "b": [0.0], "c": [0.0]}}, "inputs.a", "range"),
        (
            "lng",
            [
                {"name": "k", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {"name": "n", "shape": [1], "datatype": "FP64", "data": [0.5]},
            ],
            "inputs[1].data",
            "whole numbers",
        ),
        (
            "i32",
            [{"name": "n", "shape": [1, 2], "datatype": "INT64", "data": [[1, -(2**40)]]}],
            "inputs[0].data",
            "range",
        ),
    ],
)
def test_a_number_its_column_cannot_hold_is_refused_naming_the_column(
    served: Served, endpoint: str, body: Any, field: str, says: str
) -> None:
    status, answer = served.infer(endpoint, body) if isinstance(body, list) else served.invocations(endpoint, body)
    assert 400 <= status < 500, answer
    assert answer["field"] == field and says in answer["error"], answer


def test_the_model_adapter_casts_and_refuses_as_the_gateway_does(served: Served) -> None:
    """Called directly (a batch, a test), the adapter casts by signature type and names the column."""
    import numpy as np

    model = served.gateway.serving["lng"].baseline
    frame = pd.DataFrame({"n": [3], "k": [4]}, dtype=np.int64)
    assert model.predict({"n": [3.0], "k": [np.int64(4)]}) == served.direct("lng", frame)
    with pytest.raises(RequestError) as caught:
        model.predict({"n": [2.5], "k": [1]})
    assert caught.value.status == 422 and caught.value.field == "inputs.n"
    with pytest.raises(RequestError) as caught:
        served.gateway.serving["f32"].baseline.predict({"a": [1e39], "b": [0.0], "c": [0.0]})
    assert caught.value.field == "inputs.a" and "range" in str(caught.value)


def test_a_null_in_an_optional_double_column_is_a_missing_value_the_imputer_fills(served: Served) -> None:
    model = served.gateway.serving["imp"].baseline
    assert [column.required for column in model.columns] == [True, True, False]  # MLflow inferred c optional
    records: list[dict[str, float | None]] = [
        {"a": 0.1, "b": -1.2, "c": None},
        {"a": 1.0, "b": 0.3, "c": -0.7},
        {"a": -2.0, "b": 0.5, "c": None},
    ]
    expected = served.direct("imp", pd.DataFrame(records))
    assert _predictions(served.invocations("imp", {"dataframe_records": records})) == expected
    split = {"columns": ["a", "b", "c"], "data": [[r["a"], r["b"], r["c"]] for r in records]}
    assert _predictions(served.invocations("imp", {"dataframe_split": split})) == expected
    # the direct sklearn path answers as the generic pyfunc does (bit for bit)
    columns = {name: [row[name] for row in records] for name in "abc"}
    assert model.path == "array" and model.predict(columns) == expected
    assert PyfuncModel(served.pyfuncs["imp"], direct=False).predict(columns) == expected
    # NaN, which Python's json.dumps writes for a missing float and MLflow's server reads, is one too
    as_python = json.dumps(
        {"dataframe_records": [{**r, "c": float("nan") if r["c"] is None else r["c"]} for r in records]}
    )
    assert "NaN" in as_python
    answer = served.loop.run_until_complete(served.client.post("/v1/endpoints/imp/invocations", content=as_python))
    assert _predictions((answer.status_code, answer.json())) == expected
    nan_in_a = json.dumps({"dataframe_records": [{"a": float("nan"), "b": 0.0, "c": 1.0}]})
    refused = served.loop.run_until_complete(served.client.post("/v1/endpoints/imp/invocations", content=nan_in_a))
    assert (refused.status_code, refused.json()["field"]) == (422, "dataframe_records.a")
    # a null in a required column, and an infinity anywhere, are still refused, naming the column
    status, answer = served.invocations("imp", {"dataframe_records": [{"a": None, "b": 0.0, "c": 1.0}]})
    assert status == 400 and answer["field"] == "dataframe_records.a"
    for bad in ({"a": [0.0], "b": [0.0], "c": [float("inf")]}, {"a": [float("nan")], "b": [0.0], "c": [0.0]}):
        with pytest.raises(RequestError) as caught:
            model.predict(bad)
        assert caught.value.status == 422 and caught.value.field == f"inputs.{'c' if 'inf' in str(bad) else 'a'}"


@pytest.mark.parametrize(
    ("endpoint", "predictions", "datatype"),
    [("npint", [1, 0], "INT64"), ("npf32", [1.0, -3.0], "FP64"), ("dictout", [1.0, -3.0], "FP64")],
)
def test_numpy_scalars_and_a_dict_of_columns_are_answered_as_plain_numbers(
    served: Served, endpoint: str, predictions: list[Any], datatype: str
) -> None:
    status, body = served.invocations(endpoint, {"dataframe_records": [{"a": 0.5}, {"a": -1.5}]})
    assert status == 200 and body["predictions"] == predictions, body
    status, body = served.infer(endpoint, [{"name": "a", "shape": [2], "datatype": "FP64", "data": [0.5, -1.5]}])
    assert status == 200, body
    assert body["outputs"][0]["datatype"] == datatype and body["outputs"][0]["data"] == predictions


def test_outputs_json_cannot_carry_are_the_models_failure(served: Served) -> None:
    """A baseline's: a 502 naming it. A candidate's: the baseline answers and the candidate is charged
    the failure (before, the 500 came after the answer was counted a success)."""
    status, body = served.invocations("complex", {"dataframe_records": [{"a": 0.5}]})
    assert status == 502 and body["field"] == "model", body
    assert "models:/complex/1 answered outputs JSON cannot carry" in body["error"]
    served.gateway.recorder.changed()
    status, body = served.invocations("canary", {"dataframe_records": [{"a": 0.5}]})
    assert status == 200 and body["variant"] == "baseline" and body["predictions"] == [1.0], body
    counts = {variant.value: telemetry for _, variant, telemetry in served.gateway.recorder.changed()}
    assert counts["candidate"].errors == 1 and counts["candidate"].requests == 1
    assert counts["baseline"].errors == 0


# -- a signature that is one unnamed tensor (-1, N): rows and matrices, as MLflow's scoring server takes them

_TENSOR_ROWS: list[list[float]] = [[0.1, -1.2, 2.5], [1.0, 0.3, -0.7], [2, -3, 1]]  # the last row: JSON integers


def _tensor_direct(served: Served, rows: list[list[float]]) -> list[Any]:
    import numpy as np

    return list(served.pyfuncs["tens"].predict(np.array(rows, dtype=np.float64)).tolist())


def test_an_unnamed_tensor_signature_takes_rows_by_position(served: Served) -> None:
    signature = served.pyfuncs["tens"].metadata.get_input_schema()
    assert signature.is_tensor_spec() and not signature.has_input_names()  # what infer_signature made of numpy
    expected = _tensor_direct(served, _TENSOR_ROWS)
    for key in ("inputs", "instances"):
        assert _predictions(served.invocations("tens", {key: _TENSOR_ROWS})) == expected, key


def test_an_unnamed_tensor_signature_takes_one_2d_v2_tensor_nested_or_flat(served: Served) -> None:
    expected = _tensor_direct(served, _TENSOR_ROWS)
    flat = [value for row in _TENSOR_ROWS for value in row]
    for name, data in (("input-0", _TENSOR_ROWS), ("x", flat)):
        tensor = {"name": name, "shape": [3, 3], "datatype": "FP64", "data": data}
        assert _predictions(served.infer("tens", [tensor])) == expected, name
    ints = {"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [2, -3, 1]}
    assert _predictions(served.infer("tens", [ints])) == _tensor_direct(served, [[2, -3, 1]])


def test_an_unnamed_tensor_signature_takes_a_split_frame_with_or_without_names_and_ints(served: Served) -> None:
    expected = _tensor_direct(served, _TENSOR_ROWS)
    for split in ({"data": _TENSOR_ROWS}, {"columns": ["a", "b", "c"], "data": _TENSOR_ROWS}):
        assert _predictions(served.invocations("tens", {"dataframe_split": split})) == expected, split
    only_ints = {"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2, 3]]}}
    assert _predictions(served.invocations("tens", only_ints)) == _tensor_direct(served, [[1, 2, 3]])


def test_an_unnamed_tensor_signature_refuses_a_row_of_another_width_or_not_numbers(served: Served) -> None:
    rows = [[0.1, -1.2, 2.5], [1.0, 0.3, -0.7], [0.0, 0.0, 0.0], [1.0, 2.0]]
    status, body = served.invocations("tens", {"inputs": rows})
    assert 400 <= status < 500 and body["field"] == "inputs[3]", body
    status, body = served.invocations("tens", {"inputs": [[0.1, "x", 2.5]]})
    assert 400 <= status < 500 and body["field"] == "inputs.1", body
    status, body = served.invocations("tens", {"dataframe_split": {"data": [[0.1, 2.5]]}})
    assert 400 <= status < 500 and body["field"] == "dataframe_split.data[0]", body
    tensor = {"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [0.1, 2.5]}
    status, body = served.infer("tens", [tensor])
    assert 400 <= status < 500 and body["field"] == "inputs[0].shape", body
    # 1-D tensors of other names than "0".."2" count by position: their datatypes are checked all the same
    for datatype, values in (("BYTES", ["1", "2", "3"]), ("BOOL", [True, False, True])):
        named = [
            {"name": n, "shape": [1], "datatype": datatype, "data": [v]} for n, v in zip("abc", values, strict=True)
        ]
        status, body = served.infer("tens", named)
        assert 400 <= status < 500 and body["field"] == "inputs[0].datatype", body
