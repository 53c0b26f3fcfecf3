"""The prediction cache: LRU and TTL on a manual clock, and over real HTTP with a model that counts
the rows it is asked, hits in telemetry and in /metrics."""

from __future__ import annotations

import threading
from typing import Any

from modelcanary.domain.state import ModelVersion, Route
from modelcanary.domain.telemetry import Variant
from modelcanary.domain.traffic import Cache, CircuitBreaker, StickyKey
from modelcanary.engine.analysis import pair
from modelcanary.gateway.app import VARIANT_HEADER, Gateway
from modelcanary.gateway.cache import PredictionCache, cache_for


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ask(cache: PredictionCache, *values: int) -> list[int]:
    lookup = cache.lookup({"a": list(values)})
    assert lookup is not None
    return lookup.missing


def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache = PredictionCache(max_entries=10, ttl_s=5.0, clock=clock)
    lookup = cache.lookup({"a": [1]})
    assert lookup is not None and lookup.fill(["x"]) == ["x"]
    clock.now = 4.9
    assert _ask(cache, 1) == []
    clock.now = 5.1
    assert _ask(cache, 1) == [0]
    assert (cache.hits, cache.misses) == (1, 2)


def test_the_least_recently_used_goes_first() -> None:
    cache = PredictionCache(max_entries=2, ttl_s=60.0, clock=Clock())
    for value in (1, 2):
        lookup = cache.lookup({"a": [value]})
        assert lookup is not None
        lookup.fill([value * 10])
    assert _ask(cache, 1) == []  # 1 is now the most recently used
    lookup = cache.lookup({"a": [3]})
    assert lookup is not None
    lookup.fill([30])
    assert len(cache) == 2
    assert _ask(cache, 1, 3) == []
    assert _ask(cache, 2) == [0]  # evicted


def test_rows_are_keyed_on_names_and_values_whatever_the_column_order() -> None:
    cache = PredictionCache(max_entries=10, ttl_s=60.0)
    lookup = cache.lookup({"a": [1], "b": [2]})
    assert lookup is not None
    lookup.fill(["ab"])
    again = cache.lookup({"b": [2], "a": [1]})
    assert again is not None and again.outputs == ["ab"]
    other = cache.lookup({"a": [2], "b": [1]})
    assert other is not None and other.missing == [0]


def test_values_equal_in_python_but_of_another_type_are_another_row() -> None:
    """1 == 1.0 == True in Python, but a model may answer each its own (a long column given 1.0,
    a model that branches on the type): each is looked up as what it is."""
    cache = PredictionCache(max_entries=10, ttl_s=60.0)
    lookup = cache.lookup({"a": [1], "b": ["x"]})
    assert lookup is not None
    lookup.fill(["from 1"])
    assert _ask(cache, 1) == [0]  # another row: no column b
    for value in (1.0, True):
        other = cache.lookup({"a": [value], "b": ["x"]})
        assert other is not None and other.missing == [0], value
        other.fill([f"from {value!r}"])
    assert [cache.lookup({"a": [value], "b": ["x"]}).outputs for value in (1, 1.0, True)] == [  # type: ignore[union-attr]
        ["from 1"],
        ["from 1.0"],
        ["from True"],
    ]


def test_unhashable_rows_skip_the_cache() -> None:
    assert PredictionCache(max_entries=10, ttl_s=60.0).lookup({"a": [[1, 2]]}) is None


def test_a_cache_survives_a_routing_change_only_for_the_same_model_and_settings() -> None:
    one, two = ModelVersion(name="m", version="1"), ModelVersion(name="m", version="2")
    settings = Cache(max_entries=5, ttl=10.0, variants=["baseline"])
    cache = cache_for(settings, Variant.BASELINE, one, None)
    assert cache is not None and cache.model == one.uri
    assert cache_for(settings, Variant.BASELINE, one, cache) is cache
    assert cache_for(settings, Variant.BASELINE, two, cache) is not cache  # a promotion: another model
    assert cache_for(Cache(max_entries=6, ttl=10.0), Variant.BASELINE, one, cache) is not cache
    assert cache_for(settings, Variant.CANDIDATE, two, None) is None  # not a cached variant
    assert cache_for(None, Variant.BASELINE, one, cache) is None


def test_repeated_rows_are_answered_from_the_cache(
    serve: Any, store: Any, registry: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    asked: list[int] = []

    def counting(inputs: dict[str, list[Any]]) -> list[Any]:
        asked.append(len(inputs["amount"]))
        return [[1 - amount / 1e4, amount / 1e4] for amount in inputs["amount"]]

    store.put_route(
        Route(
            endpoint="fraud",
            baseline=registry.resolve("models:/fraud@champion"),
            candidate=registry.resolve("models:/fraud@challenger"),
            weight=100.0,
            rollout_id="r-cache",
            sticky=StickyKey(header="x-user-id"),
            cache=Cache(max_entries=100, ttl=600.0, variants=["candidate"]),
        )
    )
    running = serve.start(Gateway(routes=store, backend=with_candidate(counting), telemetry=store, source="gw-c"))
    rows = mlflow_registry.rows
    with running.client() as http:

        def predict(batch: list[dict[str, float]]) -> list[Any]:
            response = http.post(
                "/v1/endpoints/fraud/invocations", json={"dataframe_records": batch}, headers={"x-user-id": "u"}
            )
            assert response.status_code == 200 and response.headers[VARIANT_HEADER] == "candidate"
            return list(response.json()["predictions"])

        first = predict(rows[:1])
        assert [predict(rows[:1]) for _ in range(4)] == [first] * 4
        mixed = predict([rows[1], rows[0], rows[2]])
        assert mixed == [[1 - r["amount"] / 1e4, r["amount"] / 1e4] for r in (rows[1], rows[0], rows[2])]
        metrics = http.get("/metrics").text
    assert asked == [1, 2]  # the model saw row 0 once, then only rows 1 and 2
    running.flush()
    candidate = pair(store.read_telemetry("r-cache")).candidate
    assert (candidate.requests, candidate.cache_hits, candidate.cache_misses) == (6, 5, 3)
    assert candidate.cache_hit_rate == 5 / 8
    assert sum(candidate.score_counts) == 8  # every row served is scored, cached or not
    # four of the six came wholly from the cache: the latency and CPU time leave them out (no
    # model answered them), in the judge's telemetry and in /metrics alike; both count them as requests
    assert (sum(candidate.latency_counts), candidate.cpu_requests) == (2, 2)
    lane = 'endpoint="fraud",lane="live",variant="candidate"'
    assert f"modelcanary_cache_hits_total{{{lane}}} 5.0" in metrics
    assert f"modelcanary_cache_misses_total{{{lane}}} 3.0" in metrics
    assert f"modelcanary_predict_latency_seconds_count{{{lane}}} 2.0" in metrics
    assert f"modelcanary_requests_total{{{lane}}} 6.0" in metrics


def test_answers_from_the_cache_do_not_reset_the_breakers_count(
    serve: Any, store: Any, registry: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    """The candidate goes down after answering one popular row, which keeps being asked: its cached
    answers call no model, so they say nothing of its health, and three failures of rows it is asked
    (with cached answers between them) take it out all the same."""
    down = threading.Event()

    def goes_down(inputs: dict[str, list[Any]]) -> list[Any]:
        if down.is_set():
            raise RuntimeError("the candidate is down")
        return [[0.3, 0.7] for _ in inputs["amount"]]

    store.put_route(
        Route(
            endpoint="fraud",
            baseline=registry.resolve("models:/fraud@champion"),
            candidate=registry.resolve("models:/fraud@challenger"),
            weight=100.0,
            rollout_id="r-cache-breaker",
            breaker=CircuitBreaker(consecutive_failures=3),
            cache=Cache(max_entries=100, ttl=600.0, variants=["candidate"]),
        )
    )
    gateway = Gateway(routes=store, backend=with_candidate(goes_down), telemetry=store, source="gw-c")
    running = serve.start(gateway)
    popular, *others = mlflow_registry.rows[:4]
    with running.client() as http:

        def variant(row: dict[str, float]) -> str:
            response = http.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": [row]})
            assert response.status_code == 200, response.text
            return str(response.headers[VARIANT_HEADER])

        assert variant(popular) == "candidate"
        down.set()
        seen = [variant(row) for other in others for row in (popular, other)]
        assert seen == ["candidate", "baseline"] * 3
        assert variant(popular) == "baseline"  # out: not even its cache answers
    assert gateway.serving["fraud"].candidate is None
    running.flush()
    candidate = pair(store.read_telemetry("r-cache-breaker")).candidate
    assert (candidate.requests, candidate.errors, candidate.breaker_trips) == (7, 3, 1)
