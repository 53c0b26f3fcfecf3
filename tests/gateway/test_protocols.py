"""The wire protocols: V2 tensors and MLflow's four formats become columns; every error names its field."""

from __future__ import annotations

from typing import Any

import pytest

from modelcanary.domain.errors import RequestError
from modelcanary.gateway.answers import output_tensor, v2_response
from modelcanary.gateway.protocols import MAX_ROWS, mlflow_columns, scoring_body, v2_columns, validate
from modelcanary.ports import Column, TensorColumns

SIGNATURE = (Column("amount", "double"), Column("hour", "long"), Column("country", "string", required=False))


def tensor(name: str, data: Any, shape: list[int], datatype: str = "FP64") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def refused(call: Any, *args: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        call(*args)
    assert caught.value.status == 400
    return caught.value


# --- V2 -------------------------------------------------------------------------------------------------------------


def test_v2_one_tensor_per_column() -> None:
    body = {"inputs": [tensor("amount", [12.5, 99.0], [2]), tensor("hour", [3, 23], [2], "INT64")]}
    assert v2_columns(body, SIGNATURE) == {"amount": [12.5, 99.0], "hour": [3, 23]}


def test_v2_column_tensors_may_be_rows_by_one() -> None:
    body = {"inputs": [tensor("amount", [[12.5], [99.0]], [2, 1]), tensor("hour", [3, 23], [2, 1], "INT64")]}
    assert v2_columns(body, None) == {"amount": [12.5, 99.0], "hour": [3, 23]}


NUMBERS = (Column("amount", "double"), Column("hour", "long"), Column("age", "double"))


def test_v2_single_2d_tensor_is_split_in_signature_order() -> None:
    flat = {"inputs": [tensor("x", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])]}
    nested = {"inputs": [tensor("x", [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [2, 3])]}
    expected = {"amount": [1.0, 4.0], "hour": [2.0, 5.0], "age": [3.0, 6.0]}
    assert v2_columns(flat, NUMBERS) == expected
    assert v2_columns(nested, NUMBERS) == expected


@pytest.mark.parametrize(
    "data,shape",
    [([[1, 2, 3, 4], [5, 6]], [2, 3]), ([[1, 2, 3], 4, 5, 6], [2, 3]), ([[1, 2, 3]], [2, 3]), ([[1, 2], []], [2, 1])],
    ids=["uneven", "half-nested", "too-few-rows", "column-uneven"],
)
def test_v2_nested_data_must_be_exactly_its_shapes_rows(data: list[Any], shape: list[int]) -> None:
    """Regrouping ragged rows into the shape would answer rows the client never sent."""
    error = refused(v2_columns, {"inputs": [tensor("x", data, shape)]}, NUMBERS if shape[1] == 3 else None)
    assert error.field == "inputs[0].data"


@pytest.mark.parametrize("datatype,data", [("BOOL", [True, False, True]), ("BYTES", ["40.5", "1", "2"])])
def test_v2_a_2d_tensor_of_another_datatype_than_its_columns_is_refused(datatype: str, data: list[Any]) -> None:
    error = refused(v2_columns, {"inputs": [tensor("x", data, [1, 3], datatype)]}, NUMBERS)
    assert error.field == "inputs[0].datatype"
    assert "the model takes numbers (double) for 'amount'" in str(error)
    assert refused(v2_columns, {"inputs": [tensor("x", [1.0, 2.0, 3.0], [1, 3])]}, SIGNATURE).field == (
        "inputs[0].datatype"  # FP64 for the string column country
    )


def test_v2_a_2d_tensor_is_checked_whole_request_after_request() -> None:
    """What a signature takes of a 2-D tensor is worked out once per signature and datatype; each
    request's values are checked all the same, and another signature is another signature."""
    good = {"inputs": [tensor("x", [1.0, 2.0, 3.0], [1, 3])]}
    not_taken = {"inputs": [tensor("x", [True, False, True], [1, 3], "BOOL")]}
    not_whole = {"inputs": [tensor("x", [1.0, 2.5, 3.0], [1, 3])]}  # hour is a long
    texts = (Column("amount", "double"), Column("hour", "long"), Column("age", "string"))
    for _ in range(2):
        assert v2_columns(good, NUMBERS) == {"amount": [1.0], "hour": [2.0], "age": [3.0]}
        assert refused(v2_columns, not_taken, NUMBERS).field == "inputs[0].datatype"
        assert "whole numbers, got 2.5" in str(refused(v2_columns, not_whole, NUMBERS))
        assert "for 'age', not FP64" in str(refused(v2_columns, good, texts))


@pytest.mark.parametrize(
    "datatype,value",
    [("INT8", 100_000), ("UINT8", -5), ("INT32", 2**40), ("UINT64", -1), ("FP16", 1e300), ("FP32", -1e39)],
)
def test_v2_values_outside_their_datatypes_range_are_refused(datatype: str, value: float) -> None:
    error = refused(v2_columns, {"inputs": [tensor("hour", [1, value], [2], datatype)]}, None)
    assert error.field == "inputs[0].data"
    assert f"{value!r} at [1] is out of {datatype}'s range" in str(error)


def test_v2_2d_tensor_needs_a_matching_signature() -> None:
    body = {"inputs": [tensor("x", [[1, 2], [3, 4]], [2, 2])]}
    error = refused(v2_columns, body, SIGNATURE)
    assert error.field == "inputs[0].shape"
    assert str(error) == "inputs[0].shape: 2 columns do not match the model's 3 inputs"
    error = refused(v2_columns, body, None)
    assert str(error) == "inputs[0].shape: 2 columns do not match the model's unknown inputs"


def test_v2_2d_tensor_must_be_the_only_input() -> None:
    body = {"inputs": [tensor("a", [1, 2], [2]), tensor("x", [[1, 2, 3], [4, 5, 6]], [2, 3])]}
    assert refused(v2_columns, body, SIGNATURE).field == "inputs[1].shape"


@pytest.mark.parametrize(
    ("broken", "field"),
    [
        ({"name": ""}, "inputs[1].name"),
        ({"name": 7}, "inputs[1].name"),
        ({"shape": []}, "inputs[1].shape"),
        ({"shape": [2, 1, 1]}, "inputs[1].shape"),
        ({"shape": [-2]}, "inputs[1].shape"),
        ({"shape": "2"}, "inputs[1].shape"),
        ({"datatype": "FLOAT64"}, "inputs[1].datatype"),
        ({"datatype": None}, "inputs[1].datatype"),
        ({"data": [1, 2, 3]}, "inputs[1].data"),
        ({"data": [[1], [2], [3]]}, "inputs[1].data"),
    ],
)
def test_v2_errors_name_the_tensor_field(broken: dict[str, Any], field: str) -> None:
    good = tensor("amount", [1.0, 2.0], [2])
    bad = {**tensor("hour", [3, 4], [2], "INT64"), **broken}
    error = refused(v2_columns, {"inputs": [good, bad]}, SIGNATURE)
    assert error.field == field
    assert str(error).startswith(f"{field}: ")


class Price(float):
    """A float subclass, as a numpy scalar or a client's own number type would be."""


@pytest.mark.parametrize(
    ("datatype", "good", "bad"),
    [
        ("FP64", [1.5, 2, Price(3.0)], [1.5, True, 3.0]),
        ("FP32", [0.5, 1], [0.5, "1", 2.0]),
        ("INT64", [1, 2, 3], [1, 2.5, 3]),
        ("UINT8", [0, 255], [0, False]),
        ("BOOL", [True, False], [True, 1]),
        ("BYTES", ["a", "b"], ["a", 2]),
    ],
)
def test_v2_values_must_fit_their_datatype(datatype: str, good: list[Any], bad: list[Any]) -> None:
    assert v2_columns({"inputs": [tensor("x", good, [len(good)], datatype)]}, None) == {"x": good}
    error = refused(v2_columns, {"inputs": [tensor("x", bad, [len(bad)], datatype)]}, None)
    assert error.field == "inputs[0].data"
    assert f"got {bad[1]!r} at [1]" in str(error)


@pytest.mark.parametrize(
    ("outputs", "datatype"),
    [
        ([[0.9, 0.1]], "FP64"),
        ([[1, 0.5]], "FP64"),
        ([3, 4], "INT64"),
        ([True, False], "BOOL"),
        ([Price(0.5)], "FP64"),  # a subclass of float is still a number
        ([True, 0.5], "BYTES"),  # booleans among numbers: neither, so text
        ([], "FP64"),
    ],
)
def test_output_datatypes(outputs: list[Any], datatype: str) -> None:
    assert output_tensor(outputs)[0] == datatype


def test_v2_data_count_message() -> None:
    error = refused(v2_columns, {"inputs": [tensor("a", [1, 2, 3], [2, 1])]}, None)
    assert str(error) == "inputs[0].data: holds 3 values but shape [2, 1] needs 2"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": {"a": 1}}, "inputs"),
        ({"inputs": [3]}, "inputs[0]"),
    ],
)
def test_v2_request_shape_errors(body: Any, field: str) -> None:
    assert refused(v2_columns, body, None).field == field


def test_v2_tensor_without_data_is_refused() -> None:
    body = {"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64"}]}
    assert refused(v2_columns, body, None).field == "inputs[0].data"


def test_v2_duplicate_tensor_names_are_refused() -> None:
    body = {"inputs": [tensor("amount", [1.0], [1]), tensor("amount", [2.0], [1])]}
    assert refused(v2_columns, body, None).field == "inputs[1].name"


# --- MLflow -----------------------------------------------------------------------------------------------------------

EXPECTED = {"amount": [12.5, 99.0], "hour": [3, 23]}


def test_mlflow_dataframe_split() -> None:
    body = {"dataframe_split": {"columns": ["amount", "hour"], "data": [[12.5, 3], [99.0, 23]]}}
    assert mlflow_columns(body, None) == EXPECTED


def test_mlflow_dataframe_records() -> None:
    body = {"dataframe_records": [{"amount": 12.5, "hour": 3}, {"hour": 23, "amount": 99.0}]}
    assert mlflow_columns(body, None) == EXPECTED


def test_mlflow_instances_as_records() -> None:
    body = {"instances": [{"amount": 12.5, "hour": 3}, {"amount": 99.0, "hour": 23}]}
    assert mlflow_columns(body, None) == EXPECTED


def test_mlflow_instances_as_rows_take_names_from_the_signature() -> None:
    body = {"instances": [[12.5, 3, "FR"], [99.0, 23, "DE"]]}
    assert mlflow_columns(body, SIGNATURE) == {**EXPECTED, "country": ["FR", "DE"]}


def test_mlflow_inputs_as_dict_of_columns() -> None:
    assert mlflow_columns({"inputs": {"amount": [12.5, 99.0], "hour": [3, 23]}}, None) == EXPECTED
    assert mlflow_columns({"inputs": {"amount": 12.5, "hour": 3}}, None) == {"amount": [12.5], "hour": [3]}
    # a scalar beside columns is repeated down them, as MLflow's server does
    assert mlflow_columns({"inputs": {"amount": [12.5, 99.0], "hour": 3}}, None) == {
        "amount": [12.5, 99.0],
        "hour": [3, 3],
    }


def test_a_scoring_body_python_json_writes_is_read_and_nothing_else_is() -> None:
    """MLflow's server reads bodies with Python's json, which takes NaN and Infinity; a body that
    is no JSON even to it, nested past any limit, or not UTF-8 is a 400 on the body."""
    assert str(scoring_body(b'{"inputs": [NaN, Infinity]}')["inputs"]) == "[nan, inf]"
    for raw in (b"[" * 100_000, b'{"a": NaN', b"\xff"):
        error = refused(scoring_body, raw)
        assert (error.status, error.field) == (400, "body")


def test_mlflow_dataframe_split_takes_the_integer_labels_pandas_writes() -> None:
    """``DataFrame.to_json(orient="split")`` of a frame without column names writes 0, 1, ...:
    an unnamed tensor's columns are "0", "1", ..., as MLflow takes them."""
    body = {"dataframe_split": {"columns": [0, 1], "data": [[1.0, 2.0]]}}
    assert mlflow_columns(body, TensorColumns((Column("0", "double"), Column("1", "double")))) == {
        "0": [1.0],
        "1": [2.0],
    }


def test_mlflow_scalars_feed_a_one_input_model() -> None:
    one = (Column("amount", "double"),)
    assert mlflow_columns({"instances": [12.5, 99.0]}, one) == {"amount": [12.5, 99.0]}
    assert mlflow_columns({"inputs": [12.5], "params": {"k": 1}}, one) == {"amount": [12.5]}
    assert refused(mlflow_columns, {"instances": [12.5, 99.0]}, SIGNATURE).field == "instances[0]"


def test_mlflow_inputs_as_rows() -> None:
    assert mlflow_columns({"inputs": [[12.5, 3, None], [99.0, 23, None]]}, SIGNATURE) == {
        **EXPECTED,
        "country": [None, None],
    }


@pytest.mark.parametrize(
    ("body", "signature", "field", "message"),
    [
        ([], None, "body", "a scoring request is a JSON object"),
        ({}, None, "body", "give exactly one of dataframe_split, dataframe_records, instances, inputs"),
        ({"instances": [], "inputs": []}, None, "body", "give exactly one of"),
        ({"dataframe_split": [[1]]}, None, "dataframe_split", "must be an object with columns and data"),
        ({"dataframe_split": {"columns": ["a", 1.5], "data": []}}, None, "dataframe_split.columns", "a list of names"),
        ({"dataframe_split": {"columns": ["a"], "data": 5}}, None, "dataframe_split.data", "a list of rows"),
        (
            {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}},
            None,
            "dataframe_split.data[1]",
            "each row needs 2 values",
        ),
        ({"instances": []}, None, "instances", "must be a non-empty list"),
        ({"instances": [[1, 2]]}, None, "instances", "rows without names need a model signature to name the columns"),
        ({"instances": [[1, 2, 3], [1, 2]]}, SIGNATURE, "instances[1]", "each row needs 3 values"),
        ({"inputs": {"a": [1, 2], "b": [3]}}, None, "inputs", "all columns must have the same length"),
    ],
)
def test_mlflow_errors_name_the_field(
    body: Any, signature: tuple[Column, ...] | None, field: str, message: str
) -> None:
    error = refused(mlflow_columns, body, signature)
    assert error.field == field
    assert str(error).startswith(f"{field}: {message}")


def test_mlflow_records_may_leave_a_field_out_as_a_missing_value() -> None:
    """As in MLflow's frame of the records: the field left out is a missing value in that row,
    which an optional column takes and a required one refuses, named. (Refused whole before
    2026-12-03: "every record needs the same fields", where MLflow's server answered.)"""
    records = [{"amount": 1.0, "hour": 3, "country": "FR"}, {"hour": 4, "amount": 2.0}]
    columns = mlflow_columns({"dataframe_records": records}, SIGNATURE)
    assert columns == {"amount": [1.0, 2.0], "hour": [3, 4], "country": ["FR", None]}
    assert validate(columns, SIGNATURE, prefix="dataframe_records") == 2
    no_hour = mlflow_columns({"dataframe_records": [{"amount": 1.0, "hour": 3}, {"amount": 2.0}]}, SIGNATURE)
    assert no_hour == {"amount": [1.0, 2.0], "hour": [3, None]}
    with pytest.raises(RequestError) as caught:
        validate(no_hour, SIGNATURE, prefix="dataframe_records")
    assert caught.value.field == "dataframe_records.hour"
    assert "a missing value (null) in row 1: the model needs it" in str(caught.value)


def test_mlflow_split_of_one_column_may_give_its_values_unwrapped() -> None:
    body = {"dataframe_split": {"columns": ["amount"], "data": [1.0, 2.5]}}
    assert mlflow_columns(body, None) == {"amount": [1.0, 2.5]}
    assert mlflow_columns({"dataframe_split": {"columns": ["amount"], "data": [[1.0], [2.5]]}}, None) == {
        "amount": [1.0, 2.5]
    }


# --- validate ---------------------------------------------------------------------------------------------------------


def test_validate_counts_rows() -> None:
    assert validate({"amount": [1.0, 2.5, 3], "hour": [1, 2, 3]}, SIGNATURE, prefix="inputs") == 3
    assert validate({"anything": ["x"]}, None, prefix="inputs") == 1  # no signature: only the shape is checked


def test_validate_names_a_missing_required_column() -> None:
    with pytest.raises(RequestError) as caught:
        validate({"amount": [1.0]}, SIGNATURE, prefix="dataframe_split")
    assert caught.value.field == "dataframe_split"
    assert str(caught.value) == "dataframe_split: the model needs input 'hour'"


def test_validate_allows_a_missing_optional_column() -> None:
    assert validate({"amount": [1.0], "hour": [2]}, SIGNATURE, prefix="inputs") == 1


@pytest.mark.parametrize("bad", ["12.5", True, [1.0], {"v": 1}])
def test_validate_names_a_non_numeric_value_in_a_number_column(bad: Any) -> None:
    with pytest.raises(RequestError) as caught:
        validate({"amount": [1.0, bad], "hour": [1, 2]}, SIGNATURE, prefix="instances")
    assert caught.value.field == "instances.amount"
    assert str(caught.value) == f"instances.amount: must be numbers (double), got {bad!r} in row 1"


def test_validate_checks_integer_columns_too() -> None:
    with pytest.raises(RequestError) as caught:
        validate({"amount": [1.0], "hour": ["3"]}, SIGNATURE, prefix="inputs")
    assert str(caught.value) == "inputs.hour: must be numbers (long), got '3' in row 0"


@pytest.mark.parametrize("values", [[1.0, None], [None, "12.5"]], ids=["null", "null-then-text"])
def test_validate_refuses_null_in_a_number_column(values: list[Any]) -> None:
    with pytest.raises(RequestError) as caught:
        validate({"amount": values, "hour": [1, 2]}, SIGNATURE, prefix="instances")
    assert caught.value.field == "instances.amount"


def test_validate_checks_string_and_boolean_columns_null_only_where_optional() -> None:
    assert validate({"amount": [1.0, 2.0], "hour": [1, 2], "country": ["FR", None]}, SIGNATURE, prefix="inputs") == 2
    error = refused(lambda c: validate(c, SIGNATURE, prefix="inputs"), {"amount": [1.0], "hour": [1], "country": [3]})
    assert (error.field, str(error)) == ("inputs.country", "inputs.country: must be string values, got 3 in row 0")
    flag = (*SIGNATURE, Column("known", "boolean"))
    assert validate({"amount": [1.0], "hour": [1], "known": [True]}, flag, prefix="dataframe_records") == 1
    for bad in (None, 1, "true"):  # required: null would be scored as False
        columns = {"amount": [1.0], "hour": [1], "known": [bad]}
        error = refused(lambda c: validate(c, flag, prefix="dataframe_records"), columns)
        assert error.field == "dataframe_records.known"


@pytest.mark.parametrize("rows", [0, MAX_ROWS + 1])
def test_validate_row_limits(rows: int) -> None:
    with pytest.raises(RequestError) as caught:
        validate({"amount": [1.0] * rows, "hour": [1] * rows}, SIGNATURE, prefix="inputs")
    assert caught.value.field == "inputs"
    assert str(caught.value) == f"inputs: a request holds 1 to {MAX_ROWS} rows, not {rows}"


def test_validate_accepts_the_row_limit() -> None:
    assert validate({"amount": [1.0] * MAX_ROWS, "hour": [1] * MAX_ROWS}, SIGNATURE, prefix="inputs") == MAX_ROWS


@pytest.mark.parametrize(
    "columns,why",
    [
        ({"amount": [1.0, 2.0], "hour": [1]}, "all inputs must have the same number of rows"),
        ({}, "no inputs were given"),
    ],
)
def test_validate_needs_equal_lengths_of_some_inputs(columns: dict[str, list[Any]], why: str) -> None:
    with pytest.raises(RequestError) as caught:
        validate(columns, SIGNATURE, prefix="inputs")
    assert str(caught.value) == f"inputs: {why}"


# --- the V2 response --------------------------------------------------------------------------------------------------


def test_v2_response_with_one_number_per_row() -> None:
    response = v2_response(
        model_name="fraud",
        model_version="2",
        request_id="req-1",
        outputs=[0.1, 0.9],
        variant="candidate",
        prediction_ids=["p1", "p2"],
    )
    assert response == {
        "model_name": "fraud",
        "model_version": "2",
        "id": "req-1",
        "outputs": [{"name": "predict", "shape": [2], "datatype": "FP64", "data": [0.1, 0.9]}],
        "parameters": {"variant": "candidate", "prediction_ids": "p1,p2"},
    }


def test_v2_response_with_class_probabilities_and_no_id() -> None:
    response = v2_response(
        model_name="fraud",
        model_version="1",
        request_id=None,
        outputs=[[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]],
        variant="baseline",
        prediction_ids=["a", "b", "c"],
    )
    assert "id" not in response
    assert response["outputs"] == [
        {"name": "predict", "shape": [3, 2], "datatype": "FP64", "data": [0.9, 0.1, 0.2, 0.8, 0.5, 0.5]}
    ]
    assert response["parameters"] == {"variant": "baseline", "prediction_ids": "a,b,c"}


def test_v2_round_trip_through_columns() -> None:
    """A response's output tensor, sent back as a request, reads as the same values."""
    response = v2_response(
        model_name="m", model_version="1", request_id=None, outputs=[0.25, 0.75], variant="baseline", prediction_ids=[]
    )
    assert v2_columns({"inputs": response["outputs"]}, None) == {"predict": [0.25, 0.75]}


def test_a_dataframe_split_column_named_twice_is_refused() -> None:
    """Its values would otherwise overwrite the first column's, silently."""
    body = {"dataframe_split": {"columns": ["a", "b", "a"], "data": [[1, 2, 3]]}}
    error = refused(mlflow_columns, body, None)
    assert str(error) == "dataframe_split.columns: each column is named once; named more than once: ['a']"


@pytest.mark.parametrize(
    ("data", "shape"),
    [([[1.0], [2.0]], [2]), ([[[1.0]], [[2.0]]], [2, 1])],
    ids=["2-deep-for-1-D", "3-deep-for-2-D"],
)
def test_v2_data_nested_deeper_than_its_shape_is_refused(data: Any, shape: list[int]) -> None:
    error = refused(v2_columns, {"inputs": [tensor("amount", data, shape)]}, SIGNATURE)
    assert str(error) == f"inputs[0].data: nests lists deeper than its shape {shape}"


def test_v2_data_nested_past_the_recursion_limit_is_refused() -> None:
    data: Any = [1.0]
    for _ in range(5000):
        data = [data]
    assert refused(v2_columns, {"inputs": [tensor("amount", data, [1])]}, SIGNATURE).field == "inputs[0].data"


def test_a_models_refusal_is_named_in_the_requests_own_terms(serve: Any) -> None:
    """A model adapter names what it refuses ``inputs.COLUMN``: an MLflow request sent as
    ``dataframe_records`` gets ``dataframe_records.COLUMN``, a V2 one keeps ``inputs``."""
    from modelcanary.adapters.testing import FakeBackend, FunctionModel
    from modelcanary.domain.state import ModelVersion, Route
    from modelcanary.gateway.app import Gateway, StaticRoutes

    def refuses(columns: dict[str, list[Any]]) -> list[Any]:
        raise RequestError("must be one finite number a row (double)", field="inputs.x", status=422)

    route = Route(endpoint="m", baseline=ModelVersion(name="m", version="1"))
    gateway = Gateway(
        routes=StaticRoutes({"m": route}, None),
        backend=FakeBackend({"m/1": FunctionModel(refuses)}),
        telemetry=None,
        source="gw",
    )
    running = serve.start(gateway)
    running.call(gateway.refresh())
    with running.client() as client:
        scored = client.post("/v1/endpoints/m/invocations", json={"dataframe_records": [{"x": 1.0}]})
        inferred = client.post("/v2/models/m/infer", json={"inputs": [tensor("x", [1.0], [1])]})
    assert (scored.status_code, scored.json()["field"]) == (422, "dataframe_records.x")
    assert scored.json()["error"] == "dataframe_records.x: must be one finite number a row (double)"
    assert (inferred.status_code, inferred.json()["field"]) == (422, "inputs.x")


def test_messages_say_what_is_wrong_with_integers_and_mixed_rows() -> None:
    big = refused(v2_columns, {"inputs": [tensor("hour", [1, float(2**70)], [2], "INT64")]}, None)
    assert str(big) == "inputs[0].data: 1180591620717411303424 at [1] is out of INT64's range"
    half = refused(v2_columns, {"inputs": [tensor("hour", [1, 1.5], [2], "INT32")]}, None)
    assert str(half) == "inputs[0].data: INT32 needs integers, got 1.5 at [1]"
    whole = refused(v2_columns, {"inputs": [tensor("hour", [1, 2.0], [2], "INT32")]}, None)  # not "out of range"
    assert str(whole) == "inputs[0].data: INT32 needs integers, got 2.0 at [1]"
    record = {"amount": 1.0, "hour": 2, "country": "FR"}
    mixed = refused(mlflow_columns, {"instances": [record, [1.0, 2, "DE"]]}, SIGNATURE)
    assert (mixed.field, str(mixed)) == (
        "instances[1]",
        "instances[1]: give every row as a record or none: records and rows are mixed",
    )
