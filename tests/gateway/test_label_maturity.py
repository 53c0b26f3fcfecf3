"""Labels count once their prediction is the route's ``label_maturity_s`` old (the quality metrics'
``matureAfter``): where the delay depends on the outcome, labels counted as they come are the fast
outcomes only. The recorder's own join, on a hand-moved clock; the whole path (gateway recorder,
SQLite store, controller, sequential judge) is in tests/controller/test_label_maturity.py."""

from __future__ import annotations

from typing import Any

import pytest

from modelcanary.domain.telemetry import Variant
from modelcanary.gateway.recorder import Recorder


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _labels(recorder: Recorder) -> dict[Variant, int]:
    return {variant: counts.labels for _, variant, counts in recorder.changed()}


def test_a_label_counts_once_its_prediction_is_old_enough_and_not_before() -> None:
    clock = Clock()
    recorder = Recorder(clock=clock)
    young = recorder.record("r-1", Variant.CANDIDATE, latency_ms=1.0, error=False, scores=[0.9], mature_s=600.0)
    clock.now += 100.0
    assert recorder.label([(young[0], 1)]) == 1  # accepted now
    assert _labels(recorder) == {Variant.CANDIDATE: 0}  # not counted: its prediction is 100 s old
    clock.now += 499.0
    assert _labels(recorder) == {}
    clock.now += 1.0
    assert _labels(recorder) == {Variant.CANDIDATE: 1}  # 600 s after the prediction

    old = recorder.record("r-1", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.1], mature_s=600.0)
    clock.now += 700.0
    recorder.label([(old[0], 0)])
    assert _labels(recorder) == {Variant.BASELINE: 1}  # already old enough: at once
    with pytest.raises(Exception, match="unknown prediction id"):  # a waiting label is not taken twice
        recorder.label([(young[0], 1)])


def test_without_a_maturity_a_label_counts_at_once() -> None:
    recorder = Recorder(clock=Clock())
    ids = recorder.record("r-1", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.2, 0.3])
    recorder.label([(ids[0], 1), (ids[1], 0)])
    assert _labels(recorder) == {Variant.BASELINE: 2}


@pytest.mark.parametrize("copy_runs", ["before-the-label", "while-the-label-matures"])
def test_a_maturing_label_keeps_its_shadow_pair_past_the_lanes_keep(copy_runs: str) -> None:
    """The lane keeps a pair ``keep`` long (60 s here) for its label; a label waiting to mature
    takes its pair along, and one whose copy runs while it waits gets the pair then."""
    clock = Clock()
    recorder = Recorder(clock=clock)
    ids = recorder.record("r-1", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.2], mature_s=600.0)
    recorder.shadow_queued(ids, keep_s=60.0)

    def copy() -> None:
        recorder.shadow(
            "r-1", segment=None, prediction_ids=ids, baseline_scores=[0.2], candidate_scores=[0.9], keep_s=60.0
        )

    if copy_runs == "before-the-label":
        copy()
    recorder.label([(ids[0], 1)])
    if copy_runs == "while-the-label-matures":
        copy()
    first = {variant: counts for _, variant, counts in recorder.changed()}
    shadow = first[Variant.CANDIDATE].shadow
    assert shadow is not None and shadow.pairs == 1 and sum(shadow.paired_labels) == 0  # not yet
    clock.now += 600.0
    rows = {variant: counts for _, variant, counts in recorder.changed()}
    shadow = rows[Variant.CANDIDATE].shadow
    assert shadow is not None and sum(shadow.paired_labels) == 1
    assert rows[Variant.BASELINE].labels == 1


def test_labels_waiting_past_the_memory_bound_are_counted_unripe_never_dropped() -> None:
    """At most ``max_predictions`` labels wait (as many predictions are kept): past it the one
    nearest its time counts early, and is counted as such."""
    clock = Clock()
    recorder = Recorder(max_predictions=3, clock=clock)
    ids = []
    for _ in range(4):
        clock.now += 1.0
        ids += recorder.record("r-1", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.5], mature_s=600.0)
    recorder.label([(ids[1], 1), (ids[2], 0), (ids[3], 1)])  # ids[0] was forgotten: room for 3
    assert _labels(recorder) == {Variant.BASELINE: 0}
    clock.now += 1.0
    ids += recorder.record("r-1", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.5], mature_s=600.0)
    recorder.label([(ids[4], 0)])
    assert recorder.labels_counted_unripe == 1 and _labels(recorder) == {Variant.BASELINE: 1}
    clock.now += 600.0
    assert _labels(recorder) == {Variant.BASELINE: 4}


def test_the_gateway_holds_as_many_predictions_as_it_is_told(gateway_processes: Any, mlflow_registry: Any) -> None:
    """``--max-predictions``: for labels that come later than the default 200,000 predictions last."""
    import httpx

    base = gateway_processes.start("--endpoint", "fraud=models:/fraud/1", "--max-predictions", "2")
    rows = mlflow_registry.rows[:3]
    answer = httpx.post(f"{base}/v1/endpoints/fraud/invocations", json={"dataframe_records": rows}, timeout=10)
    first, *kept = answer.json()["prediction_ids"]
    assert httpx.post(f"{base}/v1/feedback", json={"prediction_id": first, "label": 1}, timeout=10).status_code == 404
    labels = {"labels": [{"prediction_id": each, "label": 0} for each in kept]}
    assert httpx.post(f"{base}/v1/feedback", json=labels, timeout=10).json()["accepted"] == 2
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert "modelcanary_forgotten_predictions_total 1.0" in metrics
