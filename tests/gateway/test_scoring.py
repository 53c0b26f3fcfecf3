"""MLflow's scoring protocol over CSV (``gateway/scoring.py``): cells read as their signature
column's type, missing values, and errors that name the column and the line."""

from __future__ import annotations

import pytest

from modelcanary.domain.errors import RequestError
from modelcanary.gateway.protocols import validate
from modelcanary.gateway.scoring import csv_columns, is_csv
from modelcanary.ports import Column, TensorColumns

SIGNATURE = (
    Column("amount", "double"),
    Column("hour", "long"),
    Column("vip", "boolean"),
    Column("country", "string", required=False),
    Column("score", "float", required=False),
)


def test_cells_are_read_as_their_columns_types() -> None:
    body = b"hour,amount,vip,country,score\r\n3,12.5,True,FR,\r\n4,1e3,false,,0.5\r\n"
    columns = csv_columns(body, SIGNATURE)
    assert columns == {
        "hour": [3, 4],
        "amount": [12.5, 1000.0],
        "vip": [True, False],
        "country": ["FR", None],  # missing, as pandas reads an empty cell for MLflow
        "score": [None, 0.5],
    }
    assert validate(columns, SIGNATURE, prefix="csv") == 2


def test_without_a_signature_a_cell_is_an_integer_a_number_or_text() -> None:
    assert csv_columns(b"a,b,c\n1,2.5,x\n", None) == {"a": [1], "b": [2.5], "c": ["x"]}


def test_a_model_of_one_unnamed_tensor_takes_the_columns_by_position() -> None:
    signature = TensorColumns(Column(name=str(i), type="double") for i in range(2))
    assert csv_columns(b"x,y\n1,2\n", signature) == {"x": [1.0], "y": [2.0]}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b"amount,hour\nabc,3\n", "csv.amount", "line 2: 'abc' is not a double value"),
        (b"amount,hour\n1.5,3.5\n", "csv.hour", "line 2: '3.5' is not a long value"),
        (b"amount,vip\n1.5,maybe\n", "csv.vip", "line 2: 'maybe' is not a boolean value"),
        (b"amount,hour\n1.5,3\n2.5\n", "csv", "line 3 holds 1 values, the header names 2"),
        (b"amount,amount\n1,2\n", "csv.header", "each column is named once"),
        (b"amount,hour\n", "body", "no rows after the header"),
        (b"", "body", "a header row of column names is needed"),
        (b'amount\n"1.5\n', "body", "not CSV"),
        (b"amount\n\xff\n", "body", "not UTF-8 text: byte 7"),
    ],
)
def test_errors_name_the_column_and_the_line(body: bytes, field: str, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        csv_columns(body, SIGNATURE)
    assert caught.value.field == field and message in str(caught.value)


def test_a_required_column_missing_a_value_is_refused_by_the_signature_check() -> None:
    columns = csv_columns(b"amount,hour,vip\n,3,true\n", SIGNATURE)
    with pytest.raises(RequestError) as caught:
        validate(columns, SIGNATURE, prefix="csv")
    assert caught.value.field == "csv.amount" and "a missing value (null) in row 0: the model needs it" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 415), ("application/x-parquet", 415), ("text/csv; charset=latin-1", 415)],
)
def test_other_content_types_and_charsets_are_415(content_type: str, status: int) -> None:
    with pytest.raises(RequestError) as caught:
        is_csv(content_type)
    assert (caught.value.status, caught.value.field) == (status, "Content-Type")


def test_json_is_the_default() -> None:
    assert not is_csv(None) and not is_csv("application/json; charset=utf-8") and is_csv("TEXT/CSV")
