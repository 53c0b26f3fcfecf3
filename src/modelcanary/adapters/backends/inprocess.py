"""In-process MLflow pyfunc models: the default backend, no network hop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modelcanary.adapters.backends.direct import Direct, finite_matrix, sklearn_method
from modelcanary.adapters.backends.outputs import rows_of
from modelcanary.domain.errors import RegistryError, RequestError
from modelcanary.domain.state import ModelVersion
from modelcanary.ports import Column, TensorColumns, answered_datatype

# the dtypes MLflow's scoring server casts a signature's numeric columns to (``cast_df_types_according_to_schema``)
_FLOAT_DTYPES: dict[str, type[np.floating[Any]]] = {"double": np.float64, "float": np.float32}
_INT_DTYPES: dict[str, type[np.signedinteger[Any]]] = {"long": np.int64, "integer": np.int32}
# the column type a tensor signature's dtype reads as (its values cast as a column of that type is)
_TENSOR_TYPES = {"float64": "double", "float32": "float", "int64": "long", "int32": "integer"}


class PyfuncModel:
    def __init__(self, pyfunc: Any, *, direct: bool = True, name: str = "the model") -> None:
        """``direct=False`` always goes through the generic pyfunc (for comparing the two paths);
        ``name`` (its registry URI) names the model in a ``BackendError`` about its outputs."""
        self._pyfunc = pyfunc
        self.name = name
        schema = pyfunc.metadata.get_input_schema()
        self.columns: tuple[Column, ...] | None = None
        # the dtype of the matrix the pyfunc takes, when its signature is one unnamed tensor (-1, N)
        self._tensor: Any = None
        if schema is not None and schema.has_input_names():
            self.columns = tuple(
                Column(name=spec.name, type=getattr(spec.type, "name", str(spec.type)), required=spec.required)
                for spec in schema.inputs
            )
        elif schema is not None:
            self.columns = _tensor_columns(schema)
            if self.columns is not None:
                self._tensor = schema.inputs[0].type
        # a params schema: the model reads inference parameters (``checked_params``)
        params = pyfunc.metadata.get_params_schema()
        self._param_specs: tuple[Any, ...] = tuple(params.params) if params is not None else ()
        self.takes_params = params is not None
        outputs = pyfunc.metadata.get_output_schema()
        self.output_shape: list[int] | None = None
        self.output_datatype: str | None = None  # as the signature states it; unknown without one
        if outputs is not None and len(outputs.inputs) == 1:
            if outputs.is_tensor_spec():
                self.output_shape = [int(d) for d in outputs.inputs[0].shape]
                self.output_datatype = answered_datatype(outputs.inputs[0].type.kind)
            else:  # one column: a value a row
                self.output_shape = [-1]
                self.output_datatype = answered_datatype(str(getattr(outputs.inputs[0].type, "name", "")))
        # chosen once, at load: None is the generic pyfunc
        self._fast = sklearn_method(pyfunc, self.columns) if direct and self._tensor is None else None

    @property
    def path(self) -> str:
        """How predictions run, chosen at load: ``array`` (the sklearn estimator on a float64 array),
        ``frame`` (the estimator on a DataFrame: it needs the column names) or ``pyfunc`` (MLflow's
        generic path). See ``direct.sklearn_method``."""
        if self._fast is None:
            return "pyfunc"
        return "frame" if self._fast.on_frame else "array"

    def checked_params(self, params: Any) -> dict[str, Any]:
        """A request's inference parameters as MLflow's scoring server hands them to the model: each
        one the params schema names converted to its type (``ParamSpec.validate_param_spec``: 1 for
        a ``double`` is 1.0), each it names and the request leaves out at its default, and any other
        dropped, as MLflow drops them. A value that does not fit is refused naming it
        (``params.NAME``, a 400, as MLflow's server refuses it), and so are params that are not an
        object."""
        from mlflow.exceptions import MlflowException
        from mlflow.types.schema import ParamSpec

        if not isinstance(params, Mapping):
            raise RequestError("must be an object of parameter names and values", field="params")

        checked: dict[str, Any] = {}
        for spec in self._param_specs:
            if spec.name not in params:
                checked[spec.name] = spec.default
                continue
            try:
                checked[spec.name] = ParamSpec.validate_param_spec(params[spec.name], spec)
            except MlflowException as exc:
                raise RequestError(exc.message, field=f"params.{spec.name}") from exc
        return checked

    def predict(self, columns: dict[str, list[Any]], params: Any = None) -> list[Any]:
        """One output per row. ``params``: a request's inference parameters; a model with a params
        schema gets them (``checked_params``) through MLflow's pyfunc, as its scoring server passes
        them, and one without ignores them, as MLflow does."""
        checked = self.checked_params(params) if params is not None and self.takes_params else None
        if self._tensor is not None:
            return self._predict_tensor(columns, checked)
        for column in self.columns or ():
            if column.required and column.name not in columns:
                raise RequestError(
                    f"the input column {column.name!r} is required by the model signature but missing",
                    field="inputs",
                    status=422,
                )
        fast = self._fast if checked is None else None  # the estimator itself would not see them
        if fast is not None:
            matrix = finite_matrix([columns.get(name) for name in fast.columns])
            if matrix is not None:
                return self._predict_sklearn(matrix, fast)
            # a column is not numbers, holds a missing value, or an optional one is missing: the slow
            # path says which, or leaves what the estimator makes of a missing column to the pyfunc
        data, missing = self._typed(columns)
        if fast is not None and all(name in data for name in fast.columns):
            matrix = np.vstack([data[name] for name in fast.columns])
            return self._predict_sklearn(matrix, fast, finite=not missing)
        return self._predict_pyfunc(data, checked)

    def _typed(self, columns: dict[str, list[Any]]) -> tuple[dict[str, Any], bool]:
        """The columns with each numeric one an array of the dtype MLflow's scoring server casts its
        signature type to (``double`` float64, ``float`` float32, ``long`` int64, ``integer``
        int32), and whether a float column holds a missing value (NaN: a null in an optional column).

        JSON has one number type: 3 arrives as an int and 3.0 as a float, and MLflow's schema
        enforcement will not convert either to another width or kind itself (int64 to int32, float64
        to float32 or to int64). Converting each list once, before the frame exists, costs a fraction
        of converting the frame's columns afterwards (measured: 0.1 ms against 3 ms a row).
        """
        data: dict[str, Any] = dict(columns)
        rows = {len(values) for values in columns.values()}
        if len(rows) > 1 or rows == {0}:
            raise RequestError("all inputs must have the same number of rows, at least one", field="inputs", status=422)
        missing = False
        for column in self.columns or ():
            values = data.get(column.name)
            if values is None:
                continue
            if column.type in _FLOAT_DTYPES:
                data[column.name], nan = _float_column(values, column)
                missing = missing or nan
            elif column.type in _INT_DTYPES:
                data[column.name] = _int_column(values, column)
        return data, missing

    def _predict_sklearn(self, matrix: Any, fast: Direct, *, finite: bool = True) -> list[Any]:
        return rows_of(fast.call(matrix, finite=finite), self.name)

    def _predict_tensor(self, columns: dict[str, list[Any]], params: dict[str, Any] | None) -> list[Any]:
        """A model taking one unnamed tensor (-1, N): its N columns (named "0".."N-1", or any N
        names, in order: as MLflow turns a frame into the matrix), each cast as a column of the
        tensor's type, become the (rows, N) matrix of its dtype MLflow's scoring server would hand
        the pyfunc (``np.array(rows, dtype)``)."""
        assert self.columns is not None
        signature = self.columns
        if all(column.name in columns for column in signature):
            given = [(column, columns[column.name]) for column in signature]
        elif len(columns) == len(signature):
            given = [
                (Column(name=name, type=column.type), values)
                for (name, values), column in zip(columns.items(), signature, strict=True)
            ]
        else:
            raise RequestError(
                f"the model takes {len(signature)} inputs by position (one tensor), not {len(columns)}",
                field="inputs",
                status=422,
            )
        if len({len(values) for _, values in given}) != 1 or not given[0][1]:
            raise RequestError("all inputs must have the same number of rows, at least one", field="inputs", status=422)
        arrays = [
            _float_column(values, column)[0] if column.type in _FLOAT_DTYPES else _int_column(values, column)
            for column, values in given
        ]
        matrix = np.ascontiguousarray(np.column_stack(arrays), dtype=self._tensor)
        from mlflow.exceptions import MlflowException

        try:
            output = self._pyfunc.predict(matrix, params=params)
        except MlflowException as exc:
            raise self._refusal(exc.message) from exc
        return rows_of(output, self.name)

    def _predict_pyfunc(self, data: dict[str, Any], params: dict[str, Any] | None) -> list[Any]:
        import pandas as pd
        from mlflow.exceptions import MlflowException

        frame = pd.DataFrame(data)
        try:
            output = self._pyfunc.predict(frame, params=params)
        except MlflowException as exc:  # schema enforcement: the client's input does not fit
            raise self._refusal(exc.message) from exc
        return rows_of(output, self.name)

    def _refusal(self, message: str) -> RequestError:
        """MLflow's refusal of the input, named by the column it names (``inputs.COLUMN``) and without
        the printout of the whole frame its schema enforcement puts in front ("Failed to enforce
        schema of data '...' with schema '...'. Error: ...")."""
        if message.startswith("Failed to enforce schema") and "Error: " in message:
            message = message.rsplit("Error: ", 1)[1]
        for column in self.columns or ():
            if f"column {column.name}." in message or f"column '{column.name}'" in message:
                return RequestError(message, field=f"inputs.{column.name}", status=422)
        return RequestError(message, field="inputs", status=422)


def _float_column(values: list[Any], column: Column) -> tuple[Any, bool]:
    """A ``double`` or ``float`` column's values as float64 or float32, and whether one is missing.
    A null (None) reads as NaN, a missing value: only an optional column may hold one."""
    field = f"inputs.{column.name}"
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RequestError(f"must be numbers ({column.type})", field=field, status=422) from exc
    if array.ndim != 1:
        raise RequestError(f"must be one finite number a row ({column.type})", field=field, status=422)
    finite = np.isfinite(array)
    nan = False
    if not finite.all():
        nan = True
        infinite = np.isinf(array)
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise RequestError(
                f"must be finite numbers ({column.type}), got {values[row]!r} in row {row}", field=field, status=422
            )
        if column.required:
            row = int(np.flatnonzero(~finite)[0])
            raise RequestError(
                f"must be numbers ({column.type}), got {values[row]!r} in row {row}: a missing value (null) "
                "only in an optional column",
                field=field,
                status=422,
            )
    dtype = _FLOAT_DTYPES[column.type]
    if dtype is not np.float64:
        with np.errstate(over="ignore"):
            cast = array.astype(dtype)
        overflow = np.isinf(cast) & finite
        if overflow.any():
            row = int(np.flatnonzero(overflow)[0])
            raise RequestError(
                f"{values[row]!r} in row {row} is out of {column.type}'s range (float32)", field=field, status=422
            )
        array = cast
    return array, nan


def _int_column(values: list[Any], column: Column) -> Any:
    """A ``long`` or ``integer`` column's values as int64 or int32: whole numbers in range; 3.0, as
    Python clients send a whole number, is 3. MLflow cannot hold a missing value in an integer
    column (it refuses NaN there), so neither can this."""
    field = f"inputs.{column.name}"
    dtype = _INT_DTYPES[column.type]
    info = np.iinfo(dtype)
    if not set(map(type, values)) <= {int}:  # floats (3.0) or something else: each looked at
        whole: list[int] = []
        for row, value in enumerate(values):
            if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
                if value is None or (isinstance(value, float) and value != value):
                    message = f"a {column.type} column cannot hold a missing value (null in row {row})"
                else:
                    message = f"must be whole numbers ({column.type}), got {value!r} in row {row}"
                raise RequestError(message, field=field, status=422)
            if isinstance(value, float | np.floating) and not float(value).is_integer():
                raise RequestError(
                    f"must be whole numbers ({column.type}), got {value!r} in row {row}", field=field, status=422
                )
            whole.append(int(value))
        checked: list[Any] = whole
    else:
        checked = values
    low, high = min(checked), max(checked)
    if low < info.min or high > info.max:
        row = next(i for i, value in enumerate(checked) if not info.min <= value <= info.max)
        raise RequestError(
            f"{values[row]!r} in row {row} is out of {column.type}'s range ({info.min}, {info.max})",
            field=field,
            status=422,
        )
    return np.array(checked, dtype=dtype)


def _tensor_columns(schema: Any) -> TensorColumns | None:
    """N columns "0".."N-1" for a signature that is one unnamed tensor of shape (-1, N) and a dtype
    a column type casts to (float64, float32, int64, int32); None for any other unnamed signature
    (several tensors, other shapes or dtypes), which is given to the pyfunc as it comes, as before."""
    if not schema.is_tensor_spec() or len(schema.inputs) != 1:
        return None
    spec = schema.inputs[0]
    shape, kind = tuple(spec.shape), _TENSOR_TYPES.get(getattr(spec.type, "name", ""))
    if kind is None or len(shape) != 2 or shape[0] != -1 or shape[1] < 1:
        return None
    return TensorColumns(Column(name=str(index), type=kind) for index in range(shape[1]))


class InProcessBackend:
    """Loads the versions of the registry at ``registry_uri`` with ``mlflow.pyfunc``, from their
    files found through that URI, never MLflow's global ones; a version with a ``ref`` of its own
    (a local path) from there."""

    def __init__(self, registry_uri: str) -> None:
        self.registry_uri = registry_uri

    def load(self, version: ModelVersion) -> PyfuncModel:
        import mlflow.pyfunc
        from mlflow.exceptions import MlflowException

        try:
            return PyfuncModel(mlflow.pyfunc.load_model(self.model_path(version)), name=version.uri)
        except MlflowException as exc:
            raise RegistryError(f"loading {version.uri}: {exc.message}") from exc
        except Exception as exc:  # the model's own code: a flavor's module missing, a pickle of another version
            raise RegistryError(f"loading {version.uri}: {type(exc).__name__}: {exc}") from exc

    def model_path(self, version: ModelVersion) -> str:
        """Where the version's files are on this machine (``version_files``)."""
        from modelcanary.adapters.registry.mlflow import version_files

        return version_files(self.registry_uri, version) if version.in_registry else version.uri
