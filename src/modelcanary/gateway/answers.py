"""What the gateway answers: a model's outputs as the V2 protocol's one output tensor, and as
MLflow's scoring predictions, each made before the answer's success is recorded (an output a
protocol cannot carry is the model's failure, never a 500 counted as a success); and each row's
score, which the telemetry keeps.

>>> v2_response(model_name="m", model_version="1", request_id=None, outputs=[[0.2, 0.8]], variant="baseline",
...             prediction_ids=["x-0"])["outputs"]
[{'name': 'predict', 'shape': [1, 2], 'datatype': 'FP64', 'data': [0.2, 0.8]}]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from modelcanary.domain.errors import RequestError
from modelcanary.domain.telemetry import Variant
from modelcanary.gateway.protocols import flatten

OUTPUT_NAME = "predict"  # every endpoint has one output tensor, whichever variant answers


def output_tensor(outputs: list[Any]) -> tuple[str, list[int], list[Any]]:
    """The datatype, shape and row-major data of a model's outputs, one per row.

    >>> output_tensor([[0.9, 0.1], [0.2, 0.8]])
    ('FP64', [2, 2], [0.9, 0.1, 0.2, 0.8])
    >>> output_tensor([1, 0, 1]), output_tensor(["cat"])
    (('INT64', [3], [1, 0, 1]), ('BYTES', [1], ['cat']))
    """
    width = len(outputs[0]) if outputs and isinstance(outputs[0], list) else 0
    if width and any(not isinstance(row, list) or len(row) != width for row in outputs):
        raise RequestError(f"the model's rows are not all lists of {width} values", field="outputs", status=500)
    shape = [len(outputs), width] if width else [len(outputs)]
    data = flatten(outputs, len(shape))
    if data is None:
        raise RequestError("the model's rows nest lists deeper than rows of values", field="outputs", status=500)
    kinds = set(map(type, data))  # one pass in C for the usual outputs; subclasses take the long way
    if kinds and kinds <= {int, float}:
        if kinds == {int}:
            return _integers(data), shape, data
        return "FP64", shape, data if int not in kinds or _within_64_bits(data) else [float(v) for v in data]
    if all(isinstance(value, bool) for value in data):
        datatype = "BOOL"
    elif all(isinstance(value, int) and not isinstance(value, bool) for value in data):
        datatype = _integers(data)
    elif all(isinstance(value, int | float) and not isinstance(value, bool) for value in data):
        datatype = "FP64"
        data = data if _within_64_bits(data) else [float(value) for value in data]
    else:
        datatype, data = "BYTES", [value if isinstance(value, str) else str(value) for value in data]
    return (datatype if data else "FP64"), shape, data


def _within_64_bits(data: list[Any]) -> bool:
    """Whether every integer among ``data`` has a 64-bit form (JSON's encoder writes no other)."""
    return bool(min(data) >= -(2**63) and max(data) < 2**64)


def _integers(data: list[int]) -> str:
    """INT64, or UINT64 for whole numbers past INT64's range that UINT64 holds (a model's uint64
    ids); a number no 64-bit type holds is the model's failure, before anything is recorded.

    >>> _integers([1, -2]), _integers([2**63 + 5])
    ('INT64', 'UINT64')
    """
    low, high = min(data), max(data)
    if low >= -(2**63) and high < 2**63:
        return "INT64"
    if low >= 0 and high < 2**64:
        return "UINT64"
    raise RequestError(
        f"the model answered {high if high >= 2**63 else low}, which no 64-bit integer holds",
        field="outputs",
        status=500,
    )


def v2_response(
    *,
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    outputs: list[Any],
    variant: str,
    prediction_ids: Sequence[str],
) -> dict[str, Any]:
    datatype, shape, data = output_tensor(outputs)
    response: dict[str, Any] = {
        "model_name": model_name,
        **({"model_version": model_version} if model_version else {}),
        "outputs": [{"name": OUTPUT_NAME, "shape": shape, "datatype": datatype, "data": data}],
        # comma-separated: a V2 parameter's value is a string, a number or a boolean, not a list
        "parameters": {"variant": variant, "prediction_ids": ",".join(prediction_ids)},
    }
    if request_id is not None:
        response["id"] = request_id
    return response


def json_predictions(_variant: Variant, outputs: list[Any]) -> bytes:
    """MLflow's scoring answer's predictions, encoded (whichever variant answered): an output JSON
    cannot carry (an integer past 64 bits) is the model's failure."""
    try:
        return orjson.dumps(outputs)
    except TypeError as exc:
        raise RequestError(f"JSON cannot carry them: {exc}", field="predictions", status=500) from exc


def score_of(output: Any) -> float | None:
    """The positive-class score of one row's output: a number, or the last of two class probabilities;
    None for none, and for NaN or infinity, which the answer carries as null (a NaN went to the
    telemetry's top score bucket and /metrics' lowest, whose sum it made NaN for good).

    >>> score_of(0.3), score_of([0.8, 0.2]), score_of([1.0, 2.0, 3.0]) is None, score_of(float("nan"))
    (0.3, 0.2, True, None)
    """
    if isinstance(output, list):
        if len(output) == 1 or len(output) == 2:
            output = output[-1]
        else:
            return None
    if isinstance(output, bool) or not isinstance(output, int | float):
        return None
    score = float(output)
    return score if math.isfinite(score) else None
