"""In-process MLflow pyfunc models: the default backend, no network hop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelcanary.domain.errors import RegistryError, RequestError
from modelcanary.domain.state import ModelVersion
from modelcanary.ports import Column

_FLOAT_TYPES = {"double", "float"}
# The methods MLflow's sklearn wrapper (``_SklearnModelWrapper``) hands straight to the estimator:
# ``predict`` by default, the others when the model was logged with ``pyfunc_predict_fn``.
_SKLEARN_PREDICT_FNS = {"predict", "predict_proba", "predict_log_proba", "predict_joint_log_proba"}


def _sklearn_method(pyfunc: Any, columns: tuple[Column, ...] | None) -> tuple[Callable[[Any], Any], bool] | None:
    """The estimator's own method the pyfunc would call, and whether it was fitted on a frame.

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
    return (method, hasattr(estimator, "feature_names_in_")) if callable(method) else None


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
    def direct(self) -> bool:
        """Whether predictions call the sklearn estimator directly (see ``_sklearn_method``)."""
        return self._fast is not None

    def predict(self, columns: dict[str, list[Any]]) -> list[Any]:
        data = self._floats(columns)
        if self._fast is not None and self.columns is not None:
            arrays = [data.get(column.name) for column in self.columns]
            if all(array is not None for array in arrays):
                return self._predict_sklearn(arrays, *self._fast)
            for column, array in zip(self.columns, arrays, strict=True):
                if array is None and column.required:
                    raise RequestError(
                        f"the input column {column.name!r} is required by the model signature but missing",
                        field="inputs",
                        status=422,
                    )
            # an optional column is missing: what the estimator makes of that is the pyfunc's business
        return self._predict_pyfunc(data)

    def _floats(self, columns: dict[str, list[Any]]) -> dict[str, Any]:
        import numpy as np

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
                        f"column {column.name!r} must be numbers ({column.type})", field="inputs", status=422
                    ) from exc
                if array.ndim != 1 or not np.isfinite(array).all():
                    raise RequestError(
                        f"column {column.name!r} must be one finite number a row ({column.type})",
                        field="inputs",
                        status=422,
                    )
                data[column.name] = array
        return data

    def _predict_sklearn(self, arrays: list[Any], method: Callable[[Any], Any], on_frame: bool) -> list[Any]:
        import numpy as np
        import sklearn

        # Stacked as (columns, rows) and transposed, the matrix has the memory layout of the frame
        # the pyfunc would build (pandas keeps a frame's block column-major), so the estimator's
        # arithmetic runs in the same order and the outputs are bit-identical to the slow path's.
        matrix = np.vstack(arrays).T
        if on_frame:
            import pandas as pd

            matrix = pd.DataFrame(matrix, columns=[column.name for column in self.columns or ()], copy=False)
        with sklearn.config_context(assume_finite=True):  # _floats rejected NaN and infinities
            output = method(matrix)
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
