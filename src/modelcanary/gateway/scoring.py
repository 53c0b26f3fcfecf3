"""An MLflow scoring request's body read into columns: JSON (``protocols.mlflow_columns``) or CSV
by its content type.

Over CSV: a ``text/csv`` body (a header row of column names, then one
row a line, as ``pandas.DataFrame.to_csv(index=False)`` writes it) read into columns, each cell
read as its signature column's type, as MLflow's server reads the frame against the schema. An
empty cell (or one pandas reads as missing: NA, NaN, null) is a missing value (None), which
``protocols.validate`` lets into an optional column only, and of the numeric ones a float one.
Without a signature, or for a column it does not name, a cell is read as pandas would guess it:
an integer, a number, else the text."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from typing import Any

from modelcanary.domain.errors import RequestError
from modelcanary.gateway import protocols
from modelcanary.gateway.datatypes import shown
from modelcanary.ports import Column, TensorColumns

FIELD = "csv"  # errors name a column as csv.<name>, the row by its line


def read(
    raw: bytes, content_type: str | None, signature: tuple[Column, ...] | None
) -> tuple[dict[str, list[Any]], str, Any]:
    """The request's columns, the field its errors name them under, and its inference parameters."""
    if is_csv(content_type):
        return csv_columns(raw, signature), FIELD, None
    body = protocols.scoring_body(raw)
    return protocols.mlflow_columns(body, signature), protocols.mlflow_format(body), protocols.mlflow_params(body)


def is_csv(content_type: str | None) -> bool:
    """Whether a scoring body is CSV (``text/csv``) rather than JSON (``application/json``, or no
    type given); 415 naming ``Content-Type`` for any other type, or a charset but UTF-8, as
    MLflow's server answers (it reads Parquet too, which this gateway does not).

    >>> is_csv("text/csv; charset=UTF-8"), is_csv(None), is_csv("application/json")
    (True, False, False)
    """
    if content_type is None:
        return False
    mime, *parameters = (part.strip() for part in content_type.split(";"))
    mime = mime.lower()
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise RequestError(f"{content_type!r}: only UTF-8 is read", field="Content-Type", status=415)
    if mime == "text/csv":
        return True
    if mime in ("application/json", ""):
        return False
    raise RequestError(
        f"{shown(content_type)} is not read here: send application/json or text/csv", field="Content-Type", status=415
    )


def csv_columns(raw: bytes, signature: tuple[Column, ...] | None) -> dict[str, list[Any]]:
    """The columns of a CSV body, each cell read as its column's type."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1]
        raise RequestError(f"not UTF-8 text: byte {exc.start} is {bad!r}", field="body") from None
    try:
        lines = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise RequestError(f"not CSV: {exc}", field="body") from None
    lines = [line for line in lines if line]  # a blank line (the usual last one) holds no row
    if not lines or not lines[0]:
        raise RequestError("a header row of column names is needed, then a row a line", field="body")
    names, rows = lines[0], lines[1:]
    if len(set(names)) != len(names):
        raise RequestError(f"each column is named once in the header: {names}", field=f"{FIELD}.header")
    if not rows:
        raise RequestError("no rows after the header", field="body")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(names):
            raise RequestError(f"line {number} holds {len(row)} values, the header names {len(names)}", field=FIELD)
    types = _types(names, signature)
    return {
        name: [_read(cell, types.get(name), name, number) for number, cell in enumerate(cells, start=2)]
        for name, cells in zip(names, zip(*rows, strict=True), strict=True)
    }


def _types(names: list[str], signature: tuple[Column, ...] | None) -> dict[str, str]:
    """Each named column's signature type; a model of one unnamed tensor takes them by position."""
    if signature is None:
        return {}
    if isinstance(signature, TensorColumns) and not any(column.name in names for column in signature):
        return {name: column.type for name, column in zip(names, signature, strict=False)}
    return {column.name: column.type for column in signature}


def _number(cell: str) -> float:
    value = float(cell)
    if math.isnan(value):  # a spelling of NaN pandas does not read as missing ("NAN"): no number
        raise ValueError(cell)
    return value


def _boolean(cell: str) -> bool:
    lowered = cell.lower()
    if lowered not in ("true", "false"):
        raise ValueError(cell)
    return lowered == "true"


_READERS: dict[str, Callable[[str], Any]] = {
    "double": _number,
    "float": _number,
    "long": int,
    "integer": int,
    "boolean": _boolean,
    "string": str,
}
# what pandas' read_csv, which MLflow's server reads CSV with, takes for a missing value by default
_MISSING = {
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"),
    *("<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
}


def _read(cell: str, kind: str | None, name: str, line: int) -> Any:
    if cell in _MISSING:  # in a string column too ("NA" included), as pandas reads it for MLflow
        return None
    if kind is None:  # no signature type: as pandas guesses
        for guess in (int, float):
            try:
                return guess(cell)
            except ValueError:
                continue
        return cell
    try:
        return _READERS.get(kind, str)(cell)
    except ValueError:
        raise RequestError(f"line {line}: {shown(cell)} is not a {kind} value", field=f"{FIELD}.{name}") from None
