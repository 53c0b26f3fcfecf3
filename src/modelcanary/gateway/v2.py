"""The Open Inference Protocol (KServe V2) on the wire, beyond the JSON tensors of ``protocols``:
the binary tensor data extension, requested outputs, and server and model metadata.

Off-the-shelf clients send binary tensors by default (tritonclient's ``InferInput.set_data_from_numpy``
and ``InferRequestedOutput`` both default to ``binary_data=True``): the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by each binary input's raw little-endian values,
in the order of ``inputs``. Binary inputs are decoded into the JSON tensors' ``data`` lists, so one
parser (``protocols.v2_columns``) checks every request whatever its encoding.

>>> body, header = encode_response({"outputs": [{"name": "predict", "shape": [2], "datatype": "FP64",
...                                 "data": [0.5, 1.0]}]}, binary=True)
>>> header is not None and body[int(header):] == bytes(np.asarray([0.5, 1.0], "<f8"))
True
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelcanary.domain.errors import RequestError
from modelcanary.gateway import protocols
from modelcanary.gateway.answers import OUTPUT_NAME
from modelcanary.gateway.datatypes import shown
from modelcanary.ports import V2_DATATYPES, V2_PROTOCOL_PARAMETERS, Column, Model

HEADER_LENGTH = "inference-header-content-length"
SERVER_NAME = "modelcanary"
EXTENSIONS = ("binary_tensor_data",)
_NUMPY_TYPES = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A parsed infer request: its JSON (binary inputs decoded into ``data``), its id, and how the
    client wants the output back."""

    body: dict[str, Any]
    request_id: Any
    binary_output: bool
    params: dict[str, Any] | None = None  # its parameters for the model (``V2_PROTOCOL_PARAMETERS`` left out)


def decode_body(raw: bytes, *, header_length: str | None, encoding: str | None, limit: int) -> dict[str, Any]:
    """The JSON of an infer request, with binary tensors (if any) decoded into ``data`` lists;
    ``limit`` bounds the body's size once decompressed, as the server bounds it on the wire."""
    raw = decoded(raw, encoding=encoding, limit=limit)
    size = len(raw)
    if header_length is not None:
        # isdigit alone passes digits int() refuses ("²")
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(raw):
            raise RequestError(
                f"must be a byte count within the body's {len(raw)}", field="Inference-Header-Content-Length"
            )
        size = int(header_length)
    try:
        body = protocols.json_body(raw if size == len(raw) else raw[:size])
    except RequestError:
        if header_length is None and b'"binary_data_size"' in raw:  # binary tensors after the JSON, unannounced
            why = "binary tensor data follows the JSON: give the JSON's length in bytes in this header"
            raise RequestError(why, field="Inference-Header-Content-Length") from None
        raise
    if not isinstance(body, dict):
        raise RequestError("an infer request is a JSON object", field="body")
    # binary tensors, announced or not, found by a search in C (a key spelled with escapes is not
    # found: its tensor is then refused for having no data)
    if size < len(raw) or b"binary_data_size" in raw:
        _decode_binary_inputs(body, memoryview(raw)[size:])
    return body


def decoded(raw: bytes, *, encoding: str | None, limit: int) -> bytes:
    """A body as sent with its ``Content-Encoding`` (gzip, deflate, identity) undone; another
    coding is a 415 naming the header."""
    coding = encoding.strip().lower() if encoding is not None else None  # case-insensitive (RFC 9110)
    if coding in ("gzip", "deflate"):
        return _inflate(raw, coding, limit)
    if coding not in (None, "", "identity"):
        raise RequestError(
            f"content encoding {encoding!r} is not supported (gzip, deflate)", field="Content-Encoding", status=415
        )
    return raw


def _inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """``raw`` decompressed, refused (413) at the first byte past ``limit``: a few hundred
    kilobytes of gzip can hold gigabytes of zeros. A gzip body may be several members (at most
    ``MAX_GZIP_MEMBERS``), with zero padding between and after them, as ``gzip.decompress`` allows.
    The input is fed in slices, so that what is left after a member is never copied whole: a body
    of thousands of tiny members took time in the square of its size (8 MiB: 49 s)."""
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    view = memoryview(raw)
    parts: list[bytes] = []
    size = position = 0
    while True:
        if len(parts) == MAX_GZIP_MEMBERS:
            raise RequestError(f"more than {MAX_GZIP_MEMBERS} {encoding} members in one body", field="body")
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            if position >= len(raw):
                raise RequestError(f"not valid {encoding} data: it ends before its end-of-stream marker", field="body")
            chunk = view[position : position + _INFLATE_SLICE]
            position += len(chunk)
            try:
                part = inflater.decompress(chunk, limit - size + 1)  # one byte more than fits: over the limit
            except zlib.error as exc:
                raise RequestError(f"not valid {encoding} data: {exc}", field="body") from exc
            size += len(part)
            if size > limit:
                raise RequestError(
                    f"larger than {limit} bytes once decompressed ({encoding})", field="body", status=413
                )
            parts.append(part)
        position -= len(inflater.unused_data)  # at most a slice: the start of what follows
        more = _NOT_ZERO.search(raw, position) if encoding == "gzip" else None
        if more is None:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        position = more.start()


MAX_GZIP_MEMBERS = 64  # clients send one; each costs a decompressor
_INFLATE_SLICE = 1 << 16
_NOT_ZERO = re.compile(rb"[^\x00]")


def _decode_binary_inputs(body: dict[str, Any], blob: memoryview) -> None:
    inputs = body.get("inputs")
    offset = 0
    for index, tensor in enumerate(inputs if isinstance(inputs, list) else ()):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        where = f"inputs[{index}]"
        if type(size) is not int or size < 0 or offset + size > len(blob):  # not bool: true is no size
            raise RequestError(
                f"{shown(size)} bytes do not fit the {len(blob) - offset} binary bytes left",
                field=f"{where}.parameters.binary_data_size",
            )
        if "data" in tensor:
            raise RequestError("give data or binary_data_size, not both", field=f"{where}.data")
        tensor["data"] = _decode_tensor(bytes(blob[offset : offset + size]), tensor, where)
        offset += size
    if offset != len(blob):
        raise RequestError(f"{len(blob) - offset} binary bytes belong to no input", field="body")


def _decode_tensor(chunk: bytes, tensor: dict[str, Any], where: str) -> list[Any]:
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype == "BYTES":
        values, offset = [], 0
        while offset < len(chunk):
            if offset + 4 > len(chunk):
                raise RequestError("a BYTES element's 4-byte length is cut off", field=f"{where}.data")
            (length,) = struct.unpack_from("<I", chunk, offset)
            try:  # models get BYTES as text: replacing what is not UTF-8 would change their input unseen
                values.append(chunk[offset + 4 : offset + 4 + length].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise RequestError(
                    f"BYTES element {len(values)} is not UTF-8 text ({exc.reason})", field=f"{where}.data"
                ) from exc
            offset += 4 + length
        return values
    dtype = _NUMPY_TYPES.get(str(datatype))
    if dtype is None:
        raise RequestError(f"binary data needs one of {', '.join(_NUMPY_TYPES)} or BYTES", field=f"{where}.datatype")
    count = math.prod(shape) if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else -1
    itemsize = np.dtype(dtype).itemsize
    if count < 0 or count * itemsize != len(chunk):
        raise RequestError(
            f"{len(chunk)} bytes are not shape {shape} of {datatype} ({itemsize} bytes each)",
            field=f"{where}.parameters.binary_data_size",
        )
    array = np.frombuffer(chunk, dtype=dtype)
    if array.dtype.kind == "f" and not np.isfinite(array).all():  # JSON cannot carry these; binary can
        raise RequestError("binary values must be finite numbers, not NaN or infinity", field=f"{where}.data")
    return list(array.tolist())


def parse_request(body: dict[str, Any]) -> InferRequest:
    """Check the requested outputs (the endpoint has one, ``predict``) and how they want their data;
    the request's other parameters are the model's inference parameters (MLflow's ``params``).

    >>> parse_request({"inputs": [], "parameters": {"binary_data_output": True, "threshold": 0.9}}).params
    {'threshold': 0.9}
    """
    parameters = body.get("parameters") or {}
    binary = _flag(
        parameters.get("binary_data_output", False) if isinstance(parameters, dict) else False,
        "parameters.binary_data_output",
    )
    requested = body.get("outputs")
    if requested is not None:
        if not isinstance(requested, list):
            raise RequestError("must be a list of {name, parameters}", field="outputs")
        for index, output in enumerate(requested):
            name = output.get("name") if isinstance(output, dict) else None
            if name != OUTPUT_NAME:
                raise RequestError(
                    f"no output {name!r}; this endpoint's only output is {OUTPUT_NAME!r}",
                    field=f"outputs[{index}].name",
                )
            wanted = output.get("parameters") or {}
            if not isinstance(wanted, dict):
                raise RequestError("must be an object", field=f"outputs[{index}].parameters")
            if wanted.get("classification"):
                raise RequestError("the classification extension is not supported", field=f"outputs[{index}]")
            binary = _flag(wanted.get("binary_data", binary), f"outputs[{index}].parameters.binary_data")
    given = parameters.items() if isinstance(parameters, dict) else ()
    params = {name: value for name, value in given if name not in V2_PROTOCOL_PARAMETERS}
    return InferRequest(body=body, request_id=body.get("id"), binary_output=binary, params=params or None)


def _flag(value: Any, field: str) -> bool:
    """A boolean parameter: JSON true or false, not a string that reads like one ("false")."""
    if not isinstance(value, bool):
        raise RequestError(f"must be true or false, not {shown(value)}", field=field)
    return value


def encode_response(content: dict[str, Any], *, binary: bool) -> tuple[bytes, str | None]:
    """The response body, and the JSON header's length when outputs travel as binary."""
    if not binary:
        return orjson.dumps(content), None
    chunks = []
    for output in content["outputs"]:
        data = output.pop("data")
        if output["datatype"] == "BYTES":
            encoded = [str(value).encode() for value in data]
            chunk = b"".join(struct.pack("<I", len(item)) + item for item in encoded)
        else:
            chunk = np.asarray(data, dtype=_NUMPY_TYPES[output["datatype"]]).tobytes()
        output.setdefault("parameters", {})["binary_data_size"] = len(chunk)
        chunks.append(chunk)
    header = orjson.dumps(content)
    return header + b"".join(chunks), str(len(header))


def server_metadata() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("modelcanary")
    except PackageNotFoundError:  # run from a source tree
        installed = "0"
    return {"name": SERVER_NAME, "version": installed, "extensions": list(EXTENSIONS)}


def _input_metadata(columns: tuple[Column, ...] | None) -> list[dict[str, Any]]:
    return [{"name": c.name, "datatype": V2_DATATYPES.get(c.type, "BYTES"), "shape": [-1]} for c in columns or ()]


def model_metadata(name: str, versions: list[str], model: Model) -> dict[str, Any]:
    """What a V2 client asks before it builds inputs: the endpoint's inputs (its baseline's
    signature) and its one output, as its answers carry it: the datatype and shape the model
    states (``output_datatype``, ``output_shape``; -1 where a dimension is not stated). A model
    that does not state its output's type lists no output: a guess would have a client decode
    the answers wrong (it said FP64 of a classifier's INT64 labels)."""
    datatype = getattr(model, "output_datatype", None)
    shape = list(getattr(model, "output_shape", None) or [-1, -1])
    outputs = [{"name": OUTPUT_NAME, "datatype": datatype, "shape": shape}] if datatype else []
    return {
        "name": name,
        "versions": versions,
        "platform": "modelcanary",
        "inputs": _input_metadata(model.columns),
        "outputs": outputs,
    }
