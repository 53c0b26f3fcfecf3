"""The in-process backend loading real registry versions with mlflow.pyfunc."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelcanary.adapters.backends.inprocess import InProcessBackend, PyfuncModel
from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.domain.errors import RegistryError, RequestError
from modelcanary.domain.state import ModelVersion
from modelcanary.ports import Column


@pytest.fixture(scope="module")
def champion(mlflow_registry: Any) -> PyfuncModel:
    registry = MlflowRegistry(mlflow_registry.uri)
    return InProcessBackend().load(registry.resolve("models:/fraud@champion"))


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
    backend = InProcessBackend()
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
    MlflowRegistry(mlflow_registry.uri)  # points MLflow's globals at this registry
    with pytest.raises(RegistryError, match="models:/fraud/99"):
        InProcessBackend().load(ModelVersion(name="fraud", version="99"))


def _broken_copy(tmp_path: Path, mlflow_registry: Any, breaking: str) -> Path:
    """A copy of fraud v1's model directory that MLflow reads but cannot load: its flavor's module
    is not installed, or its serialized estimator does not load (as one from another scikit-learn may not)."""
    import mlflow
    import yaml

    MlflowRegistry(mlflow_registry.uri)  # points MLflow's globals at this registry
    path = Path(mlflow.artifacts.download_artifacts("models:/fraud/1", dst_path=str(tmp_path)))
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
        InProcessBackend().load(ModelVersion(name="fraud", version="1", ref=str(path)))
    cause = caught.value.__cause__
    assert cause is not None and not isinstance(cause, MlflowException)
    assert str(caught.value).startswith(f"loading {path}: {type(cause).__name__}: ")
    if breaking == "flavor":
        assert isinstance(cause, ModuleNotFoundError)
