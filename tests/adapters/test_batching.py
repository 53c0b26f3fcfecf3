"""Dynamic batching around the real MLflow model, with real concurrency: concurrent requests share
predict calls, each gets exactly its own rows back, and one bad request in a batch fails alone."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import numpy as np
import pytest

from modelcanary.adapters.backends.batching import BatchingBackend, BatchingModel, BatchSettings
from modelcanary.adapters.testing import FunctionModel
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


def _burning(cpu_s: float, bad: float) -> FunctionModel:
    """A model whose every call costs its thread ``cpu_s`` of CPU time, and fails on a batch
    holding the value ``bad``."""

    def predict(columns: dict[str, list[Any]]) -> list[Any]:
        started = time.thread_time()
        while time.thread_time() - started < cpu_s:
            pass
        if bad in columns["x"]:
            raise ValueError(f"cannot predict {bad}")
        return list(columns["x"])

    return FunctionModel(predict)


@pytest.mark.parametrize("on_loop", [True, False], ids=["on the loop", "on the worker"])
def test_a_batchs_cpu_time_is_shared_by_its_requests_rows(on_loop: bool) -> None:
    """Each request is charged its rows' share of its batch's CPU time, on whichever thread the
    batch ran; one retried alone after its batch failed pays its share of that call and its own,
    whether that call answered or failed too."""
    batching = BatchingModel(_burning(0.02, bad=9.0), BatchSettings(max_batch_size=8, max_wait_us=50_000))

    async def together(*requests: list[float]) -> list[Any]:
        calls = (batching.apredict_costed({"x": x}, on_loop=on_loop) for x in requests)
        return list(await asyncio.gather(*calls, return_exceptions=True))

    (one, one_ms, one_waited), (three, three_ms, three_waited) = asyncio.run(together([1.0], [2.0, 3.0, 4.0]))
    assert (one, three, batching.batches) == ([1.0], [2.0, 3.0, 4.0], 1)
    assert three_ms == pytest.approx(3 * one_ms)
    # the call's 20 ms charged once, whole (plus the last turn of its loop and the list it returns)
    assert 20 <= one_ms + three_ms < 25
    # both waited out the same hop to the worker and back, if any: none on the loop
    assert one_waited == three_waited and (one_waited == 0) == on_loop

    (good, good_ms, _), (failed, failed_ms, _) = asyncio.run(together([1.0], [9.0]))
    assert good == [1.0] and isinstance(failed, ValueError) and batching.retried_alone == 2
    assert 30 <= good_ms < 35  # half of the failed batch's call, and the whole of its own
    assert 30 <= failed_ms < 35  # the same: its failure is charged as an answer would be


def test_a_batch_that_breaks_outside_the_model_fails_its_callers_instead_of_leaving_them_waiting() -> None:
    """A batch on the worker whose executor is gone (a gateway closing) raises before the model
    runs: its callers get that error, and the next batch still runs."""
    batching = BatchingModel(FunctionModel(lambda columns: list(columns["x"])), BatchSettings(max_wait_us=0))
    batching._worker.shutdown()

    async def off_loop() -> Any:
        return await asyncio.wait_for(batching.apredict_costed({"x": [1.0]}), 10)

    assert isinstance(asyncio.run(off_loop()).outputs, RuntimeError)
    assert asyncio.run(batching.apredict({"x": [2.0]}, on_loop=True)) == [2.0]


def test_a_model_failing_at_random_fails_a_request_as_often_alone_as_in_company() -> None:
    """Half the calls fail, whatever their input. A request in a failed batch is retried alone;
    one that was alone in its batch must get the same second try, or a variant whose batches are
    single requests (a candidate at a small weight) reads twice the failures of one whose batches
    are full, for the same model."""
    outcomes = random.Random(3)

    def flaky(columns: dict[str, list[Any]]) -> list[Any]:
        if outcomes.random() < 0.5:
            raise RuntimeError("the feature store timed out")
        return list(columns["x"])

    batching = BatchingModel(FunctionModel(flaky), BatchSettings(max_batch_size=8, max_wait_us=50_000))

    async def failed(requests: int, together: int) -> float:
        failures = 0
        for start in range(0, requests, together):
            calls = (batching.apredict({"x": [float(x)]}) for x in range(start, start + together))
            answers = await asyncio.gather(*calls, return_exceptions=True)
            failures += sum(isinstance(answer, RuntimeError) for answer in answers)
        return failures / requests

    alone, in_fours = asyncio.run(failed(400, 1)), asyncio.run(failed(400, 4))
    # a request fails where its first call and its own retry both failed: a quarter, either way
    assert 0.17 < alone < 0.33 and 0.17 < in_fours < 0.33, (alone, in_fours)


def test_a_batch_whose_outputs_cannot_be_counted_is_retried_alone() -> None:
    """Outputs with no length (a model answering None to a batch) fail the batch, not its callers:
    each request is retried alone instead of waiting for ever."""

    def predict(columns: dict[str, list[Any]]) -> Any:
        return None if len(columns["x"]) > 1 else list(columns["x"])

    batching = BatchingModel(FunctionModel(predict), BatchSettings(max_batch_size=8, max_wait_us=50_000))

    async def both() -> list[Any]:
        return list(await asyncio.wait_for(asyncio.gather(*(batching.apredict({"x": [x]}) for x in (1.0, 2.0))), 10))

    assert asyncio.run(both()) == [[1.0], [2.0]]
    assert (batching.batches, batching.retried_alone) == (1, 2)


def test_requests_naming_the_same_columns_in_another_order_are_not_merged() -> None:
    """A model taking columns by position (one unnamed tensor) reads each request's columns in its
    own order; merged in the first request's order, the second's values went to the wrong
    positions (found by review)."""
    by_position = FunctionModel(lambda columns: [list(row) for row in zip(*columns.values(), strict=True)])
    batching = BatchingModel(by_position, BatchSettings(max_batch_size=8, max_wait_us=50_000))

    async def together() -> list[Any]:
        return list(
            await asyncio.gather(batching.apredict({"a": [1], "b": [2]}), batching.apredict({"b": [3], "a": [4]}))
        )

    assert asyncio.run(together()) == [[[1, 2]], [[3, 4]]]
