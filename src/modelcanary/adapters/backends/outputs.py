"""A model's outputs as the gateway answers them: one plain JSON value per row (numbers, strings,
booleans, lists of them), whatever the model returned (a numpy array, a DataFrame, a list of numpy
scalars, a dict of columns); or a ``BackendError`` naming the model, which the gateway counts as
the model's failure. Shared by the in-process and Ray Serve backends.

>>> import numpy as np
>>> rows_of([np.int64(1), np.float32(0.5)], "m"), rows_of({"score": [0.25, 0.75]}, "m")
([1, 0.5], [0.25, 0.75])
>>> rows_of(object(), "models:/m/1")
Traceback (most recent call last):
modelcanary.domain.errors.BackendError: models:/m/1 answered object, not one output per row
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelcanary.domain.errors import BackendError

# numpy dtype kinds whose ``tolist()`` is plain JSON data: bool, ints, floats, str
_PLAIN_KINDS = frozenset("biufU")
_JSON_SCALARS = frozenset({bool, int, float, str, type(None)})


class _NotPlain(Exception):
    """A value JSON cannot carry (``_plain``)."""


def rows_of(output: Any, model: str) -> list[Any]:
    """A model's outputs as one plain JSON value per row: numbers, strings, booleans, lists of them.
    The common case, a numeric array from ``predict`` or ``predict_proba``, is one ``tolist()``.
    A ``BackendError`` naming ``model`` when the outputs are not rows of JSON data, so the gateway
    counts it a model failure (a candidate's: the baseline answers; a baseline's: a 502)."""
    if isinstance(output, np.ndarray) and output.ndim and output.dtype.kind in _PLAIN_KINDS:
        return output.tolist()  # type: ignore[no-any-return]
    if hasattr(output, "to_numpy"):  # a pandas DataFrame or Series
        output = output.to_numpy()
        if output.ndim and output.dtype.kind in _PLAIN_KINDS:
            return output.tolist()  # type: ignore[no-any-return]
    if isinstance(output, dict):
        output = _dict_rows(output, model)
    elif isinstance(output, np.ndarray):
        if output.ndim == 0:
            raise BackendError(f"{model} answered one {output.dtype} value, not one output per row")
        output = output.tolist()
    elif isinstance(output, str | bytes) or not hasattr(output, "__iter__"):
        raise BackendError(f"{model} answered {type(output).__name__}, not one output per row")
    rows = output if isinstance(output, list) else list(output)
    if set(map(type, rows)) <= _JSON_SCALARS:  # a list of plain values: one pass in C
        return rows
    try:
        return [_plain(row) for row in rows]
    except (_NotPlain, RecursionError) as exc:
        raise BackendError(f"{model} answered outputs JSON cannot carry: {exc}") from exc


def _plain(value: Any) -> Any:
    """``value`` as plain JSON data: numpy scalars as Python numbers (``item()``), arrays and tuples
    as lists; ``_NotPlain`` naming what is not."""
    if type(value) in _JSON_SCALARS:
        return value
    if isinstance(value, np.generic):
        item = value.item()
        if type(item) in _JSON_SCALARS:
            return item
    elif isinstance(value, np.ndarray):
        return [_plain(each) for each in value.tolist()]
    elif isinstance(value, list | tuple):
        return [_plain(each) for each in value]
    elif isinstance(value, dict) and all(type(key) is str for key in value):
        return {key: _plain(each) for key, each in value.items()}
    raise _NotPlain(f"{type(value).__module__}.{type(value).__qualname__} {value!r:.80}")


def _dict_rows(output: dict[Any, Any], model: str) -> list[Any]:
    """A dict of equal-length columns as rows: one column's values, or rows of the columns' values
    in the dict's order (as a DataFrame's rows are answered). Anything else is ambiguous."""
    columns = [value.tolist() if isinstance(value, np.ndarray) else value for value in output.values()]
    lengths = {len(value) if isinstance(value, list | tuple) else -1 for value in columns}
    if not columns or -1 in lengths or len(lengths) != 1:
        raise BackendError(
            f"{model} answered a dict ({', '.join(map(repr, list(output)[:5]))}), not columns of equal length"
        )
    if len(columns) == 1:
        return list(columns[0])
    if any(isinstance(value, list | tuple | dict | np.ndarray) for column in columns for value in column):
        raise BackendError(
            f"{model} answered a dict of columns whose values are not one number or string a row: "
            f"{', '.join(map(repr, list(output)[:5]))}"
        )
    return [list(row) for row in zip(*columns, strict=True)]
