"""Bodies and states a review found answered with a 500 or a wrong answer, each over loopback
against the session's real MLflow models (2026-12-03)."""

from __future__ import annotations

from typing import Any

import pytest

from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.domain.state import ModelVersion, Route
from modelcanary.domain.traffic import StickyKey
from modelcanary.gateway.app import Gateway
from modelcanary.gateway.serving import StaticRoutes

DEEP = "[" * 1000 + "1" + "]" * 1000  # within orjson's 1,024 levels


@pytest.fixture(scope="module")
def gateway(serve_module: Any, pyfunc_backend: Any, mlflow_registry: Any) -> Any:
    registry = MlflowRegistry(mlflow_registry.uri)
    baseline, candidate = registry.resolve("models:/fraud@champion"), registry.resolve("models:/fraud@challenger")
    routes = StaticRoutes(
        {
            "fraud": Route(endpoint="fraud", baseline=baseline),
            "sticky": Route(
                endpoint="sticky",
                baseline=baseline,
                candidate=candidate,
                weight=50.0,
                rollout_id="r-sticky",
                sticky=StickyKey(field="user_id"),
            ),
        }
    )
    return serve_module.start(Gateway(routes=routes, backend=pyfunc_backend, telemetry=None, source="gw-hostile"))


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/endpoints/fraud/invocations",
            '{"dataframe_records": [{"amount": DEEP, "velocity": 1.0, "age": 2.0}]}'.replace("DEEP", DEEP),
            "dataframe_records.amount",
        ),
        (
            "/v2/models/fraud/infer",
            '{"inputs": [{"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.0, DEEP]}]}'.replace(
                "DEEP", DEEP
            ),
            "inputs[0].data",
        ),
    ],
    ids=["mlflow", "v2"],
)
def test_a_value_nested_a_thousand_deep_is_a_400_quoted_short(gateway: Any, path: str, body: str, field: str) -> None:
    """The error quoted the value by ``repr``, which raised RecursionError: a 500."""
    with gateway.client() as http:
        answer = http.post(path, content=body)
    assert answer.status_code == 400 and answer.json()["field"] == field
    assert "[[[...]]]" in answer.json()["error"] and len(answer.text) < 500


def test_a_lone_surrogate_in_a_sticky_key_field_is_a_400(gateway: Any) -> None:
    """Python's ``json`` (which reads MLflow's NaN) took the escape orjson refuses, and the sticky
    key's hash could not encode it: a 500."""
    body = '{"dataframe_records": [{"user_id": "\\ud800", "amount": 1.0, "velocity": 1.0, "age": 2.0}]}'
    with gateway.client() as http:
        answer = http.post("/v1/endpoints/sticky/invocations", content=body)
        paired = http.post("/v1/endpoints/sticky/invocations", content=body.replace("\\ud800", "\\ud83d\\ude00"))
    assert (answer.status_code, answer.json()["field"]) == (400, "body") and "lone surrogate" in answer.json()["error"]
    assert paired.status_code == 200  # an escaped pair is a character


def test_the_model_version_answered_is_one_the_metadata_lists_and_a_path_takes(
    gateway: Any, mlflow_registry: Any
) -> None:
    row = mlflow_registry.rows[0]
    body = {"inputs": [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in row.items()]}
    with gateway.client() as http:
        versions = http.get("/v2/models/fraud").json()["versions"]
        answered = http.post("/v2/models/fraud/versions/1/infer", json=body).json()["model_version"]
        again = http.post(f"/v2/models/fraud/versions/{answered}/infer", json=body)
    assert answered in versions and again.status_code == 200


class RegistryDown:
    def load(self, version: ModelVersion) -> Any:
        raise ConnectionError("registry at http://mlflow:5000 is unreachable")


def test_an_endpoint_whose_models_did_not_load_is_503_with_why_not_404(serve: Any) -> None:
    """A 404 ("no endpoint") told a client that retries on 503 not to."""
    routes = StaticRoutes({"fraud": Route(endpoint="fraud", baseline=ModelVersion(name="fraud", version="1"))})
    running = serve.start(Gateway(routes=routes, backend=RegistryDown(), telemetry=None, source="gw-down"))
    with running.client() as http:
        assert http.get("/v2/health/ready").json()["unavailable"] == {
            "fraud": "ConnectionError: registry at http://mlflow:5000 is unreachable"
        }
        answer = http.post("/v1/endpoints/fraud/invocations", json={"inputs": [[1.0, 2.0, 3.0]]})
        infer = http.post("/v2/models/fraud/infer", json={"inputs": []})
    assert answer.status_code == 503 and "is unreachable" in answer.json()["error"]
    assert answer.json()["field"] == "endpoint"
    assert infer.status_code == 503


def test_a_path_or_method_without_a_route_is_answered_in_json(gateway: Any) -> None:
    """Starlette answered these in plain text; every other gateway error is JSON."""
    with gateway.client() as http:
        missing = http.get("/v2/nope")
        wrong = http.post("/v2/models/fraud")
    assert (missing.status_code, missing.json()["field"]) == (404, "path")
    assert (wrong.status_code, wrong.json()["field"]) == (405, "method")
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}  # Starlette's order varies
