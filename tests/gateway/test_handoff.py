"""A gateway that stops hands what labels may still join to (its predictions, its shadow pairs, the
labels waiting to mature) to the store, and the next gateway to flush adopts it: a label is not lost
because the process that made its prediction was restarted. The recorders' hand-off on hand-moved
clocks, then the whole path with real ``modelcanary gateway`` processes stopped by SIGTERM, on
SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import start_rollout
from modelcanary.domain.telemetry import Variant, VariantTelemetry
from modelcanary.engine.analysis import pair
from modelcanary.gateway.recorder import Recorder


class Clock:
    """A monotonic clock moved by hand; each process's starts somewhere else."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Sink:
    """An endpoint's label counter for one variant."""

    endpoint: str
    labels: list[int] = field(default_factory=list)

    def label(self, label: int) -> None:
        self.labels.append(label)


def _rows(recorder: Recorder) -> dict[Variant, VariantTelemetry]:
    return {variant: counts for _, variant, counts in recorder.changed()}


def test_the_adopter_joins_the_stopped_ones_labels_waiting_ones_when_they_mature_and_pairs_too() -> None:
    stopped_clock, adopter_clock = Clock(1_000.0), Clock(987_654.0)
    stopped, adopter = Recorder(clock=stopped_clock), Recorder(clock=adopter_clock)
    sink = Sink("fraud")
    ids = stopped.record(
        "r-1", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.2, 0.7, 0.4], sink=sink, mature_s=600.0
    )
    stopped.shadow_queued(ids[:1], keep_s=3_600.0)
    stopped.shadow(
        "r-1", segment=None, prediction_ids=ids[:1], baseline_scores=[0.2], candidate_scores=[0.9], keep_s=3_600.0
    )
    stopped_clock.now += 100.0
    stopped.label([(ids[1], 1)])  # accepted, waiting 500 s more to count
    assert _rows(stopped)[Variant.BASELINE].labels == 0

    handed = orjson.loads(orjson.dumps(stopped.hand_off()))  # through the store, as JSON
    assert len(handed) == 3  # two predictions unlabelled, one label waiting
    handed += handed  # a retried write that had landed: adopted twice, counted once
    sinks: dict[tuple[str, Variant], Sink] = {}
    issuers = adopter.adopt(handed, lambda endpoint, variant: sinks.setdefault((endpoint, variant), Sink(endpoint)))
    assert issuers == {stopped.issuer} and adopter.adopted_predictions == 6
    assert stopped.issuer not in adopter.issuers  # until all of the hand-off is adopted: relayed meanwhile
    adopter.join_for(issuers)
    assert stopped.issuer in adopter.issuers
    adopter.label([(ids[0], 0), (ids[2], 1)])
    with pytest.raises(Exception, match="unknown prediction id"):  # the waiting label's prediction is labelled
        adopter.label([(ids[1], 0)])
    assert sinks[("fraud", Variant.BASELINE)].labels == [0, 1]

    adopter_clock.now += 499.0  # 599 s after the predictions, on the adopter's clock
    early = _rows(adopter)
    assert Variant.BASELINE not in early or early[Variant.BASELINE].labels == 0
    adopter_clock.now += 1.0
    rows = _rows(adopter)
    assert rows[Variant.BASELINE].labels == 3 and rows[Variant.BASELINE].unscored_labels == 0
    shadow = rows[Variant.CANDIDATE].shadow
    assert shadow is not None and sum(shadow.paired_labels) == 1  # ids[0]'s pair came along


def test_adopted_predictions_are_forgotten_before_the_adopters_own() -> None:
    stopped, adopter = Recorder(), Recorder(max_predictions=3)
    theirs = stopped.record("r-1", Variant.CANDIDATE, latency_ms=1.0, error=False, scores=[0.1, 0.2])
    mine = adopter.record("r-1", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.3])
    adopter.join_for(adopter.adopt(stopped.hand_off(), lambda endpoint, variant: None))
    mine += adopter.record("r-1", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.4])
    assert adopter.forgotten_predictions == 1
    with pytest.raises(Exception, match="unknown prediction id"):
        adopter.label([(theirs[0], 1)])  # the oldest adopted one went first
    assert adopter.label([(theirs[1], 1), *((each, 0) for each in mine)]) == 3


# -- real processes --------------------------------------------------------------------------------


def _with_maturity(spec: str) -> str:
    """The 50% rollout of ``long_rollout_spec``, judged on accuracy too, with labels maturing 3 s."""
    quality = "{kind: quality, measure: accuracy, minLabels: 1000, matureAfter: 3s}"
    matured = spec.replace("metrics: [{kind: error_rate}]", f"metrics: [{{kind: error_rate}}, {quality}]")
    assert matured != spec
    return matured


def _labels(ids: list[str], label: int = 1) -> dict[str, Any]:
    return {"labels": [{"prediction_id": each, "label": label} for each in ids]}


def _metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rpartition(" ")[2])
    raise AssertionError(f"{base} exposes no {name}")


def _until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
def test_labels_for_a_restarted_gateways_predictions_are_counted_none_lost(
    store_url: str, mlflow_registry: Any, gateway_processes: Any, long_rollout_spec: str
) -> None:
    """Three replicas; one makes 20 predictions, takes 5 labels (waiting 3 s to mature) and is
    stopped. One of the others adopts all of it; the third relays it the labels of 10, and it takes
    5 itself: all 20 count, as they would have without the restart."""
    store = SqlStore(store_url)
    registry = MlflowRegistry(mlflow_registry.uri)
    state = start_rollout(store, registry, _with_maturity(long_rollout_spec), source="test", actor="test")
    Controller(store=store, registry=registry, holder="test").tick()  # canary at 50%
    with ThreadPoolExecutor(3) as pool:
        stopping, *others = pool.map(lambda _: gateway_processes.start("--store", store_url), range(3))

    made = httpx.post(
        f"{stopping}/v1/endpoints/fraud/invocations", json={"dataframe_records": mlflow_registry.rows[:20]}, timeout=10
    )
    ids = made.json()["prediction_ids"]
    assert len(ids) == 20
    assert httpx.post(f"{stopping}/v1/feedback", json=_labels(ids[:5]), timeout=10).json() == {
        "accepted": 5,
        "relayed": 0,
    }
    assert gateway_processes.stop(stopping) == -signal.SIGTERM  # after the last flush and the hand-off

    def adopted() -> list[float]:
        return [_metric(base, "modelcanary_adopted_predictions_total") for base in others]

    _until(lambda: sorted(adopted()) == [0, 20], "one replica to adopt it all")
    adopter, relayer = others if adopted()[0] else others[::-1]
    assert httpx.post(f"{relayer}/v1/feedback", json=_labels(ids[5:15], 0), timeout=10).json() == {
        "accepted": 10,
        "relayed": 10,  # the adopter takes them from the store
    }
    assert httpx.post(f"{adopter}/v1/feedback", json=_labels(ids[15:]), timeout=10).json() == {
        "accepted": 5,
        "relayed": 0,  # its own now
    }

    def labels() -> int:
        total = pair(store.read_telemetry(state.id))
        return total.baseline.labels + total.candidate.labels

    _until(lambda: labels() == 20, "all 20 labels to count")
    assert _metric(adopter, 'modelcanary_relayed_labels_total{outcome="joined"}') == 10
    assert _metric(adopter, 'modelcanary_relayed_labels_total{outcome="unmatched"}') == 0
    time.sleep(1.5)  # a second flush of each: nothing counted twice
    assert labels() == 20
    for base in others:  # before the store goes
        gateway_processes.stop(base)
    store.close()
