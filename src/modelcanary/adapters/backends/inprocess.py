"""In-process MLflow pyfunc models: the default backend, no network hop."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelcanary.domain.errors import RegistryError, RequestError
from modelcanary.domain.state import ModelVersion
from modelcanary.ports import Column

_FLOAT_TYPES = {"double", "float"}
# The methods MLflow's sklearn wrapper (``_SklearnModelWrapper``) hands straight to the estimator:
# ``predict`` by default, the others when the model was logged with ``pyfunc_predict_fn``.
_SKLEARN_PREDICT_FNS = {"predict", "predict_proba", "predict_log_proba", "predict_joint_log_proba"}


@dataclass(frozen=True)
class _Direct:
    """How the direct path calls the estimator: ``method`` on a float64 matrix of ``columns`` (in
    that order), or on a DataFrame of them when ``on_frame``."""

    method: Callable[[Any], Any]
    columns: tuple[str, ...]
    on_frame: bool


def _sklearn_method(pyfunc: Any, columns: tuple[Column, ...] | None) -> _Direct | None:
    """The estimator's own method the pyfunc would call, and how to call it.

    Only for the sklearn flavor with an all-``double`` column signature: there MLflow's schema
    enforcement does nothing ``PyfuncModel`` does not do itself (float64 columns in signature
    order, extras dropped), so calling the estimator directly gives the same outputs without
    MLflow's checks (measured in docs/backends.md). Anything else keeps the generic pyfunc.
    """
    conf = pyfunc.metadata.flavors.get("python_function", {})
    if conf.get("loader_module") != "mlflow.sklearn" or not columns:
        return None
    if any(column.type != "double" for column in columns):  # MLflow casts "float" to float32, "long" strictly
        return None
    name = conf.get("predict_fn", "predict")
    if name not in _SKLEARN_PREDICT_FNS or not hasattr(pyfunc, "get_raw_model"):
        return None
    try:
        estimator = pyfunc.get_raw_model()
    except NotImplementedError:
        return None
    method = getattr(estimator, name, None)
    if not callable(method):
        return None
    signature = tuple(column.name for column in columns)
    fitted_on = getattr(estimator, "feature_names_in_", None)
    if fitted_on is None:
        return _Direct(method, signature, on_frame=False)
    on_frame = _Direct(method, signature, on_frame=True)
    names = tuple(str(each) for each in fitted_on)
    if not set(names) <= set(signature):
        return on_frame
    unnamed = _without_feature_names(estimator)
    return (
        _Direct(getattr(unnamed, name), names, on_frame=False)
        if _same_outputs(on_frame, unnamed, name, names)
        else on_frame
    )


def _without_feature_names(estimator: Any) -> Any:
    """A deep copy of ``estimator`` that forgets the column names it was fitted with, so that it
    takes a plain array without a warning. scikit-learn checks names on every call, and building
    a DataFrame for it costs more than the model itself on light models (docs/backends.md)."""
    from sklearn.base import BaseEstimator

    copy = deepcopy(estimator)
    seen: set[int] = set()

    def forget(value: Any) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, BaseEstimator):
            vars(value).pop("feature_names_in_", None)
            for each in vars(value).values():
                forget(each)
        elif isinstance(value, list | tuple):
            for each in value:
                forget(each)
        elif isinstance(value, dict):
            for each in value.values():
                forget(each)

    forget(copy)
    return copy


def _same_outputs(on_frame: _Direct, unnamed: Any, method: str, names: tuple[str, ...]) -> bool:
    """Whether the unnamed copy, given an array of ``names``, answers as the estimator does on a
    DataFrame of the signature's columns: bit for bit, without a warning, on probe rows. An
    estimator that needs the names (a ColumnTransformer selecting by name) fails here and keeps
    the DataFrame."""
    import pandas as pd

    rng = np.random.default_rng(0)
    probe = {column: rng.uniform(0.5, 50.0, size=16) for column in on_frame.columns}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            expected = on_frame.method(pd.DataFrame(probe, columns=list(on_frame.columns)))
            got = getattr(unnamed, method)(np.vstack([probe[name] for name in names]).T)
    except Exception:
        return False
    expected, got = np.asarray(expected), np.asarray(got)
    return expected.shape == got.shape and expected.dtype == got.dtype and bool(np.array_equal(expected, got))


class PyfuncModel:
    def __init__(self, pyfunc: Any, *, direct: bool = True) -> None:
        """``direct=False`` always goes through the generic pyfunc (for comparing the two paths)."""
        self._pyfunc = pyfunc
        schema = pyfunc.metadata.get_input_schema()
        self.columns: tuple[Column, ...] | None = None
        if schema is not None and schema.has_input_names():
            self.columns = tuple(
                Column(name=spec.name, type=getattr(spec.type, "name", str(spec.type)), required=spec.required)
                for spec in schema.inputs
            )
        outputs = pyfunc.metadata.get_output_schema()
        self.output_shape: list[int] | None = None
        if outputs is not None and outputs.is_tensor_spec() and len(outputs.inputs) == 1:
            self.output_shape = [int(d) for d in outputs.inputs[0].shape]
        # chosen once, at load: None is the generic pyfunc
        self._fast = _sklearn_method(pyfunc, self.columns) if direct else None

    @property
    def path(self) -> str:
        """How predictions run, chosen at load: ``array`` (the sklearn estimator on a float64 array),
        ``frame`` (the estimator on a DataFrame: it needs the column names) or ``pyfunc`` (MLflow's
        generic path). See ``_sklearn_method``."""
        if self._fast is None:
            return "pyfunc"
        return "frame" if self._fast.on_frame else "array"

    def predict(self, columns: dict[str, list[Any]]) -> list[Any]:
        for column in self.columns or ():
            if column.required and column.name not in columns:
                raise RequestError(
                    f"the input column {column.name!r} is required by the model signature but missing",
                    field="inputs",
                    status=422,
                )
        fast = self._fast
        if fast is not None:
            matrix = _finite_matrix([columns.get(name) for name in fast.columns])
            if matrix is not None:
                return self._predict_sklearn(matrix, fast)
            # a column is not numbers, or an optional one is missing: the slow path says which, or
            # leaves what the estimator makes of a missing column to the pyfunc
        data = self._floats(columns)
        if fast is not None and all(name in data for name in fast.columns):
            return self._predict_sklearn(np.vstack([data[name] for name in fast.columns]), fast)
        return self._predict_pyfunc(data)

    def _floats(self, columns: dict[str, list[Any]]) -> dict[str, Any]:
        # JSON has one number type: 3 arrives as an int, and MLflow will not widen int64 to a
        # double column itself. Converting each list once, before the frame exists, costs a
        # fraction of converting the frame's columns afterwards (measured: 0.1 ms against 3 ms a row).
        data: dict[str, Any] = dict(columns)
        rows = {len(values) for values in columns.values()}
        if len(rows) > 1 or rows == {0}:
            raise RequestError("all inputs must have the same number of rows, at least one", field="inputs", status=422)
        for column in self.columns or ():
            if column.type in _FLOAT_TYPES and column.name in data:
                try:
                    array = np.asarray(data[column.name], dtype=np.float64)
                except (TypeError, ValueError, OverflowError) as exc:
                    raise RequestError(
                        f"must be numbers ({column.type})", field=f"inputs.{column.name}", status=422
                    ) from exc
                if array.ndim != 1 or not np.isfinite(array).all():
                    raise RequestError(
                        f"must be one finite number a row ({column.type})", field=f"inputs.{column.name}", status=422
                    )
                data[column.name] = array
        return data

    @staticmethod
    def _predict_sklearn(matrix: Any, fast: _Direct) -> list[Any]:
        """``matrix`` is (columns, rows): transposed, it has the memory layout of the frame the
        pyfunc would build (pandas keeps a frame's block column-major), so the estimator's
        arithmetic runs in the same order and the outputs are bit-identical to the slow path's."""
        import sklearn

        matrix = matrix.T
        if fast.on_frame:
            import pandas as pd

            matrix = pd.DataFrame(matrix, columns=list(fast.columns), copy=False)
        with sklearn.config_context(assume_finite=True):  # checked finite before
            output = fast.method(matrix)
        return _rows(output)

    def _predict_pyfunc(self, data: dict[str, Any]) -> list[Any]:
        import pandas as pd
        from mlflow.exceptions import MlflowException

        frame = pd.DataFrame(data)
        try:
            output = self._pyfunc.predict(frame)
        except MlflowException as exc:  # schema enforcement: the client's input does not fit
            raise RequestError(exc.message, field="inputs", status=422) from exc
        return _rows(output)


def _finite_matrix(columns: list[Any]) -> Any:
    """The columns as one float64 (columns, rows) array in one conversion, when they all are
    equal-length lists of finite numbers; else None (``_floats`` then names what is wrong)."""
    if any(values is None for values in columns):
        return None
    try:
        matrix = np.array(columns, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.isfinite(matrix).all():
        return None
    return matrix


def _rows(output: Any) -> list[Any]:
    if hasattr(output, "to_numpy"):
        output = output.to_numpy()
    return list(output.tolist()) if hasattr(output, "tolist") else list(output)


class InProcessBackend:
    """Loads registry versions with ``mlflow.pyfunc`` (the registry URI set by ``MlflowRegistry``)."""

    def load(self, version: ModelVersion) -> PyfuncModel:
        import mlflow.pyfunc
        from mlflow.exceptions import MlflowException

        try:
            return PyfuncModel(mlflow.pyfunc.load_model(version.uri))
        except MlflowException as exc:
            raise RegistryError(f"loading {version.uri}: {exc.message}") from exc
        except Exception as exc:  # the model's own code: a flavor's module missing, a pickle of another version
            raise RegistryError(f"loading {version.uri}: {type(exc).__name__}: {exc}") from exc
