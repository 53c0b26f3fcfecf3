"""The V2 wire format beyond JSON tensors: binary tensors in and out, requested outputs, compression."""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np
import orjson
import pytest

from modelcanary.domain.errors import RequestError
from modelcanary.gateway.v2 import decode_body, encode_response, parse_request

LIMIT = 1 << 20


def binary_request(tensors: list[tuple[str, str, list[int], bytes]]) -> tuple[bytes, str]:
    header = orjson.dumps(
        {
            "inputs": [
                {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(blob)}}
                for name, datatype, shape, blob in tensors
            ]
        }
    )
    return header + b"".join(blob for *_, blob in tensors), str(len(header))


def test_binary_inputs_of_each_kind_decode_to_data() -> None:
    strings = b"".join(struct.pack("<I", len(s)) + s for s in (b"FR", b"DE"))
    raw, length = binary_request(
        [
            ("amount", "FP32", [2, 1], np.asarray([1.5, 2.5], "<f4").tobytes()),
            ("hour", "INT64", [2], np.asarray([3, 23], "<i8").tobytes()),
            ("country", "BYTES", [2], strings),
        ]
    )
    body = decode_body(raw, header_length=length, encoding=None, limit=LIMIT)
    assert [tensor["data"] for tensor in body["inputs"]] == [[1.5, 2.5], [3, 23], ["FR", "DE"]]
    assert decode_body(gzip.compress(raw), header_length=length, encoding="gzip", limit=LIMIT) == body


@pytest.mark.parametrize(
    ("tensors", "extra", "field"),
    [
        ([("a", "FP64", [3], np.zeros(2).tobytes())], b"", "inputs[0].parameters.binary_data_size"),
        ([("a", "FP64", [2], np.zeros(2).tobytes())], b"\x00", "body"),
        ([("a", "BF16", [2], b"\x00" * 4)], b"", "inputs[0].datatype"),
    ],
    ids=["wrong-size", "stray-bytes", "unknown-type"],
)
def test_bad_binary_inputs_name_the_field(
    tensors: list[tuple[str, str, list[int], bytes]], extra: bytes, field: str
) -> None:
    raw, length = binary_request(tensors)
    with pytest.raises(RequestError) as caught:
        decode_body(raw + extra, header_length=length, encoding=None, limit=LIMIT)
    assert caught.value.field == field


def test_a_header_length_beyond_the_body_is_refused() -> None:
    with pytest.raises(RequestError) as caught:
        decode_body(b"{}", header_length="99", encoding=None, limit=LIMIT)
    assert caught.value.field == "Inference-Header-Content-Length"


def test_requested_outputs_choose_binary_or_json() -> None:
    assert parse_request({"inputs": [], "parameters": {"binary_data_output": True}}).binary_output
    wanted = {"inputs": [], "outputs": [{"name": "predict", "parameters": {"binary_data": False}}], "id": "r"}
    assert (parse_request(wanted).binary_output, parse_request(wanted).request_id) == (False, "r")
    with pytest.raises(RequestError) as caught:
        parse_request({"outputs": [{"name": "predict", "parameters": {"classification": 2}}]})
    assert caught.value.field == "outputs[0]"


def test_binary_outputs_round_trip() -> None:
    content = {"outputs": [{"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["yes", "no"]}]}
    raw, length = encode_response(content, binary=True)
    assert length is not None
    header = orjson.loads(raw[: int(length)])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == len(raw) - int(length) == 4 + 3 + 4 + 2
    request = {"inputs": [dict(header["outputs"][0], name="x")]}
    again = orjson.dumps(request)
    decoded = decode_body(again + raw[int(length) :], header_length=str(len(again)), encoding=None, limit=LIMIT)
    assert decoded["inputs"][0]["data"] == ["yes", "no"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_body_is_bounded_once_decompressed(encoding: str) -> None:
    compress = gzip.compress if encoding == "gzip" else zlib.compress
    body = b'{"inputs": []' + b" " * (LIMIT - 14) + b"}"
    assert len(body) == LIMIT
    assert decode_body(compress(body), header_length=None, encoding=encoding, limit=LIMIT) == {"inputs": []}
    with pytest.raises(RequestError) as caught:
        decode_body(compress(body + b" "), header_length=None, encoding=encoding, limit=LIMIT)
    assert (caught.value.status, caught.value.field) == (413, "body")
    assert f"larger than {LIMIT} bytes once decompressed" in str(caught.value)


def test_a_gzip_body_of_several_members_decodes_and_a_cut_one_is_400() -> None:
    members = gzip.compress(b'{"inputs": ') + gzip.compress(b"[]}") + b"\x00\x00"
    assert decode_body(members, header_length=None, encoding="gzip", limit=LIMIT) == {"inputs": []}
    with pytest.raises(RequestError) as caught:  # was an EOFError from gzip: a 500
        decode_body(gzip.compress(b'{"inputs": []}')[:-6], header_length=None, encoding="gzip", limit=LIMIT)
    assert (caught.value.status, caught.value.field) == (400, "body")
    assert "ends before its end-of-stream marker" in str(caught.value)
