"""The shadow lane over real HTTP: the candidate predicts copies of baseline-served requests off the
response path, its agreement with the real baseline and the paired comparison on labels reach the
store and the report per segment, and a full queue sheds shadow work, never live work."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from modelcanary.adapters.testing import FakeBackend, FakeRegistry, FunctionModel
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import start_rollout
from modelcanary.controller.report import rollout_report
from modelcanary.domain.phases import Phase
from modelcanary.domain.state import Route
from modelcanary.domain.traffic import CircuitBreaker, Shadow, StickyKey
from modelcanary.engine.analysis import pair
from modelcanary.gateway.app import VARIANT_HEADER, Gateway

from .support import wait_for

SPEC = """\
apiVersion: modelcanary/v1
kind: Rollout
spec:
  endpoint: fraud
  baseline: models:/fraud@champion
  candidate: models:/fraud@challenger
  traffic:
    stickyKey: {header: x-user-id}
    segments: [{name: eu, header: x-region, in: [eu-west]}]
    candidateSegments: [eu]
    shadow: {sample: 1.0, queue: 100, keep: 10m}
    steps: [{weight: 100, minRequests: 1000000, minDuration: 1h, maxDuration: 2h}]
  analysis:
    metrics: [{kind: error_rate}]
"""


def test_shadow_predictions_are_compared_with_the_baseline_and_joined_to_labels(
    serve: Any, store: Any, registry: Any, mlflow_registry: Any, pyfunc_backend: Any, with_candidate: Any
) -> None:
    def confident(inputs: dict[str, list[Any]]) -> list[Any]:
        return [[0.1, 0.9] for _ in inputs["amount"]]

    state = start_rollout(store, registry, SPEC, source="test", actor="test")
    Controller(store=store, registry=registry).tick()
    gateway = Gateway(routes=store, backend=with_candidate(confident), telemetry=store, source="gw-sh")
    running = serve.start(gateway)
    rows = mlflow_registry.rows[:12]
    baseline = pyfunc_backend.load(state.baseline)
    served: dict[str, tuple[str, float]] = {}  # prediction id -> (segment, the baseline's score)
    with running.client() as http:
        for who, row in enumerate(rows):
            region = "eu-west" if who < 4 else "us-east"
            response = http.post(
                "/v1/endpoints/fraud/invocations",
                json={"dataframe_records": [row]},
                headers={"x-user-id": f"u{who}", "x-region": region},
            )
            assert response.status_code == 200
            expected = "candidate" if region == "eu-west" else "baseline"
            assert response.headers[VARIANT_HEADER] == expected
            if expected == "baseline":  # only what the baseline served is copied to the shadow lane
                (prediction_id,) = response.json()["prediction_ids"]
                score = baseline.predict({name: [value] for name, value in row.items()})[0][1]
                served[prediction_id] = ("other", score)
        wait_for(lambda: gateway.shadow.done == 8, "eight shadow predictions", timeout=15.0)
        labels = [{"prediction_id": prediction_id, "label": 1} for prediction_id in served]
        assert http.post("/v1/feedback", json={"labels": labels}).json() == {"accepted": 8, "relayed": 0}
    running.flush()

    candidate = pair(store.read_telemetry(state.id)).candidate
    shadow = candidate.shadow
    assert shadow is not None
    assert candidate.requests == 4  # the live lane: eu only
    discordant = sum(score < 0.5 for _, score in served.values())  # the candidate always says 0.9
    assert (shadow.requests, shadow.errors, shadow.shed, shadow.pairs) == (8, 0, 0, 8)
    assert shadow.discordant == discordant
    # every label is 1: the candidate is right on all eight, the baseline where it scored >= 0.5
    assert shadow.paired_labels == [8 - discordant, 0, discordant, 0]
    assert set(shadow.segments) == {"other"} and shadow.segments["other"].pairs == 8

    report = rollout_report(store, state.id).to_json()["shadow"]
    assert report["pairs"] == 8 and report["discordant_rate"] == discordant / 8
    assert report["candidate_accuracy"] == 1.0
    assert report["baseline_accuracy"] == (8 - discordant) / 8
    mean = sum(0.9 - score for _, score in served.values()) / 8
    assert report["mean_score_difference"] == pytest.approx(mean, abs=1e-9)
    assert report["segments"]["other"]["labelled_pairs"] == 8


SHED_METRIC = 'modelcanary_shadow_shed_total{endpoint="fraud"}'


def test_a_full_shadow_queue_sheds_copies_and_never_holds_live_requests(
    serve: Any, store: Any, registry: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    """The candidate hangs until the test lets it go after every live response came back."""
    release = threading.Event()

    def hangs(inputs: dict[str, list[Any]]) -> list[Any]:
        release.wait(60)
        return [[0.5, 0.5] for _ in inputs["amount"]]

    store.put_route(
        Route(
            endpoint="fraud",
            baseline=registry.resolve("models:/fraud@champion"),
            candidate=registry.resolve("models:/fraud@challenger"),
            weight=0.0,  # shadow only: no live candidate traffic
            rollout_id="r-shed",
            sticky=StickyKey(header="x-user-id"),
            shadow=Shadow(sample=1.0, queue=1),
        )
    )
    gateway = Gateway(routes=store, backend=with_candidate(hangs), telemetry=store, source="gw-sh")
    running = serve.start(gateway)
    try:
        with running.client() as http:
            for who in range(6):
                response = http.post(
                    "/v1/endpoints/fraud/invocations",
                    json={"dataframe_records": mlflow_registry.rows[:1]},
                    headers={"x-user-id": f"u{who}"},
                )
                assert (response.status_code, response.headers[VARIANT_HEADER]) == (200, "baseline")
            metrics = http.get("/metrics").text
    finally:
        release.set()
    # one copy with the hung candidate, one in the queue of one, the others shed: four, or five when
    # the responses all came back while the first copy still waited for company (GATHER_S)
    [shed] = [float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(SHED_METRIC)]
    assert shed in (4.0, 5.0)
    wait_for(lambda: gateway.shadow.done == 6 - shed, "the copies that were not shed", timeout=15.0)
    running.flush()
    shadow = pair(store.read_telemetry("r-shed")).candidate.shadow
    assert shadow is not None
    assert (shadow.requests, shadow.shed) == (6 - shed, shed)


def test_a_shadow_copy_answered_short_is_a_failed_copy_in_telemetry_and_metrics_alike(
    serve: Any, store: Any, registry: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    """A candidate answering one output for two rows was a failed copy in the judge's telemetry
    but a successful one in /metrics."""

    def one_answer(inputs: dict[str, list[Any]]) -> list[Any]:
        return [[0.5, 0.5]]

    store.put_route(
        Route(
            endpoint="fraud",
            baseline=registry.resolve("models:/fraud@champion"),
            candidate=registry.resolve("models:/fraud@challenger"),
            weight=0.0,
            rollout_id="r-short",
            sticky=StickyKey(header="x-user-id"),
            shadow=Shadow(sample=1.0),
        )
    )
    gateway = Gateway(routes=store, backend=with_candidate(one_answer), telemetry=store, source="gw-sh")
    running = serve.start(gateway)
    with running.client() as http:
        for who in range(3):
            response = http.post(
                "/v1/endpoints/fraud/invocations",
                json={"dataframe_records": mlflow_registry.rows[:2]},
                headers={"x-user-id": f"u{who}"},
            )
            assert response.status_code == 200
        wait_for(lambda: gateway.shadow.done == 3, "three shadow copies", timeout=15.0)
        metrics = http.get("/metrics").text
    running.flush()
    shadow = pair(store.read_telemetry("r-short")).candidate.shadow
    assert shadow is not None and (shadow.requests, shadow.errors, shadow.pairs) == (3, 3, 0)
    assert 'modelcanary_errors_total{endpoint="fraud",lane="shadow",variant="candidate"} 3.0' in metrics


@pytest.mark.parametrize(
    ("case", "weight", "deadline_s", "waits_s"),
    [
        ("trusted-inline", 0.001, None, 0.0),
        ("with-a-deadline", 0.001, 1.0, 0.0),
        ("shadow-phase", 0.0, None, 0.0),
        ("waits-without-cpu", 0.001, None, 0.005),
    ],
)
def test_a_short_shadow_prediction_runs_on_the_loop_only_where_the_candidate_already_does(
    serve: Any, store: Any, case: str, weight: float, deadline_s: float | None, waits_s: float
) -> None:
    """Shadow copies of a candidate that runs on the loop's thread for live requests (it serves
    some, no deadline) and whose predictions are short run there too, once one has been timed. A
    candidate with a deadline, or in its shadow phase (it serves no one: a hang would stop every
    live request), always gets the thread; so does one that held the loop past 1 ms three times,
    though its CPU time is short (it waits on I/O: 5 ms here)."""
    threads: list[str] = []

    def candidate(columns: dict[str, list[Any]]) -> list[float]:
        threads.append(threading.current_thread().name)
        if waits_s:  # (a sleep of 0 lets the test's client thread take the interpreter for up to 5 ms)
            time.sleep(waits_s)
        return [0.5] * len(columns["x"])

    registry = FakeRegistry({"fraud": ["1", "2"]}, {("fraud", "champion"): "1", ("fraud", "challenger"): "2"})
    store.put_route(
        Route(
            endpoint="fraud",
            baseline=registry.resolve("models:/fraud@champion"),
            candidate=registry.resolve("models:/fraud@challenger"),
            weight=weight,
            rollout_id="r-inline",
            breaker=CircuitBreaker(consecutive_failures=3, deadline=deadline_s) if deadline_s else None,
            shadow=Shadow(sample=1.0),
        )
    )
    baseline = FunctionModel(lambda columns: [0.5] * len(columns["x"]))
    backend = FakeBackend({"fraud/1": baseline, "fraud/2": FunctionModel(candidate)})
    gateway = Gateway(routes=store, backend=backend, telemetry=store, source="gw-inline")
    running = serve.start(gateway)
    with running.client() as http:
        for sent in range(1, 21):
            response = http.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": [{"x": 1.0}]})
            assert response.status_code == 200
            wait_for(lambda: gateway.shadow.done == sent, "the copy's shadow prediction", timeout=10)  # noqa: B023
    on_thread = [name.startswith("modelcanary-shadow") for name in threads]
    assert len(threads) == 20  # every request's copy; none live at 0.001%
    assert on_thread[0]  # the first shadow prediction is timed on the thread
    if case == "trusted-inline":
        assert not any(on_thread[2:])
    elif case == "waits-without-cpu":
        inline = [index for index, threaded in enumerate(on_thread) if not threaded]
        assert len(inline) == 3 and all(on_thread[inline[-1] + 1 :])  # three strikes, then the thread for good
    else:
        assert all(on_thread)


@pytest.mark.parametrize("label_first", [False, True], ids=["label-after-copy", "label-while-copy-queued"])
def test_a_label_joins_the_shadow_pair_whether_it_comes_before_or_after_the_copy_runs(label_first: bool) -> None:
    """The lane runs copies only when the loop is idle, so a label may come while its copy still
    waits in the queue: it waits for the copy, and the labelled pair counts it either way."""
    from modelcanary.domain.telemetry import Variant
    from modelcanary.gateway.recorder import Recorder

    recorder = Recorder()
    ids = recorder.record("r-1", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.2, 0.3], segment="eu")
    recorder.shadow_queued(ids, keep_s=600.0)

    def copy_runs() -> None:
        recorder.shadow(
            "r-1",
            segment="eu",
            prediction_ids=ids,
            baseline_scores=[0.2, 0.3],
            candidate_scores=[0.9, 0.8],
            keep_s=600.0,
        )

    if not label_first:
        copy_runs()
    recorder.label([(ids[0], 1), (ids[1], 0)])
    if label_first:
        copy_runs()
    rows = {variant: counts for _, variant, counts in recorder.changed()}
    shadow = rows[Variant.CANDIDATE].shadow
    assert shadow is not None and shadow.pairs == 2
    assert sum(shadow.paired_labels) == 2 and sum(shadow.segments["eu"].paired_labels) == 2
    assert rows[Variant.BASELINE].labels == 2  # the live lane's join, as ever


@pytest.mark.parametrize("ripens_first", [False, True], ids=["copy-runs-first", "label-ripens-first"])
def test_a_label_waiting_to_mature_joins_its_pair_whether_it_ripens_before_or_after_the_copy_runs(
    ripens_first: bool,
) -> None:
    """With ``matureAfter``, a label that came early waits to mature; when the lane is backed up,
    it may ripen (at a flush) before its copy runs: it then waits for the copy, as a label that
    needed no maturing does (it was counted unpaired and the pair dropped)."""
    from modelcanary.domain.telemetry import Variant
    from modelcanary.gateway.recorder import Recorder

    now = [1000.0]
    recorder = Recorder(clock=lambda: now[0])
    ids = recorder.record("r-1", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.2], mature_s=5.0)
    recorder.shadow_queued(ids, keep_s=600.0)
    now[0] += 1.0
    recorder.label([(ids[0], 1)])  # too young to count yet
    now[0] += 5.0
    if ripens_first:
        recorder.changed()  # a flush: the label ripens, its copy still queued
    recorder.shadow(
        "r-1", segment=None, prediction_ids=ids, baseline_scores=[0.2], candidate_scores=[0.9], keep_s=600.0
    )
    rows = {variant: counts for _, variant, counts in recorder.changed()}
    shadow = rows[Variant.CANDIDATE].shadow
    assert shadow is not None and (shadow.pairs, sum(shadow.paired_labels)) == (1, 1)


@pytest.mark.parametrize("given_back", [False, True], ids=["counted", "relay-failed-and-labelled-again"])
def test_a_copy_that_runs_while_its_label_is_claimed_keeps_the_pair_for_it(given_back: bool) -> None:
    """A feedback request claims its own labels, then awaits the store while it relays the others
    (another replica's predictions); a copy finishing meanwhile must still keep its pair for them."""
    from modelcanary.domain.telemetry import Variant
    from modelcanary.gateway.recorder import Recorder

    recorder = Recorder()
    ids = recorder.record("r-1", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.2, 0.3], segment=None)
    recorder.shadow_queued(ids, keep_s=600.0)
    labels = [(ids[0], 1), (ids[1], 0)]
    claimed = recorder.take(labels)
    recorder.shadow(
        "r-1", segment=None, prediction_ids=ids, baseline_scores=[0.2, 0.3], candidate_scores=[0.9, 0.8], keep_s=600.0
    )
    if given_back:  # the relay failed (503): the client sends the labels again
        recorder.restore(claimed)
        recorder.label(labels)
    else:
        recorder.apply(claimed)
    shadow = {variant: counts for _, variant, counts in recorder.changed()}[Variant.CANDIDATE].shadow
    assert shadow is not None and shadow.pairs == 2 and sum(shadow.paired_labels) == 2


def test_a_label_waiting_for_a_copy_that_fails_is_not_kept() -> None:
    from modelcanary.domain.telemetry import Variant
    from modelcanary.gateway.recorder import Recorder

    recorder = Recorder()
    ids = recorder.record("r-1", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.2], segment=None)
    recorder.shadow_queued(ids, keep_s=600.0)
    recorder.label([(ids[0], 1)])  # before its copy runs: it waits for the copy
    recorder.shadow("r-1", segment=None, prediction_ids=ids, baseline_scores=[0.2], candidate_scores=None, keep_s=600.0)
    assert not recorder._early  # it held one of 200,000 places until newer ones pushed it out


def _two_endpoints(
    store: Any, release: threading.Event, *, queues: tuple[int, int] = (100, 100), deadline_a: float | None = None
) -> FakeBackend:
    """Routes for endpoints a and b, each with a shadow lane (queues of ``queues``), and their
    models: a's candidate hangs until ``release`` (with a breaker ``deadline_a`` if given), the
    others answer at once."""

    def hangs(columns: dict[str, list[Any]]) -> list[float]:
        release.wait(30)
        return [0.9] * len(columns["x"])

    def quick(columns: dict[str, list[Any]]) -> list[float]:
        return [0.4] * len(columns["x"])

    registry = FakeRegistry({"a": ["1", "2"], "b": ["1", "2"]}, {})
    for endpoint, queue in zip("ab", queues, strict=True):
        store.put_route(
            Route(
                endpoint=endpoint,
                baseline=registry.resolve(f"models:/{endpoint}/1"),
                candidate=registry.resolve(f"models:/{endpoint}/2"),
                rollout_id=f"r-{endpoint}",
                breaker=CircuitBreaker(deadline=deadline_a) if endpoint == "a" and deadline_a else None,
                shadow=Shadow(sample=1.0, queue=queue),
            )
        )
    models = {"a/1": quick, "a/2": hangs, "b/1": quick, "b/2": quick}
    return FakeBackend({ref: FunctionModel(model) for ref, model in models.items()})


def test_each_rollout_sheds_only_its_own_shadow_copies(serve: Any, store: Any) -> None:
    """Two endpoints, one lane: a candidate that hangs on one fills only its own rollout's queue,
    and the other's copies are queued, taken in turn, and predicted."""
    release = threading.Event()
    backend = _two_endpoints(store, release, queues=(1000, 5))
    gateway = Gateway(routes=store, backend=backend, telemetry=store, source="gw-two")
    running = serve.start(gateway)
    try:
        with running.client() as http:
            for endpoint, count in (("a", 10), ("b", 3)):
                for _ in range(count):
                    response = http.post(
                        f"/v1/endpoints/{endpoint}/invocations", json={"dataframe_records": [{"x": 1.0}]}
                    )
                    assert response.status_code == 200
            wait_for(lambda: len(gateway.shadow) == 9 + 3, "a's copies queued behind the hung one, and b's", timeout=10)
    finally:
        release.set()
    wait_for(lambda: gateway.shadow.done == 13, "every copy, the lane taking the rollouts in turn", timeout=15.0)
    running.flush()
    shadows = {endpoint: pair(store.read_telemetry(f"r-{endpoint}")).candidate.shadow for endpoint in "ab"}
    assert all(shadow is not None for shadow in shadows.values())
    assert [(s.requests, s.shed) for s in shadows.values() if s is not None] == [(10, 0), (3, 0)]


def _shadowing(
    serve: Any,
    store: Any,
    candidate: Callable[[dict[str, list[Any]]], list[float]] | FunctionModel,
    baseline: Callable[[dict[str, list[Any]]], list[float]] = lambda columns: [0.1] * len(columns["x"]),
    **route: Any,
) -> tuple[Gateway, Any]:
    """A gateway serving endpoint fraud (``baseline`` answering 0.1 unless given, ``candidate`` as
    given, a function or a model) with a 100% shadow lane (a queue of 100 copies unless ``shadow``
    is given), the rest of its route as given; and its running server."""
    registry = FakeRegistry({"fraud": ["1", "2"]}, {})
    store.put_route(
        Route(
            endpoint="fraud",
            baseline=registry.resolve("models:/fraud/1"),
            candidate=registry.resolve("models:/fraud/2"),
            shadow=route.pop("shadow", Shadow(sample=1.0, queue=100)),
            **route,
        )
    )
    candidate_model = candidate if isinstance(candidate, FunctionModel) else FunctionModel(candidate)
    backend = FakeBackend({"fraud/1": FunctionModel(baseline), "fraud/2": candidate_model})
    gateway = Gateway(routes=store, backend=backend, telemetry=store, source=f"gw-{route['rollout_id']}")
    return gateway, serve.start(gateway)


def test_copies_are_predicted_in_batches_and_a_failed_batch_is_retried_copy_by_copy(serve: Any, store: Any) -> None:
    """Copies that queued behind a busy call share the next; a batch holding one bad input is
    retried copy by copy, so that copy alone fails and the others are paired."""
    release = threading.Event()
    calls: list[list[float]] = []  # each shadow call's rows

    def candidate(columns: dict[str, list[Any]]) -> list[float]:
        calls.append(list(columns["x"]))
        release.wait(30)  # the first call holds the lane while the rest queue up
        if 13.0 in columns["x"]:
            raise ValueError("the candidate cannot take 13")
        return [0.9] * len(columns["x"])

    # shadow only (weight 0): its copies run on the lane's thread
    gateway, running = _shadowing(serve, store, candidate, rollout_id="r-batch", weight=0.0)
    try:
        with running.client() as http:
            for x in range(20):
                response = http.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": [{"x": float(x)}]})
                assert response.status_code == 200
            wait_for(lambda: len(calls) == 1 and len(gateway.shadow) == 19, "the copies queued", timeout=10)
    finally:
        release.set()
    wait_for(lambda: gateway.shadow.done == 20, "every copy", timeout=15.0)
    running.flush()
    shadow = pair(store.read_telemetry("r-batch")).candidate.shadow
    assert shadow is not None and (shadow.requests, shadow.errors, shadow.pairs) == (20, 1, 19)
    assert sorted(x for rows in calls if 13.0 not in rows or len(rows) == 1 for x in rows) == [
        float(x) for x in range(20)
    ]  # each copy's row predicted once, but for those of the failed batch, retried alone
    [failed] = [rows for rows in calls if 13.0 in rows and len(rows) > 1]
    assert calls[-len(failed) :] == [[x] for x in failed]
    batches = calls[1 : len(calls) - len(failed)]  # after the first call, before the retries
    assert sum(map(len, batches)) == 19 and len(batches) < 19  # the first call's time per row bounds a batch


def test_a_copy_is_predicted_with_its_requests_params_and_batched_only_with_copies_of_the_same(
    serve: Any, store: Any
) -> None:
    """A request's inference parameters go with its copy: the candidate predicts it as it would
    have answered the request, and a batch of copies shares one call only when they share params."""
    release = threading.Event()
    calls: list[tuple[Any, list[float]]] = []  # each shadow call's params and rows

    def candidate(columns: dict[str, list[Any]], params: Any) -> list[float]:
        calls.append((params, list(columns["x"])))
        release.wait(30)  # the first call holds the lane while the rest queue up
        threshold = (params or {}).get("threshold", 0.5)
        return [float(x > threshold) for x in columns["x"]]

    model = FunctionModel(candidate, takes_params=True)
    gateway, running = _shadowing(serve, store, model, rollout_id="r-params", weight=0.0)
    try:
        with running.client() as http:
            for x in range(20):  # the first ten without params, the others with
                body: dict[str, Any] = {"dataframe_records": [{"x": float(x)}]}
                if x >= 10:
                    body["params"] = {"threshold": 100.0}
                assert http.post("/v1/endpoints/fraud/invocations", json=body).status_code == 200
            wait_for(lambda: len(calls) == 1 and len(gateway.shadow) == 19, "the copies queued", timeout=10)
    finally:
        release.set()
    wait_for(lambda: gateway.shadow.done == 20, "every copy", timeout=15.0)
    assert sorted(x for _, rows in calls for x in rows) == [float(x) for x in range(20)]
    for params, rows in calls:
        assert {x >= 10 for x in rows} == {params == {"threshold": 100.0}}, (params, rows)
    assert len(calls) < 20  # batched, a run of copies with the same params at a time
    running.flush()
    shadow = pair(store.read_telemetry("r-params")).candidate.shadow
    assert shadow is not None and (shadow.requests, shadow.errors, shadow.pairs) == (20, 0, 20)


def test_a_request_the_baseline_failed_on_is_copied_so_the_lanes_error_rate_covers_the_same_traffic(
    serve: Any, store: Any
) -> None:
    """The lane's error rate is compared with the baseline's live one: a candidate failing on the
    inputs the baseline fails on, and on more, must not read better than the baseline because only
    the baseline's successes were copied. Its copy of a failed request pairs with nothing."""

    def candidate(columns: dict[str, list[Any]]) -> list[float]:
        if any(x < 0 or x >= 8 for x in columns["x"]):
            raise ValueError("the candidate cannot take negatives, nor 8 and up")
        return [0.9] * len(columns["x"])

    def baseline(columns: dict[str, list[Any]]) -> list[float]:
        if any(x < 0 for x in columns["x"]):
            raise ValueError("the baseline cannot take negatives")
        return [0.1] * len(columns["x"])

    gateway, running = _shadowing(serve, store, candidate, baseline, rollout_id="r-both-fail", weight=0.0)
    with running.client() as http:
        statuses = [
            http.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": [{"x": float(x)}]}).status_code
            for x in range(-2, 10)
        ]
    assert statuses == [500] * 2 + [200] * 10
    wait_for(lambda: gateway.shadow.done == 12, "a copy of every request", timeout=15.0)
    running.flush()
    both = pair(store.read_telemetry("r-both-fail"))
    assert (both.baseline.requests, both.baseline.errors) == (12, 2)
    shadow = both.candidate.shadow
    assert shadow is not None
    # the candidate failed on 4 of the same 12: 2 the baseline failed on too, and 8 and 9
    assert (shadow.requests, shadow.errors, shadow.pairs) == (12, 4, 8)


def test_a_candidate_failing_at_random_reads_its_own_error_rate_in_the_lane(serve: Any, store: Any) -> None:
    """Half the candidate's calls fail, whatever their input. A failed batch's copies are retried
    alone to find the input that broke it, but a copy must not need two failed calls to count as
    failed: after the first failed batch the lane calls the candidate copy by copy, so about half
    the copies fail (retried batches would have made it about a quarter)."""
    outcomes = random.Random(7)
    calls: list[int] = []  # each shadow call's rows

    def flaky(columns: dict[str, list[Any]]) -> list[float]:
        calls.append(len(columns["x"]))
        if len(calls) > 1 and outcomes.random() < 0.5:  # the first answers: the lane learns its time per row
            raise RuntimeError("the candidate's feature store timed out")
        return [0.9] * len(columns["x"])

    copies = 400
    # a queue for every copy: called one by one, the lane can fall 100 copies behind the requests
    # on a slow machine, and shed the rest (seen: 49 of 400)
    lane = Shadow(sample=1.0, queue=copies)
    gateway, running = _shadowing(serve, store, flaky, rollout_id="r-flaky", weight=0.0, shadow=lane)
    with running.client() as http:
        for x in range(copies):
            response = http.post("/v1/endpoints/fraud/invocations", json={"dataframe_records": [{"x": float(x)}]})
            assert response.status_code == 200
    wait_for(lambda: gateway.shadow.done == copies, "every copy", timeout=30.0)
    running.flush()
    shadow = pair(store.read_telemetry("r-flaky")).candidate.shadow
    assert shadow is not None and shadow.requests == copies
    assert any(rows > 1 for rows in calls)  # it did batch, until a batch failed
    # after the first failed batch and its retries, one call a copy: each fails with probability 1/2
    assert 0.4 < shadow.errors / copies < 0.6, (shadow.errors, calls[:5])


def test_copies_queued_when_the_breaker_trips_do_not_run_the_candidate_it_took_out(serve: Any, store: Any) -> None:
    """A copy held the serving its request saw; the trip swaps in a new one without the candidate,
    so every copy queued before it still ran the candidate the breaker took out."""
    release = threading.Event()
    calls: list[bool] = []  # per candidate call, whether it began after the trip (the test's release)

    def candidate(columns: dict[str, list[Any]]) -> list[float]:
        calls.append(release.is_set())
        if not threading.current_thread().name.startswith("modelcanary-shadow"):
            raise RuntimeError("the live candidate fails")
        release.wait(30)
        return [0.9] * len(columns["x"])

    gateway, running = _shadowing(
        serve,
        store,
        candidate,
        rollout_id="r-trip",
        weight=50.0,
        sticky=StickyKey(header="x-user-id"),
        breaker=CircuitBreaker(consecutive_failures=5),
    )
    try:
        with running.client() as http:
            user = 0
            while gateway.serving["fraud"].candidate is not None:  # until its 5th failure trips the breaker
                user += 1
                response = http.post(
                    "/v1/endpoints/fraud/invocations",
                    json={"dataframe_records": [{"x": 1.0}]},
                    headers={"x-user-id": f"u{user}"},
                )
                assert response.status_code == 200  # the baseline answers for the failing candidate
            assert len(gateway.shadow) >= 2  # copies of the baseline's answers, behind the one on the thread
    finally:
        release.set()
    wait_for(lambda: len(gateway.shadow) == 0, "the queue drained", timeout=10)
    time.sleep(0.2)  # a copy wrongly run would have run by now
    assert calls.count(True) == 0  # the copy on the thread when the breaker tripped began before it


def test_a_candidate_that_hangs_in_the_shadow_lane_fails_its_copy_at_its_deadline_and_stalls_no_other(
    serve: Any, store: Any
) -> None:
    """The lane ran every copy on one thread, with no deadline: a candidate that hung there stopped
    every other rollout's shadow lane (their copies queued, then shed) and was charged nothing."""
    release = threading.Event()
    backend = _two_endpoints(store, release, deadline_a=0.2)
    gateway = Gateway(routes=store, backend=backend, telemetry=store, source="gw-hang")
    running = serve.start(gateway)
    try:
        with running.client() as http:
            for endpoint in "abbb":
                response = http.post(f"/v1/endpoints/{endpoint}/invocations", json={"dataframe_records": [{"x": 1.0}]})
                assert response.status_code == 200
            # a's copy fails at its 0.2 s deadline, and b's run on a new thread, while a's call still hangs
            wait_for(lambda: gateway.shadow.done == 4, "every copy, a's failed", timeout=10)
            assert not release.is_set()
    finally:
        release.set()
    running.flush()
    lanes = {endpoint: pair(store.read_telemetry(f"r-{endpoint}")).candidate.shadow for endpoint in "ab"}
    assert [(lane.requests, lane.errors) for lane in lanes.values() if lane is not None] == [(1, 1), (3, 0)]


def test_the_mean_score_difference_is_the_differences_mean_and_older_rows_still_read() -> None:
    from modelcanary.domain.shadow import ShadowTelemetry

    lane = ShadowTelemetry()
    for score in (0.3, 0.7, 0.9):
        lane.pair(baseline=score, candidate=score)  # identical models
    assert lane.summary()["mean_score_difference"] == 0.0  # the buckets' centres read +0.01
    older = lane.to_json()
    del older["score_diff_sum"]  # a row a gateway of before wrote
    assert ShadowTelemetry.from_json(older).summary()["mean_score_difference"] == pytest.approx(0.01)
    assert ShadowTelemetry.from_json(lane.to_json()) == lane


SHADOW_PHASE = SPEC.replace("shadow: {sample: 1.0, queue: 100, keep: 10m}", "shadow: {sample: 1.0, duration: 1h}")


def test_a_candidate_that_fails_in_its_shadow_phase_is_rolled_back_before_serving_anyone(
    serve: Any, store: Any, registry: Any, mlflow_registry: Any, with_candidate: Any
) -> None:
    def broken(inputs: dict[str, list[Any]]) -> list[Any]:
        raise RuntimeError("a feature the candidate needs is missing")

    state = start_rollout(store, registry, SHADOW_PHASE, source="test", actor="test")
    controller = Controller(store=store, registry=registry)
    controller.tick()
    assert store.get(state.id)[0].phase is Phase.SHADOW
    gateway = Gateway(routes=store, backend=with_candidate(broken), telemetry=store, source="gw-fail")
    running = serve.start(gateway)
    rows = mlflow_registry.rows
    with running.client() as http:
        for burst in range(2):  # two of the controller's looks with traffic between them
            for who in range(150 * burst, 150 * (burst + 1)):
                response = http.post(
                    "/v1/endpoints/fraud/invocations",
                    json={"dataframe_records": [rows[who % len(rows)]]},
                    headers={"x-user-id": f"u{who}", "x-region": "eu-west"},
                )
                assert response.status_code == 200 and response.headers[VARIANT_HEADER] == "baseline"
            copied = 150 * (burst + 1)
            wait_for(lambda: gateway.shadow.done == copied, "the shadow predictions", timeout=30.0)  # noqa: B023
            running.flush()
            controller.tick()
            if store.get(state.id)[0].phase is Phase.ROLLED_BACK:  # at the first look, since the additive test
                break
    ended = store.get(state.id)[0]
    assert ended.phase is Phase.ROLLED_BACK, ended.reason
    assert ended.reason.startswith("rolled back: in shadow: error-rate failed"), ended.reason
    assert pair(store.read_telemetry(state.id)).candidate.requests == 0  # it never served anyone
