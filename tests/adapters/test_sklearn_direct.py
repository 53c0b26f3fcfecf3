"""The sklearn direct path of ``PyfuncModel`` gives the generic pyfunc's outputs, bit for bit."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelcanary.adapters.backends.inprocess import InProcessBackend, PyfuncModel
from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.domain.errors import RequestError


def _pair(pyfunc: Any) -> tuple[PyfuncModel, PyfuncModel]:
    direct, generic = PyfuncModel(pyfunc), PyfuncModel(pyfunc, direct=False)
    assert direct.path != "pyfunc" and generic.path == "pyfunc"
    return direct, generic


def test_each_model_takes_the_fastest_path_that_gives_the_same_outputs(
    registered: dict[str, tuple[PyfuncModel, PyfuncModel]],
    demo: tuple[PyfuncModel, PyfuncModel],
    on_arrays: tuple[PyfuncModel, PyfuncModel],
) -> None:
    # fitted on a DataFrame, but nothing in it needs the names: an unnamed copy takes arrays
    assert registered["1"][0].path == "array"
    # the demo's ColumnTransformer selects columns by name: it keeps its DataFrame
    assert demo[0].path == "frame"
    assert on_arrays[0].path == "array"


def test_the_unnamed_copy_leaves_the_registered_estimator_as_it_was(
    registered: dict[str, tuple[PyfuncModel, PyfuncModel]],
) -> None:
    direct, generic = registered["1"]
    assert hasattr(generic._pyfunc.get_raw_model(), "feature_names_in_")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn warns when an estimator fitted with names gets none
        names = [column.name for column in direct.columns or ()]
        direct.predict(_requests(names, 5, seed=9)[0])


@pytest.fixture(scope="module")
def registered(mlflow_registry: Any) -> dict[str, tuple[PyfuncModel, PyfuncModel]]:
    import mlflow.pyfunc

    registry, backend = MlflowRegistry(mlflow_registry.uri), InProcessBackend(mlflow_registry.uri)
    return {
        version: _pair(mlflow.pyfunc.load_model(backend.model_path(registry.resolve(f"models:/fraud/{version}"))))
        for version in ("1", "2")
    }


def _save(path: Path, model: Any, signature: Any, **kwargs: Any) -> Any:
    import mlflow.pyfunc
    import mlflow.sklearn

    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(model, str(path), signature=signature, pip_requirements=["scikit-learn"], **kwargs)
        return mlflow.pyfunc.load_model(str(path))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[PyfuncModel, PyfuncModel]:
    """The demo's baseline pipeline (a ColumnTransformer selecting by name), its signature
    naming the candidate's extra feature as an optional column the baseline ignores."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    from modelcanary.sim.fraud import BASELINE_FEATURES, train_models

    columns: list[ColSpec | TensorSpec] = [
        *(ColSpec("double", name) for name in BASELINE_FEATURES),
        ColSpec("double", "merchant_risk", required=False),
    ]
    signature = ModelSignature(inputs=Schema(columns), outputs=Schema([TensorSpec(np.dtype(np.float64), (-1, 2))]))
    model = train_models(seed=5, n_train=2_000).baseline
    path = tmp_path_factory.mktemp("demo") / "model"
    return _pair(_save(path, model, signature, pyfunc_predict_fn="predict_proba"))


@pytest.fixture(scope="module")
def on_arrays(tmp_path_factory: pytest.TempPathFactory, mlflow_registry: Any) -> tuple[PyfuncModel, PyfuncModel]:
    """A classifier fitted on a plain array (no feature names), logged with the default ``predict``."""
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(11)
    X = rng.normal(size=(300, 3))
    model = LogisticRegression().fit(X, (X[:, 0] + X[:, 2] > 3).astype(np.int64))
    frame = _frame(mlflow_registry.features, X)
    return _pair(_save(tmp_path_factory.mktemp("arrays") / "model", model, infer_signature(frame, model.predict(X))))


def _frame(names: tuple[str, ...], X: np.ndarray) -> Any:
    import pandas as pd

    return pd.DataFrame(X, columns=list(names))


def _requests(names: list[str], rows: int, *, seed: int) -> list[dict[str, list[Any]]]:
    """Batches of 1, 7, 64 and the rest; every third value a JSON-style int, as clients send them."""
    rng = np.random.default_rng(seed)
    values = np.abs(rng.lognormal(mean=2.0, sigma=1.5, size=(rows, len(names))))
    cells = [[int(v) if (i + j) % 3 == 0 else float(v) for j, v in enumerate(row)] for i, row in enumerate(values)]
    batches, start = [], 0
    for size in (1, 7, 64, rows):
        chunk = cells[start : start + size]
        if not chunk:
            break
        batches.append({name: [row[j] for row in chunk] for j, name in enumerate(names)})
        start += size
    return batches


def test_registered_versions_give_the_pyfuncs_outputs(registered: dict[str, tuple[PyfuncModel, PyfuncModel]]) -> None:
    for direct, generic in registered.values():
        names = [column.name for column in direct.columns or ()]
        for request in _requests(names, 300, seed=1):
            outputs = direct.predict(request)
            assert outputs == generic.predict(request)
            assert len(outputs) == len(request[names[0]]) and all(len(row) == 2 for row in outputs)


def test_extra_inputs_are_ignored_as_the_pyfunc_ignores_them(
    registered: dict[str, tuple[PyfuncModel, PyfuncModel]],
) -> None:
    direct, generic = registered["1"]
    names = [column.name for column in direct.columns or ()]
    request = dict(reversed(_requests(names, 10, seed=2)[2].items()), note=["x"] * 2)
    request["note"] = ["x"] * len(request[names[0]])
    assert direct.predict(request) == generic.predict(request)


def test_the_demo_pipeline_gives_the_pyfuncs_outputs_with_and_without_its_optional_column(
    demo: tuple[PyfuncModel, PyfuncModel],
) -> None:
    direct, generic = demo
    names = [column.name for column in direct.columns or ()]
    for request in _requests(names, 200, seed=3):
        assert direct.predict(request) == generic.predict(request)
        without = {name: values for name, values in request.items() if name != "merchant_risk"}
        assert direct.predict(without) == generic.predict(without)


def test_an_estimator_fitted_on_arrays_gives_the_pyfuncs_labels(on_arrays: tuple[PyfuncModel, PyfuncModel]) -> None:
    direct, generic = on_arrays
    names = [column.name for column in direct.columns or ()]
    seen: set[int] = set()
    for request in _requests(names, 200, seed=4):
        outputs = direct.predict(request)
        assert outputs == generic.predict(request)
        seen |= set(outputs)
    assert seen == {0, 1}


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"age": None}, "age"),  # a required column is missing
        ({"amount": ["ten", 1.0]}, "amount"),  # a string in a double column
        ({"velocity": [[1.0, 2.0], [3.0, 4.0]]}, "velocity"),  # a nested list is not one number a row
        ({"amount": [float("inf"), 1.0]}, "amount"),  # not finite
        ({"amount": [1.0]}, "same number of rows"),
    ],
)
def test_a_bad_input_is_a_422_naming_the_column_on_both_paths(
    registered: dict[str, tuple[PyfuncModel, PyfuncModel]], change: dict[str, Any], names: str
) -> None:
    good: dict[str, Any] = {"amount": [10.0, 20.0], "velocity": [1, 2], "age": [300.0, 5.0]}
    request: dict[str, list[Any]] = {name: values for name, values in (good | change).items() if values is not None}
    for model in registered["1"]:
        with pytest.raises(RequestError) as caught:
            model.predict(request)
        assert caught.value.status == 422 and caught.value.field in ("inputs", f"inputs.{names}")
        assert names in str(caught.value)


def test_finite_values_whose_sum_overflows_take_the_checked_way_to_the_same_outputs(
    registered: dict[str, tuple[PyfuncModel, PyfuncModel]],
) -> None:
    # the direct path reads a finite sum as "all finite"; 1e308 + 1e308 is not, though each is
    request: dict[str, list[Any]] = {"amount": [1e308, 2.0], "velocity": [1e308, 3], "age": [-1e308, 4.0]}
    direct, generic = registered["1"]
    assert direct.predict(request) == generic.predict(request)


def test_a_direct_call_leaves_scikit_learns_assume_finite_as_it_found_it(
    registered: dict[str, tuple[PyfuncModel, PyfuncModel]],
) -> None:
    import sklearn

    direct, _generic = registered["1"]
    good: dict[str, list[Any]] = {"amount": [10.0], "velocity": [1], "age": [300.0]}
    fast = direct._fast
    assert fast is not None
    seen: list[bool] = []

    def failing(_matrix: Any) -> Any:
        seen.append(sklearn.get_config()["assume_finite"])
        raise RuntimeError("the estimator failed")

    for setting in (False, True):
        with sklearn.config_context(assume_finite=setting):
            direct.predict(good)
            assert sklearn.get_config()["assume_finite"] is setting
            direct._fast = type(fast)(failing, fast.columns, on_frame=fast.on_frame)
            try:
                with pytest.raises(RuntimeError, match="the estimator failed"):
                    direct.predict(good)
            finally:
                direct._fast = fast
            # checked finite by the adapter, so scikit-learn was told to assume it, and then told no more
            assert seen.pop() is True and sklearn.get_config()["assume_finite"] is setting
