"""Labels behind a load balancer: a label may reach any gateway replica, and only the replica that
made the prediction holds what to join it to. Two real gateways on loopback share one store (SQLite
and PostgreSQL): a label sent to the other one is relayed through the store and counted once, by
the gateway that made the prediction."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.adapters.testing import FakeBackend, FunctionModel
from modelcanary.domain.errors import StoreError
from modelcanary.domain.state import ModelVersion, Route
from modelcanary.engine.analysis import pair
from modelcanary.gateway.app import Gateway, StaticRoutes

from .support import in_canary, predict_x, x_gateway


def _alone() -> Gateway:
    """A gateway with no store, serving fraud v1."""
    model = FunctionModel(lambda columns: [0.5] * len(columns["x"]))
    route = Route(endpoint="fraud", baseline=ModelVersion(name="fraud", version="1"))
    return Gateway(
        routes=StaticRoutes({"fraud": route}, None),
        backend=FakeBackend({"fraud/1": model}),
        telemetry=None,
        source="alone",
    )


def _labels(ids: list[str], label: int = 1) -> dict[str, Any]:
    return {"labels": [{"prediction_id": each, "label": label} for each in ids]}


def _relayed(running: Any) -> dict[str, float]:
    return {outcome: count.value for outcome, count in running.gateway.metrics.relayed_labels.items()}


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
def test_a_label_sent_to_another_replica_is_counted_once_by_the_one_that_made_the_prediction(
    store_url: str, serve: Any, long_rollout_spec: str
) -> None:
    store = SqlStore(store_url)
    state, _ = in_canary(store, long_rollout_spec)  # 50% candidate
    first, second = serve.start(x_gateway(store, "gw-1")), serve.start(x_gateway(store, "gw-2"))
    for running in (first, second):
        running.call(running.gateway.refresh())
    with first.client() as one, second.client() as two:
        made_by_first, made_by_second = predict_x(one, range(20)), predict_x(two, range(20, 25))

        # a batch of the other's ids and its own: its own are joined here, the rest relayed
        response = two.post("/v1/feedback", json=_labels(made_by_first[:12] + made_by_second))
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 17, "relayed": 12}
        # the rest straight to the first; one relayed id sent again through the second
        assert one.post("/v1/feedback", json=_labels(made_by_first[12:])).json() == {"accepted": 8, "relayed": 0}
        assert two.post("/v1/feedback", json=_labels(made_by_first[:1], 0)).json() == {"accepted": 1, "relayed": 1}
        # a made-up id of a gateway's form is relayed too: its issuer never takes it, and it expires
        assert two.post("/v1/feedback", json=_labels(["0123456789-ff"])).json()["relayed"] == 1

        second.flush()
        first.flush()  # takes the relayed labels, joins them, writes them with its own counts
        total = pair(store.read_telemetry(state.id))
        assert total.baseline.labels + total.candidate.labels == 25  # each prediction labelled once
        assert total.baseline.requests + total.candidate.requests == 25
        assert _relayed(second) == {"sent": 14, "joined": 0, "unmatched": 0, "expired": 0}
        assert _relayed(first) == {"sent": 0, "joined": 12, "unmatched": 1, "expired": 0}  # the second label of one id
        metrics = one.get("/metrics").text
        assert 'modelcanary_relayed_labels_total{outcome="joined"} 12.0' in metrics

        # one the first never took (its issuer is gone) expires
        assert store.expire_labels(float("inf")) == 1
        first.flush()
        assert pair(store.read_telemetry(state.id)).candidate.labels == total.candidate.labels
    store.close()


def test_without_a_store_another_replicas_id_is_refused_and_the_batch_keeps_nothing(serve: Any) -> None:
    running = serve.start(_alone())
    with running.client() as client:
        mine = predict_x(client, range(2))
        refused = client.post("/v1/feedback", json=_labels([mine[0], "0123456789-1a"]))
        assert refused.status_code == 404
        assert refused.json()["field"] == "labels[1].prediction_id"
        assert "no store to pass the label on" in refused.json()["error"]
        made_up = client.post("/v1/feedback", json=_labels(["0123456789"]))
        assert (made_up.status_code, made_up.json()["field"]) == (404, "labels[0].prediction_id")
        assert "not an id a gateway issued" in made_up.json()["error"]
        # all or nothing: the refused batch's own id is still there to label
        assert client.post("/v1/feedback", json=_labels(mine)).json() == {"accepted": 2, "relayed": 0}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_refusals_name_the_item_where_it_stood_in_the_batch(store_url: str, serve: Any, long_rollout_spec: str) -> None:
    store = SqlStore(store_url)
    in_canary(store, long_rollout_spec)
    running = serve.start(x_gateway(store, "gw"))
    with running.client() as client:
        (own,) = predict_x(client, range(1))
        unknown_own = own.split("-")[0] + "-fffffff"
        for batch, where, why in (
            (["abcdefabcd-1", unknown_own], 1, "never issued here"),  # positions count the relayed ones too
            (["abcdefabcd-1", "abcdefabcd-1"], 1, "labelled twice in this batch"),
            ([own, "abcdefabcd-" + "f" * 17], 1, "not an id a gateway issued"),  # longer than any counter
        ):
            refused = client.post("/v1/feedback", json=_labels(batch))
            assert refused.status_code == 404, refused.text
            assert refused.json()["field"] == f"labels[{where}].prediction_id"
            assert why in refused.json()["error"]
        assert client.post("/v1/feedback", json=_labels([own])).json() == {"accepted": 1, "relayed": 0}
    assert store.take_labels("abcdefabcd") == []  # nothing of the refused batches was relayed
    store.close()


class _SlowTake(SqlStore):
    """The real store, answering ``take_labels`` only a while after its DELETE committed."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.deleted = threading.Event()  # set once a take's DELETE committed, before it returns

    def take_labels(self, *issuers: str) -> list[tuple[str, int]]:
        taken = super().take_labels(*issuers)
        if taken:
            self.deleted.set()
        time.sleep(0.3)
        return taken


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_flush_cancelled_mid_take_loses_no_label(store_url: str, long_rollout_spec: str) -> None:
    """At shutdown the app cancels the gateway's loop, possibly while a take is in the store; the
    labels it deleted there are still joined, by the last flush."""
    store = _SlowTake(store_url)
    state, _ = in_canary(store, long_rollout_spec)
    gateway = x_gateway(store, "gw")

    async def scenario() -> None:
        await gateway.refresh()
        serving = gateway.serving["fraud"]
        _, _, ids = await gateway._predict(serving, {}, {"x": [1.0, 2.0]}, "inputs")
        store.relay_labels("other", [(gateway.recorder.issuer, each, 1) for each in ids])
        flush = asyncio.get_running_loop().create_task(gateway.flush())
        # the take has deleted the rows and not returned yet
        assert await asyncio.to_thread(store.deleted.wait, 30)
        flush.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flush
        await gateway.flush()  # the last flush, as the app's shutdown runs it

    asyncio.run(scenario())
    assert gateway.metrics.relayed_labels["joined"].value == 2
    total = pair(store.read_telemetry(state.id))
    assert total.baseline.labels + total.candidate.labels == 2
    store.close()


class _FailingWrites(SqlStore):
    """The real store whose first ``fail`` telemetry writes fail, the first of them only once
    ``release`` is set (the store dropping the connection partway through a write)."""

    def __init__(self, url: str, fail: int) -> None:
        super().__init__(url)
        self.fail, self.writes, self.release = fail, 0, threading.Event()

    def write_telemetry(self, source: str, rows: Any, **kwargs: Any) -> None:
        self.writes += 1
        if self.writes == 1:
            self.release.wait(30)
        if self.writes <= self.fail:
            raise StoreError("the connection to the store was lost")
        super().write_telemetry(source, rows, **kwargs)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_flush_cancelled_mid_write_keeps_its_counts_for_the_last_flush(
    store_url: str, long_rollout_spec: str
) -> None:
    """Shutdown cancels the gateway's loop, possibly while a write is in the store; that write then
    fails. The cancelled flush waits for it and keeps its rows, so the last flush writes them, and
    keeps trying while the store does not take them."""
    store = _FailingWrites(store_url, fail=3)
    state, _ = in_canary(store, long_rollout_spec)
    gateway = x_gateway(store, "gw")

    async def scenario() -> None:
        await gateway.refresh()
        serving = gateway.serving["fraud"]
        _, _, ids = await gateway._predict(serving, {}, {"x": [1.0, 2.0]}, "inputs")
        gateway.recorder.label([(each, 1) for each in ids])
        flush = asyncio.get_running_loop().create_task(gateway.flush())
        while store.writes == 0:
            await asyncio.sleep(0.01)
        flush.cancel()
        store.release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await flush
        await gateway.last_flush(within_s=5)  # writes 2 and 3 fail as well, the 4th lands

    asyncio.run(scenario())
    assert store.writes == 4
    total = pair(store.read_telemetry(state.id))
    assert (total.baseline.requests + total.candidate.requests, total.baseline.labels + total.candidate.labels) == (
        1,
        2,
    )
    store.close()


class _SlowRelay(SqlStore):
    def relay_labels(self, via: str, items: Any) -> None:
        time.sleep(0.3)
        super().relay_labels(via, items)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_feedback_cancelled_while_relaying_gives_its_own_labels_back(store_url: str, long_rollout_spec: str) -> None:
    """A feedback request cancelled (a shutdown) while the other replica's labels go to the store
    was never answered: its own labels are not joined, and a retry finds them again."""
    store = _SlowRelay(store_url)
    in_canary(store, long_rollout_spec)
    gateway = x_gateway(store, "gw")

    async def scenario() -> dict[str, int]:
        await gateway.refresh()
        _, _, (own,) = await gateway._predict(gateway.serving["fraud"], {}, {"x": [1.0]}, "inputs")
        body = _labels([own, "0123456789-1"])
        accepting = asyncio.get_running_loop().create_task(gateway.labels.accept(body))
        await asyncio.sleep(0.1)
        accepting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await accepting
        return await gateway.labels.accept(body)

    assert asyncio.run(scenario()) == {"accepted": 2, "relayed": 1}
    assert sum(counts.labels for _, _, counts in gateway.recorder.changed()) == 1  # joined once
    store.close()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_labels_of_predictions_without_a_score_are_counted_not_dropped(
    store_url: str, serve: Any, long_rollout_spec: str
) -> None:
    """A model answering class names has no score to read accuracy from: its labels are counted
    as unscored (the store holds as many as /metrics), and quality says why it has no data."""
    from modelcanary.domain.judgement import Look
    from modelcanary.domain.metrics import Analysis
    from modelcanary.judges import sequential

    store = SqlStore(store_url)
    state, _ = in_canary(store, long_rollout_spec)
    names = FunctionModel(lambda columns: ["fraud"] * len(columns["x"]))
    gateway = Gateway(
        routes=store, backend=FakeBackend({"fraud/1": names, "fraud/2": names}), telemetry=store, source="gw"
    )
    running = serve.start(gateway)
    running.call(gateway.refresh())
    with running.client() as client:
        ids = predict_x(client, range(6))
        assert client.post("/v1/feedback", json=_labels(ids)).json() == {"accepted": 6, "relayed": 0}
    running.call(gateway.flush())
    total = pair(store.read_telemetry(state.id))
    assert (
        total.baseline.labels + total.candidate.labels,
        total.baseline.unscored_labels + total.candidate.unscored_labels,
    ) == (0, 6)
    analysis = Analysis.model_validate({"metrics": [{"kind": "quality", "name": "accuracy"}]})
    judgement, _ = sequential.judge(analysis, Look(60.0, 50, total), {})
    (quality,) = judgement.metrics
    assert (
        "no data: 0 candidate and 0 baseline labels, 100 needed of each; 6 more for predictions without a score"
        in quality.reason
    )
    store.close()
