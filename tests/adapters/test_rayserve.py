"""A model served by Ray Serve, for real: a local Ray (one CPU) runs a deployment wrapping the same
MLflow model; the backend loads it by ``ray://APP/DEPLOYMENT`` and predicts through its handle."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

if os.environ.get("MODELCANARY_REQUIRE_RAY"):  # CI, in the extra's venv: missing is a failure
    import ray
    from ray import serve
else:
    ray = pytest.importorskip(
        "ray", reason="Ray Serve is the optional extra modelcanary[ray]: pip install 'modelcanary[ray]'"
    )
    serve = pytest.importorskip("ray.serve", reason="Ray Serve is the optional extra modelcanary[ray]")

from modelcanary.adapters.backends.rayserve import RayServeBackend
from modelcanary.domain.errors import BackendError
from modelcanary.domain.state import ModelVersion, remote_version

pytestmark = pytest.mark.slow
APP = "fraud-app"


@pytest.fixture(scope="module")
def ray_app(mlflow_registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``ray://fraud-app/Fraud``: fraud v2 in a Serve deployment on a local one-CPU Ray."""
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    registry_uri = mlflow_registry.uri

    @serve.deployment(ray_actor_options={"num_cpus": 0.5})
    class Fraud:
        def __init__(self) -> None:
            import mlflow

            from modelcanary.adapters.backends.inprocess import PyfuncModel

            mlflow.set_registry_uri(registry_uri)
            self.model = PyfuncModel(mlflow.pyfunc.load_model("models:/fraud/2"))

        def __call__(self, columns: dict[str, list[Any]]) -> list[Any]:
            if "boom" in columns:
                raise ValueError("the deployment refuses boom")
            return self.model.predict(columns)

    try:
        serve.start(proxy_location="Disabled")
        # @serve.deployment makes Fraud a Deployment with .bind; mypy keeps a decorated class its own type
        serve.run(Fraud.bind(), name=APP, route_prefix=None)  # type: ignore[attr-defined]
        yield f"ray://{APP}/Fraud"
    finally:
        serve.shutdown()
        ray.shutdown()


def _columns(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    return {name: [row[name] for row in rows] for name in rows[0]}


def test_a_deployment_predicts_as_the_model_does(ray_app: str, pyfunc_backend: Any, mlflow_registry: Any) -> None:
    version = remote_version(ray_app)
    assert version is not None and version.name == "Fraud"
    model = RayServeBackend().load(version)
    columns = _columns(mlflow_registry.rows[:4])
    expected = pyfunc_backend.load(ModelVersion(name="fraud", version="2")).predict(columns)
    assert model.predict(columns) == expected

    async def concurrently() -> list[Any]:
        return list(await asyncio.gather(*(model.apredict(columns) for _ in range(10))))

    assert asyncio.run(concurrently()) == [expected] * 10


def test_failures_are_backend_errors_naming_the_ref(ray_app: str) -> None:
    version = remote_version(ray_app)
    assert version is not None
    model = RayServeBackend(timeout_s=30).load(version)
    with pytest.raises(BackendError) as caught:
        model.predict({"boom": [1]})
    assert str(caught.value) == "ray://fraud-app/Fraud: ValueError: the deployment refuses boom"
    with pytest.raises(BackendError, match="ray://fraud-app/Nope"):
        RayServeBackend().load(ModelVersion(name="Nope", version="", ref="ray://fraud-app/Nope"))
