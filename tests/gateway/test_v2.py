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
        ([("a", "FP16", [2], np.asarray([1, np.inf], "<f2").tobytes())], b"", "inputs[0].data"),
        ([("a", "FP64", [2], np.asarray([np.nan, 1], "<f8").tobytes())], b"", "inputs[0].data"),
        ([("a", "BYTES", [1], struct.pack("<I", 2) + b"\xff\xfe")], b"", "inputs[0].data"),
    ],
    ids=["wrong-size", "stray-bytes", "unknown-type", "infinite", "nan", "not-utf8"],
)
def test_bad_binary_inputs_name_the_field(
    tensors: list[tuple[str, str, list[int], bytes]], extra: bytes, field: str
) -> None:
    raw, length = binary_request(tensors)
    with pytest.raises(RequestError) as caught:
        decode_body(raw + extra, header_length=length, encoding=None, limit=LIMIT)
    assert caught.value.field == field


@pytest.mark.parametrize("length", ["99", "\u00b2", "-1", " 2"], ids=["beyond", "unicode-digit", "negative", "space"])
def test_a_header_length_that_is_not_a_byte_count_within_the_body_is_400(length: str) -> None:
    with pytest.raises(RequestError) as caught:  # "²" passed str.isdigit and int() raised: a 500
        decode_body(b"{}", header_length=length, encoding=None, limit=LIMIT)
    assert (caught.value.status, caught.value.field) == (400, "Inference-Header-Content-Length")


def test_binary_tensors_without_the_header_length_are_400_naming_the_header() -> None:
    """The body then reads as JSON followed by bytes: say which header is missing, not that the
    bytes are not UTF-8 at line 1."""
    raw, _length = binary_request([("x", "FP64", [1], struct.pack("<d", 1.0))])
    with pytest.raises(RequestError) as caught:
        decode_body(raw, header_length=None, encoding=None, limit=LIMIT)
    assert (caught.value.status, caught.value.field) == (400, "Inference-Header-Content-Length")
    assert "binary tensor data follows the JSON" in str(caught.value)


def test_content_codings_are_case_insensitive_and_an_unknown_one_is_415_naming_the_header() -> None:
    assert decode_body(gzip.compress(b'{"inputs": []}'), header_length=None, encoding="GZip", limit=LIMIT) == {
        "inputs": []
    }
    with pytest.raises(RequestError) as caught:
        decode_body(b"{}", header_length=None, encoding="br", limit=LIMIT)
    assert (caught.value.status, caught.value.field) == (415, "Content-Encoding")


def test_requested_outputs_choose_binary_or_json() -> None:
    assert parse_request({"inputs": [], "parameters": {"binary_data_output": True}}).binary_output
    wanted = {"inputs": [], "outputs": [{"name": "predict", "parameters": {"binary_data": False}}], "id": "r"}
    assert (parse_request(wanted).binary_output, parse_request(wanted).request_id) == (False, "r")
    with pytest.raises(RequestError) as caught:
        parse_request({"outputs": [{"name": "predict", "parameters": {"classification": 2}}]})
    assert caught.value.field == "outputs[0]"
    for body, field in (
        ({"parameters": {"binary_data_output": "false"}}, "parameters.binary_data_output"),
        ({"outputs": [{"name": "predict", "parameters": {"binary_data": "no"}}]}, "outputs[0].parameters.binary_data"),
    ):
        with pytest.raises(RequestError) as caught:  # bool("false") is True: a binary answer nobody asked for
            parse_request(body)
        assert caught.value.field == field


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


def test_gzip_members_and_the_zero_padding_between_them_decode_up_to_a_bound() -> None:
    """Each member costs a decompressor, and the rest of the body was copied after each one: 8 MiB
    of empty members held the event loop for 49 s. Now at most 64, and nothing is copied whole."""
    body = b'{"inputs": []}'
    members = b"".join(gzip.compress(body[i : i + 1]) + b"\x00" * (i % 3) for i in range(len(body)))
    assert decode_body(members, header_length=None, encoding="gzip", limit=LIMIT) == {"inputs": []}
    many = gzip.compress(body) + gzip.compress(b"") * 64
    with pytest.raises(RequestError) as caught:
        decode_body(many, header_length=None, encoding="gzip", limit=LIMIT)
    assert (caught.value.status, caught.value.field) == (400, "body")
    assert "more than 64 gzip members" in str(caught.value)
    big = b'{"inputs": []' + b" " * (200_000) + b"}"  # members spanning several of the decoder's slices
    split = gzip.compress(big[:150_000], compresslevel=0) + gzip.compress(big[150_000:], compresslevel=0)
    assert decode_body(split, header_length=None, encoding="gzip", limit=LIMIT) == {"inputs": []}
