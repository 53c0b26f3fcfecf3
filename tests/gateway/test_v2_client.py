"""An off-the-shelf Open Inference Protocol client (tritonclient's HTTP client), unchanged, against a
real ``modelcanary gateway`` process serving a real MLflow model: health, metadata, infer with binary
and JSON tensors, requested outputs, the request id, and errors that name the field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient  # in the test extra: its absence fails, never skips
from tritonclient.utils import InferenceServerException

MAX_ROWS = 8


@pytest.fixture(scope="module")
def client(gateway_processes: Any) -> Iterator[Any]:
    base = gateway_processes.start("--endpoint", "fraud=models:/fraud/1", "--max-rows", str(MAX_ROWS))
    triton = httpclient.InferenceServerClient(url=base.removeprefix("http://"))
    try:
        yield triton
    finally:
        triton.close()


@pytest.fixture(scope="module")
def frame(mlflow_registry: Any) -> Any:
    import pandas as pd

    return pd.DataFrame(mlflow_registry.rows[:5])


@pytest.fixture(scope="module")
def expected(pyfunc_backend: Any, frame: Any) -> np.ndarray:
    from modelcanary.domain.state import ModelVersion

    model = pyfunc_backend.load(ModelVersion(name="fraud", version="1"))
    return np.asarray(model.predict({name: list(frame[name]) for name in frame.columns}))


def _inputs(frame: Any, *, binary: bool, datatype: str = "FP64") -> list[Any]:
    inputs = []
    for name in frame.columns:
        tensor = httpclient.InferInput(name, [len(frame), 1], datatype)
        tensor.set_data_from_numpy(
            frame[[name]].to_numpy(dtype=np.float64 if datatype == "FP64" else np.float32), binary
        )
        inputs.append(tensor)
    return inputs


def test_health_and_metadata(client: Any, mlflow_registry: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fraud") and client.is_model_ready("fraud", model_version="1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("fraud", model_version="9")
    assert client.get_server_metadata()["name"] == "modelcanary"
    metadata = client.get_model_metadata("fraud")
    assert [tensor["name"] for tensor in metadata["inputs"]] == list(mlflow_registry.features)
    assert metadata["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1, 2]}]
    assert client.get_model_metadata("fraud", model_version="1") == metadata


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_with_typed_tensors_and_requested_output(
    client: Any, frame: Any, expected: np.ndarray, binary: bool
) -> None:
    result = client.infer(
        "fraud",
        _inputs(frame, binary=binary),
        outputs=[httpclient.InferRequestedOutput("predict", binary_data=binary)],
        request_id="req-42",
        parameters={"tenant": "acme"},
    )
    output = result.as_numpy("predict")
    assert output.dtype == np.float64 and output.shape == (5, 2)
    np.testing.assert_allclose(output, expected)
    response = result.get_response()
    assert response["id"] == "req-42"
    assert response["parameters"]["variant"] == "baseline"
    assert len(response["parameters"]["prediction_ids"].split(",")) == 5


def test_infer_without_requested_outputs_gets_them_all_in_binary(client: Any, frame: Any, expected: np.ndarray) -> None:
    result = client.infer("fraud", _inputs(frame, binary=True), model_version="1")
    np.testing.assert_allclose(result.as_numpy("predict"), expected)
    assert "binary_data_size" in result.get_output("predict")["parameters"]


def test_fp32_inputs_are_accepted(client: Any, frame: Any, expected: np.ndarray) -> None:
    result = client.infer("fraud", _inputs(frame, binary=True, datatype="FP32"))
    np.testing.assert_allclose(result.as_numpy("predict"), expected, rtol=1e-5)


def test_errors_name_the_field(client: Any, frame: Any) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("fraud", _inputs(frame, binary=True), outputs=[httpclient.InferRequestedOutput("proba")])
    assert caught.value.message() == "outputs[0].name: no output 'proba'; this endpoint's only output is 'predict'"
    assert caught.value.status() == "400"

    wrong = httpclient.InferInput("amount", [1], "BYTES")
    wrong.set_data_from_numpy(np.asarray([b"lots"], dtype=np.object_), binary_data=False)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("fraud", [wrong, *_inputs(frame.head(1), binary=True)[1:]])
    assert caught.value.message().startswith("inputs[0].datatype: the model takes numbers (double) for 'amount'")

    with pytest.raises(InferenceServerException) as caught:
        client.infer("fraud", _inputs(frame.head(2), binary=True)[:2])
    assert caught.value.message() == "inputs: the model needs input 'age'"


def test_rows_per_request_are_bounded(client: Any, frame: Any) -> None:
    import pandas as pd

    big = pd.concat([frame, frame])  # 10 rows against a bound of 8
    with pytest.raises(InferenceServerException) as caught:
        client.infer("fraud", _inputs(big, binary=True))
    assert caught.value.message() == f"inputs: a request holds 1 to {MAX_ROWS} rows, not 10"
    assert caught.value.status() == "400"
