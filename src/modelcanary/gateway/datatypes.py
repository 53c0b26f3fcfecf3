"""The Open Inference Protocol's tensor datatypes: which JSON values a tensor of each may hold,
checked in one pass in C for the usual ones (``protocols.v2_columns`` reads a request's tensors
with these)."""

from __future__ import annotations

import reprlib
from typing import Any

from modelcanary.domain.errors import RequestError

_SHOWN = reprlib.Repr()  # keyword arguments from Python 3.12 only
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict = 2, 4, 4
_SHOWN.maxstring = _SHOWN.maxother = _SHOWN.maxlong = 40


def shown(value: Any) -> str:
    """A request's value as an error message quotes it: bounded, where ``repr`` of a value nested
    a thousand deep (orjson reads 1,024 levels) raised RecursionError, a 500, and of an 8 MB one
    wrote 8 MB back.

    >>> shown([[[[1]]]]), shown("x" * 100)[:12], shown(10**100)[:8]
    ('[[[...]]]', "'xxxxxxxxxxx", '10000000')
    """
    return _SHOWN.repr(value)


V2_TYPES = {
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
}

# which JSON values a tensor of each datatype may hold (bool is an int in Python: checked first)
INTEGER_TYPES = {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
FLOAT_TYPES = {"FP16", "FP32", "FP64"}
# the values each sized datatype holds: a JSON tensor may not carry what its binary form could not
RANGES: dict[str, tuple[float, float]] = {
    **{f"INT{bits}": (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) for bits in (8, 16, 32, 64)},
    **{f"UINT{bits}": (0, 2**bits - 1) for bits in (8, 16, 32, 64)},
    "FP16": (-65504.0, 65504.0),
    "FP32": (-3.4028234663852886e38, 3.4028234663852886e38),
}
# the exact Python types (bool is not an int here) that need no closer look, per datatype
_NOTHING: frozenset[type] = frozenset()
_EXACT_KINDS: dict[str, set[type]] = {
    **{datatype: {int, float} for datatype in FLOAT_TYPES},
    **{datatype: {int} for datatype in INTEGER_TYPES},
    "BOOL": {bool},
    "BYTES": {str},
}


def check_values(data: list[Any], datatype: str, tensor: int) -> None:
    """Every value of input ``tensor`` fits its datatype; the first that does not is named with its
    index. The common case, plain JSON numbers, is checked in one pass in C (``set(map(type, ...))``),
    and the field's name is only written out for a message."""
    if set(map(type, data)) <= _EXACT_KINDS.get(datatype, _NOTHING):
        bounds = RANGES.get(datatype)
        if bounds is not None and data and (min(data) < bounds[0] or max(data) > bounds[1]):
            index, value = next((i, v) for i, v in enumerate(data) if not bounds[0] <= v <= bounds[1])
            raise RequestError(
                f"{shown(value)} at [{index}] is out of {datatype}'s range {bounds}", field=f"inputs[{tensor}].data"
            )
        return
    field = f"inputs[{tensor}].data"
    if datatype in FLOAT_TYPES or datatype in INTEGER_TYPES:
        integers = datatype in INTEGER_TYPES
        kinds: type | tuple[type, ...] = int if integers else (int, float)
        for index, value in enumerate(data):
            if isinstance(value, bool) or not isinstance(value, kinds):
                if integers and isinstance(value, float) and value.is_integer() and abs(value) >= 2**63:
                    # a JSON integer past 64 bits reads as a float
                    raise RequestError(f"{value:.0f} at [{index}] is out of {datatype}'s range", field=field)
                wanted = "integers" if integers else "numbers"
                raise RequestError(f"{datatype} needs {wanted}, got {shown(value)} at [{index}]", field=field)
    elif datatype == "BOOL":
        for index, value in enumerate(data):
            if not isinstance(value, bool):
                raise RequestError(f"BOOL needs true or false, got {shown(value)} at [{index}]", field=field)
    else:
        for index, value in enumerate(data):
            if not isinstance(value, str):
                raise RequestError(f"BYTES needs strings, got {shown(value)} at [{index}]", field=field)


def dimensions(shape: list[Any]) -> bool:
    """Whether a shape's one or two dimensions are whole numbers, none negative (not bools)."""
    first = shape[0]
    if type(first) is not int or first < 0:
        return False
    return len(shape) == 1 or (type(shape[1]) is int and shape[1] >= 0)


def ragged(rows: list[Any], width: int) -> bool:
    """Whether nested rows are not all lists of ``width`` values (regrouping them would answer rows
    the client never sent)."""
    return any(type(row) is not list or len(row) != width for row in rows)
