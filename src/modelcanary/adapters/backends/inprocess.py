"""In-process MLflow pyfunc models: the default backend, no network hop."""

from __future__ import annotations

from typing import Any

from modelcanary.domain.errors import RegistryError, RequestError
from modelcanary.domain.state import ModelVersion
from modelcanary.ports import Column

_FLOAT_TYPES = {"double", "float"}


class PyfuncModel:
    def __init__(self, pyfunc: Any) -> None:
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

    def predict(self, columns: dict[str, list[Any]]) -> list[Any]:
        import numpy as np
        import pandas as pd
        from mlflow.exceptions import MlflowException

        # JSON has one number type: 3 arrives as an int, and MLflow will not widen int64 to a
        # double column itself. Converting each list once, before the frame exists, costs a
        # fraction of converting the frame's columns afterwards (measured: 0.1 ms against 3 ms a row).
        data: dict[str, Any] = dict(columns)
        for column in self.columns or ():
            if column.type in _FLOAT_TYPES and column.name in data:
                try:
                    data[column.name] = np.asarray(data[column.name], dtype=np.float64)
                except (TypeError, ValueError) as exc:
                    raise RequestError(
                        f"column {column.name!r} must be numbers ({column.type})", field="inputs", status=422
                    ) from exc
        frame = pd.DataFrame(data)
        try:
            output = self._pyfunc.predict(frame)
        except MlflowException as exc:  # schema enforcement: the client's input does not fit
            raise RequestError(exc.message, field="inputs", status=422) from exc
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
