"""Dynamic batching around the real MLflow model, with real concurrency: concurrent requests share
predict calls, each gets exactly its own rows back, and one bad request in a batch fails alone."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from modelcanary.adapters.backends.batching import BatchingBackend, BatchingModel, BatchSettings
from modelcanary.domain.errors import RequestError
from modelcanary.domain.state import ModelVersion

FRAUD_1 = ModelVersion(name="fraud", version="1")


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: [row[name] for row in rows] for name in rows[0]}


@pytest.fixture
def model(pyfunc_backend: Any) -> Any:
    return pyfunc_backend.load(FRAUD_1)


def test_concurrent_requests_share_predict_calls_and_get_their_own_rows(model: Any, mlflow_registry: Any) -> None:
    rows = mlflow_registry.rows
    # 50 requests of 1 to 3 rows, each different
    requests = [_columns([rows[(i + k) % len(rows)] for k in range(1 + i % 3)]) for i in range(50)]
    batching = BatchingModel(model, BatchSettings(max_batch_size=16, max_wait_us=2000))

    async def all_at_once() -> list[list[Any]]:
        return list(await asyncio.gather(*(batching.apredict(columns) for columns in requests)))

    answers = asyncio.run(all_at_once())
    # each request's own rows, to the last bits BLAS may round differently in a bigger matrix
    # (OpenBLAS picks its kernel by CPU and shape: bit-identical on one machine, not on another)
    alone = [model.predict(columns) for columns in requests]
    assert [len(answer) for answer in answers] == [len(each) for each in alone]
    np.testing.assert_allclose(np.concatenate(answers), np.concatenate(alone), rtol=1e-12, atol=0)
    assert batching.batched_requests == 50
    # 100 rows in batches of at most 16 rows: at least 7 calls, far fewer than 50
    assert 7 <= batching.batches < 50
    assert batching.retried_alone == 0


def test_a_bad_request_fails_alone(model: Any, mlflow_registry: Any) -> None:
    rows = mlflow_registry.rows
    good = [_columns(rows[i : i + 2]) for i in range(5)]
    bad = _columns([dict(rows[0], amount="lots")])
    batching = BatchingModel(model, BatchSettings(max_batch_size=64, max_wait_us=2000))

    async def mixed() -> list[Any]:
        calls = [batching.apredict(columns) for columns in good[:2]]
        calls += [batching.apredict(bad)]
        calls += [batching.apredict(columns) for columns in good[2:]]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    answers = asyncio.run(mixed())
    assert isinstance(answers[2], RequestError) and answers[2].field == "inputs.amount"
    assert str(answers[2]) == "inputs.amount: must be numbers (double)"
    assert answers[:2] + answers[3:] == [model.predict(columns) for columns in good]
    assert batching.retried_alone == 6  # the batch of six failed, and each was retried alone


def test_a_request_bigger_than_a_batch_runs_alone(model: Any, mlflow_registry: Any) -> None:
    columns = _columns(mlflow_registry.rows[:10])
    batching = BatchingModel(model, BatchSettings(max_batch_size=4, max_wait_us=0))
    assert asyncio.run(batching.apredict(columns)) == model.predict(columns)
    assert batching.batches == 1


def test_each_loaded_model_batches_on_its_own(pyfunc_backend: Any) -> None:
    backend = BatchingBackend(pyfunc_backend, BatchSettings(max_batch_size=8))
    baseline, candidate = backend.load(FRAUD_1), backend.load(ModelVersion(name="fraud", version="2"))
    assert baseline is not candidate and baseline.columns == candidate.columns
    assert baseline.output_shape == [-1, 2]


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch_size >= 1"):
        BatchSettings(max_batch_size=0)
