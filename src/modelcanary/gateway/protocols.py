"""The two wire protocols clients already speak, parsed into columns and formatted back.

Open Inference Protocol (KServe V2) infer requests carry named typed tensors; MLflow's scoring
protocol carries ``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs``. Both become
a dict of equal-length columns; every error names the field that is wrong.

>>> v2_columns({"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 2]}]}, None)
{'a': [1, 2]}
>>> mlflow_columns({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}, None)
{'a': [1], 'b': [2]}
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from modelcanary.domain.errors import RequestError
from modelcanary.gateway.datatypes import (
    FLOAT_TYPES,
    INTEGER_TYPES,
    RANGES,
    V2_TYPES,
    check_values,
    dimensions,
    ragged,
    shown,
)
from modelcanary.ports import Column, TensorColumns

MAX_ROWS = 10_000
_NUMERIC = {"double", "float", "long", "integer"}
_PLAIN: dict[str, type] = {"boolean": bool, "string": str}  # the other column types values are checked for
# which tensor datatypes a signature's column types take (numbers: any numeric datatype)
_TAKES = {"boolean": {"BOOL"}, "string": {"BYTES"}, **{kind: INTEGER_TYPES | FLOAT_TYPES for kind in _NUMERIC}}
# the numbers the sized column types hold, as MLflow casts them (float32, int32, int64): whole numbers
# for the integer ones (3.0 is 3, as Python clients send a whole number)
_COLUMN_RANGES: dict[str, tuple[float, float]] = {
    "float": RANGES["FP32"],
    "integer": RANGES["INT32"],
    "long": RANGES["INT64"],
}
_WHOLE = {"integer", "long"}
_MISSING_OK = {"double", "float"}  # numeric columns that hold a missing value (NaN); integer ones cannot


def _holds(datatype: str, kind: str) -> bool:
    """Whether every value a tensor of ``datatype`` holds fits a column of ``kind`` as it is."""
    low, high = RANGES.get(datatype, (float("-inf"), float("inf")))
    wanted = _COLUMN_RANGES[kind]
    return (kind not in _WHOLE or datatype in INTEGER_TYPES) and wanted[0] <= low and high <= wanted[1]


# (tensor datatype, column type) pairs whose values are each checked to fit the column (``_check_fits``)
_CHECK_FITS = {(d, kind) for d in INTEGER_TYPES | FLOAT_TYPES for kind in _COLUMN_RANGES if not _holds(d, kind)}


def json_body(raw: bytes | memoryview) -> Any:
    """A request body's JSON, or a 400 that says so."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"not valid JSON: {exc}", field="body") from exc


def scoring_body(raw: bytes) -> Any:
    """An MLflow scoring request's JSON, read as MLflow's server reads it: with Python's ``json``,
    which takes the ``NaN`` and ``Infinity`` that ``json.dumps`` writes for a missing or infinite
    number (a pandas frame's records, say), where JSON has none. Only a body orjson refuses is read
    again, so the usual one costs nothing more. A NaN reaches the model's column checks as a
    missing value: an optional ``double`` or ``float`` column takes it, a required one refuses it,
    naming the column.

    >>> scoring_body(b'{"dataframe_records": [{"a": NaN}]}')["dataframe_records"][0]["a"]
    nan
    """
    try:
        return json_body(raw)
    except RequestError as refused:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than orjson reads
            raise refused from None
    # ``json`` takes a lone surrogate escape (orjson refuses it): text no model, sticky key or answer
    # can encode (a sticky key's hash raised UnicodeEncodeError, a 500)
    if _SURROGATE_ESCAPE.search(raw) and not _encodable(body):
        raise RequestError("holds a lone surrogate escape (\\ud800-\\udfff), which is no character", field="body")
    return body


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _encodable(body: Any) -> bool:
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def flatten(data: Any, rank: int) -> list[Any] | None:
    """``data`` in row-major order: sent flat, or nested as lists of lists up to ``rank`` deep (its
    shape's); None if nested deeper. A loop, not recursion: a body of a thousand nested lists
    would pass Python's recursion limit.

    >>> flatten([[1, 2], [3, 4]], 2), flatten([1, 2], 2), flatten([[1], [2]], 1)
    ([1, 2, 3, 4], [1, 2], None)
    """
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = data
    depth = 1
    while flat and isinstance(flat[0], list):  # nested: one level a pass
        if depth == rank:
            return None
        flat = [item for row in flat for item in (row if isinstance(row, list) else (row,))]
        depth += 1
    return flat


def _require(condition: bool, message: str, field: str) -> None:
    if not condition:
        raise RequestError(message, field=field)


def _check_fits(values: list[Any], kind: str, field: str) -> None:
    """Every number fits a column of ``kind`` (``float``, ``integer``, ``long``) as MLflow casts it:
    within float32's range, or whole and within int32's or int64's; nulls are checked elsewhere.

    >>> _check_fits([3, 4.0, None], "long", "inputs.n")
    >>> _check_fits([2.5], "long", "dataframe_records.n")
    Traceback (most recent call last):
    ...
    modelcanary.domain.errors.RequestError: dataframe_records.n: a long column takes whole numbers, got 2.5 in row 0
    """
    low, high = _COLUMN_RANGES[kind]
    if values and set(map(type, values)) <= {int} and low <= min(values) and max(values) <= high:
        return  # the common case, in C
    whole = kind in _WHOLE
    for row, value in enumerate(values):
        if value is None:
            continue
        if whole and isinstance(value, float) and not value.is_integer():
            raise RequestError(f"a {kind} column takes whole numbers, got {shown(value)} in row {row}", field=field)
        if not low <= value <= high:
            raise RequestError(f"{shown(value)} in row {row} is out of {kind}'s range ({low:g}, {high:g})", field=field)


def _check_parameters(holder: dict[str, Any], where: str) -> None:
    parameters = holder.get("parameters")
    _require(parameters is None or isinstance(parameters, dict), "must be an object", f"{where}parameters")


def v2_columns(body: Any, signature: tuple[Column, ...] | None) -> dict[str, list[Any]]:
    """Columns of a V2 infer request: one 1-D tensor per column, or one 2-D tensor in signature order.
    On the path of every request: each message is built only when its check fails."""
    _require(isinstance(body, dict), "an infer request is a JSON object", "body")
    inputs = body.get("inputs")
    _require(isinstance(inputs, list) and len(inputs) > 0, "must be a non-empty list of tensors", "inputs")
    _check_parameters(body, "")
    known = _signature(signature)
    columns: dict[str, list[Any]] = {}
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise RequestError("a tensor is an object with name, shape, datatype, data", field=f"inputs[{index}]")
        name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
        if not isinstance(name, str) or name == "":
            raise RequestError("a non-empty string is required", field=f"inputs[{index}].name")
        if not (isinstance(shape, list) and 1 <= len(shape) <= 2 and dimensions(shape)):
            raise RequestError("must be [rows] or [rows, columns]", field=f"inputs[{index}].shape")
        if datatype not in V2_TYPES:
            raise RequestError(f"must be one of {', '.join(sorted(V2_TYPES))}", field=f"inputs[{index}].datatype")
        if name in columns:
            raise RequestError("a tensor of this name came earlier", field=f"inputs[{index}].name")
        if "parameters" in tensor:
            _check_parameters(tensor, f"inputs[{index}].")
        if "data" not in tensor:
            raise RequestError("the tensor's values are missing", field=f"inputs[{index}].data")
        raw = tensor["data"]
        data = flatten(raw, len(shape))
        if data is None:
            raise RequestError(f"nests lists deeper than its shape {shape}", field=f"inputs[{index}].data")
        if (
            len(shape) == 2
            and isinstance(raw, list)
            and data is not raw
            and (len(raw) != shape[0] or ragged(raw, shape[1]))
        ):
            raise RequestError(
                f"nested, it must be {shape[0]} lists of {shape[1]} values, as its shape {shape}",
                field=f"inputs[{index}].data",
            )
        expected = shape[0] if len(shape) == 1 else shape[0] * shape[1]
        if len(data) != expected:
            raise RequestError(
                f"holds {len(data)} values but shape {shape} needs {expected}", field=f"inputs[{index}].data"
            )
        check_values(data, datatype, index)
        if len(shape) == 2 and shape[1] != 1:
            if len(inputs) != 1:
                raise RequestError("a 2-D tensor must be the only input", field=f"inputs[{index}].shape")
            if known is None or len(known.signature) != shape[1]:
                inputs_known = len(signature) if signature else "unknown"
                raise RequestError(
                    f"{shape[1]} columns do not match the model's {inputs_known} inputs",
                    field=f"inputs[{index}].shape",
                )
            names, fits = _matrix_checks(known, datatype, index)
            width = shape[1]
            split = {name: data[offset::width] for offset, name in enumerate(names)}
            for column in fits:
                _check_fits(split[column.name], column.type, f"inputs[{index}].data")
            return split
        # an unnamed tensor's columns are all of its type, and take tensors of any name by position
        wanted = known.types.get(name, known.tensor_type) if known is not None else None
        if wanted is not None:
            _check_datatype(name, wanted, datatype, index)
            if (datatype, wanted) in _CHECK_FITS:
                _check_fits(data, wanted, f"inputs[{index}].data")
        columns[name] = data
    return columns


class _Signature:
    """What ``v2_columns`` reads of a signature on every request, worked out once: each column's
    type by name (and an unnamed tensor's, whose columns take tensors of any name by position),
    and by the datatype of a 2-D tensor, the columns' names in order and the columns whose values
    must be checked to fit (``_matrix_checks``). Built per request, these cost more than the rest
    of parsing a tensor."""

    __slots__ = ("matrices", "signature", "tensor_type", "types")

    def __init__(self, signature: tuple[Column, ...]) -> None:
        self.signature = signature
        self.types = {column.name: column.type for column in signature}
        self.tensor_type = signature[0].type if isinstance(signature, TensorColumns) and signature else None
        self.matrices: dict[str, tuple[tuple[str, ...], tuple[Column, ...]]] = {}


# By the signature's id, each holding its signature, so that an id reused by another object is
# told apart; a few per model loaded.
_SIGNATURES: dict[int, _Signature] = {}
_SIGNATURES_KEPT = 256


def _signature(signature: tuple[Column, ...] | None) -> _Signature | None:
    if signature is None:
        return None
    known = _SIGNATURES.get(id(signature))
    if known is None or known.signature is not signature:
        if len(_SIGNATURES) >= _SIGNATURES_KEPT:
            _SIGNATURES.clear()
        known = _SIGNATURES[id(signature)] = _Signature(signature)
    return known


def _matrix_checks(known: _Signature, datatype: str, index: int) -> tuple[tuple[str, ...], tuple[Column, ...]]:
    """A 2-D tensor of ``datatype`` for every column: each column must take that datatype (else the
    400 names the tensor's datatype); the columns' names, and those whose values must be checked
    to fit. Worked out once per signature and datatype."""
    found = known.matrices.get(datatype)
    if found is None:
        for column in known.signature:  # one datatype for every column: each must take it
            _check_datatype(column.name, column.type, datatype, index)
        fits = tuple(column for column in known.signature if (datatype, column.type) in _CHECK_FITS)
        found = known.matrices[datatype] = (tuple(column.name for column in known.signature), fits)
    return found


def _check_datatype(name: str, wanted: str, datatype: str, index: int) -> None:
    takes = _TAKES.get(wanted)
    if takes is not None and datatype not in takes:
        kind = "numbers" if wanted in _NUMERIC else ", ".join(sorted(takes))
        raise RequestError(
            f"the model takes {kind} ({wanted}) for {name!r}, not {datatype}", field=f"inputs[{index}].datatype"
        )


MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def mlflow_format(body: Any) -> str:
    """Which of the four input formats a scoring request uses ("body" when none or several)."""
    found = [key for key in MLFLOW_FORMATS if key in body] if isinstance(body, dict) else []
    return found[0] if len(found) == 1 else "body"


def mlflow_params(body: dict[str, Any]) -> Any:
    """A scoring request's inference parameters (``params``) as it sent them, None when it sends
    none. What is not an object is refused by a model that reads params, as MLflow's server
    refuses it, and ignored by one that does not, as MLflow ignores it.

    >>> mlflow_params({"inputs": [1], "params": {"threshold": 0.9}}), mlflow_params({"inputs": [1], "params": {}})
    ({'threshold': 0.9}, None)
    """
    params = body.get("params")
    return None if params is None or params == {} else params


def mlflow_columns(body: Any, signature: tuple[Column, ...] | None) -> dict[str, list[Any]]:
    """Columns of an MLflow scoring request, in any of its four input formats."""
    _require(isinstance(body, dict), "a scoring request is a JSON object", "body")
    key = mlflow_format(body)
    _require(key != "body", "give exactly one of dataframe_split, dataframe_records, instances, inputs", "body")
    payload = body[key]
    if key == "dataframe_split":
        _require(isinstance(payload, dict), "must be an object with columns and data", key)
        names, rows = payload.get("columns"), payload.get("data")
        if names is None and isinstance(signature, TensorColumns):  # unnamed, as MLflow takes it: by position
            names = [column.name for column in signature]
        elif isinstance(names, list):  # pandas' to_json(orient="split") writes a frame's default labels as 0, 1, ...
            names = [str(name) if type(name) is int else name for name in names]
        _require(
            isinstance(names, list) and all(isinstance(n, str) for n in names), "a list of names", f"{key}.columns"
        )
        if len(set(names)) != len(names):  # a column named twice would keep only its last values
            twice = sorted(name for name, count in Counter(names).items() if count > 1)
            raise RequestError(f"each column is named once; named more than once: {twice}", field=f"{key}.columns")
        _require(isinstance(rows, list), "a list of rows", f"{key}.data")
        if len(names) == 1 and not any(isinstance(row, list) for row in rows):
            return {names[0]: list(rows)}  # one column's values, unwrapped, as MLflow's frame reads them
        return _from_rows(rows, names, f"{key}.data")
    if isinstance(payload, dict):  # {"inputs": {"a": [...], "b": [...]}}; a scalar is repeated, as MLflow does
        lengths = {len(value) for value in payload.values() if isinstance(value, list)}
        _require(len(lengths) <= 1, "all columns must have the same length", key)
        rows = next(iter(lengths), 1)
        return {str(name): value if isinstance(value, list) else [value] * rows for name, value in payload.items()}
    _require(isinstance(payload, list) and len(payload) > 0, "must be a non-empty list", key)
    if all(isinstance(row, dict) for row in payload):
        # a field some records leave out is a missing value there (None), as in MLflow's frame:
        # ``validate`` lets it into an optional float column only, naming the column
        names = dict.fromkeys(payload[0])
        for row in payload[1:]:
            if row.keys() != names.keys():
                names.update(dict.fromkeys(row))
        return {name: [row.get(name) for row in payload] for name in names}
    mixed = [isinstance(row, dict) for row in payload]
    if any(mixed):  # some records, some not: name the first that differs from the first row
        where = mixed.index(not mixed[0])
        raise RequestError("give every row as a record or none: records and rows are mixed", field=f"{key}[{where}]")
    _require(signature is not None, "rows without names need a model signature to name the columns", key)
    assert signature is not None
    if len(signature) == 1 and not any(isinstance(row, list | dict) for row in payload):
        return {signature[0].name: list(payload)}  # a one-input model: {"instances": [1.5, 2.0]}
    return _from_rows(payload, [column.name for column in signature], key)


def _from_rows(rows: Sequence[Any], names: Sequence[str], field: str) -> dict[str, list[Any]]:
    for index, row in enumerate(rows):
        _require(
            isinstance(row, list) and len(row) == len(names), f"each row needs {len(names)} values", f"{field}[{index}]"
        )
    return {name: [row[offset] for row in rows] for offset, name in enumerate(names)}


def validate(
    columns: dict[str, list[Any]],
    signature: tuple[Column, ...] | None,
    *,
    prefix: str,
    max_rows: int = MAX_ROWS,
    typed: bool = False,
) -> int:
    """Check columns against the model's signature and the row bound; the number of rows.
    ``typed``: each value's type was checked already (``v2_columns`` does, by tensor datatype)."""
    _require(bool(columns), "no inputs were given", prefix)
    lengths = set(map(len, columns.values()))
    _require(len(lengths) == 1, "all inputs must have the same number of rows", prefix)
    rows = lengths.pop()
    _require(0 < rows <= max_rows, f"a request holds 1 to {max_rows} rows, not {rows}", prefix)
    if typed and (signature is None or all(column.name in columns for column in signature)):
        return rows  # no input missing, and every value checked by the parser: nothing left to check
    for column, values in _by_signature(columns, signature, prefix):
        if values is None:
            _require(not column.required, f"the model needs input {column.name!r}", prefix)
            continue
        if typed:
            continue
        if column.type in _NUMERIC:
            # null only where the column is optional (a missing value), and only a float one can hold it
            missing_ok = not column.required and column.type in _MISSING_OK
            for row, value in enumerate(values):
                if (isinstance(value, int | float) and not isinstance(value, bool)) or (value is None and missing_ok):
                    continue
                if value is None:
                    why = "the model needs it" if column.required else f"a {column.type} column cannot hold one"
                    message = f"a missing value (null) in row {row}: {why}"
                else:
                    message = f"must be numbers ({column.type}), got {shown(value)} in row {row}"
                raise RequestError(message, field=f"{prefix}.{column.name}")
            if column.type in _COLUMN_RANGES:
                _check_fits(values, column.type, f"{prefix}.{column.name}")
        elif column.type in _PLAIN:  # null only where the column is optional (a missing value)
            kinds = (_PLAIN[column.type],) if column.required else (_PLAIN[column.type], type(None))
            for row, value in enumerate(values):
                _require(
                    isinstance(value, kinds),
                    f"must be {column.type} values, got {shown(value)} in row {row}",
                    f"{prefix}.{column.name}",
                )
    return rows


def _by_signature(
    columns: dict[str, list[Any]], signature: tuple[Column, ...] | None, prefix: str
) -> list[tuple[Column, list[Any] | None]]:
    """Each signature column with the values given for it (None when missing): by name, or for a
    model taking one unnamed tensor (``TensorColumns``) given columns of other names, by position
    (as MLflow turns a frame into the matrix), each named as given.

    >>> signature = TensorColumns(Column(name=str(i), type="double") for i in range(2))
    >>> [(column.name, values) for column, values in _by_signature({"a": [1], "b": [2]}, signature, "inputs")]
    [('a', [1]), ('b', [2])]
    """
    if not isinstance(signature, TensorColumns) or all(column.name in columns for column in signature):
        return [(column, columns.get(column.name)) for column in signature or ()]
    _require(
        len(columns) == len(signature),
        f"the model takes {len(signature)} inputs by position (one tensor), not {len(columns)}",
        prefix,
    )
    return [
        (Column(name=name, type=column.type, required=column.required), values)
        for (name, values), column in zip(columns.items(), signature, strict=True)
    ]


def in_request_terms(exc: RequestError, prefix: str, params: str = "params") -> RequestError:
    """A model's refusal named in the request's own terms: a model adapter names what it refuses
    ``inputs`` or ``inputs.COLUMN``, which an MLflow request in another format does not have, and
    an inference parameter ``params.NAME``, which a V2 request sends in its ``parameters``.

    >>> str(in_request_terms(RequestError("must be numbers", field="inputs.n"), "dataframe_records"))
    'dataframe_records.n: must be numbers'
    >>> in_request_terms(RequestError("not a double", field="params.k"), "inputs", "parameters").field
    'parameters.k'
    """
    field = exc.field
    for given, wanted in (("inputs", prefix), ("params", params)):
        if given != wanted and field is not None and (field == given or field.startswith(f"{given}.")):
            message = str(exc).removeprefix(f"{field}: ")
            return type(exc)(message, field=wanted + field.removeprefix(given), status=exc.status)
    return exc
