"""Telemetry is a commutative monoid: replicas' counts add up to what one process would have counted."""

from __future__ import annotations

import itertools
import json
from bisect import bisect_right
from functools import reduce

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcanary.domain.telemetry import (
    LATENCY_EDGES_MS,
    SCORE_EDGES,
    RolloutTelemetry,
    Variant,
    VariantTelemetry,
    score_bucket,
)

# (latency in ms or None for an answer from the prediction cache, error, score or None, label or None)
Event = tuple[float | None, bool, float | None, int | None]

events = st.lists(
    st.tuples(
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=500_000.0, allow_nan=False)),
        st.booleans(),
        st.one_of(st.none(), st.floats(min_value=-0.5, max_value=1.5, allow_nan=False)),
        st.one_of(st.none(), st.sampled_from([0, 1])),
    ),
    max_size=40,
)


def _counted(batch: list[Event]) -> VariantTelemetry:
    telemetry = VariantTelemetry()
    for latency, error, score, label in batch:
        telemetry.observe(latency_ms=latency, error=error and latency is not None)
        if score is not None:
            bucket = telemetry.observe_score(score)
            if label is not None:
                telemetry.observe_label(bucket=bucket, label=label)
        elif label is not None:  # a prediction without a score (a class name): its label is still counted
            telemetry.unscored_labels += 1
    return telemetry


@given(events, events, events)
def test_merge_is_associative(a: list[Event], b: list[Event], c: list[Event]) -> None:
    x, y, z = _counted(a), _counted(b), _counted(c)
    assert x.merged(y).merged(z) == x.merged(y.merged(z))


@given(events, events)
def test_merge_is_commutative(a: list[Event], b: list[Event]) -> None:
    assert _counted(a).merged(_counted(b)) == _counted(b).merged(_counted(a))


@given(st.lists(st.sampled_from(["", "failed 5 times on gw-1", "failed 5 times on gw-2", "deadline on gw-3"])))
def test_the_breaker_reason_merged_does_not_depend_on_the_order(reasons: list[str]) -> None:
    # the store reads the gateways' rows in no set order: the rollback must name one reason whatever it is
    parts = [VariantTelemetry(breaker_trips=bool(reason), breaker_reason=reason) for reason in reasons]
    merged = {
        reduce(VariantTelemetry.merged, order, VariantTelemetry()).breaker_reason
        for order in itertools.islice(itertools.permutations(parts), 50)
    }
    assert merged == {min(filter(None, reasons), default="")}


@given(st.lists(events, max_size=5))
def test_merging_parts_equals_counting_everything_at_once(parts: list[list[Event]]) -> None:
    merged = reduce(VariantTelemetry.merged, (_counted(part) for part in parts), VariantTelemetry())
    assert merged == _counted([event for part in parts for event in part])


@given(events)
def test_empty_telemetry_is_the_identity(batch: list[Event]) -> None:
    counted = _counted(batch)
    assert counted.merged(VariantTelemetry()) == counted == VariantTelemetry().merged(counted)


def test_merge_leaves_its_operands_alone() -> None:
    a, b = _counted([(5.0, True, 0.3, 1)]), _counted([(7.0, False, 0.9, 0)])
    before = json.loads(json.dumps([a.to_json(), b.to_json()]))  # a deep copy
    a.merged(b)
    assert [a.to_json(), b.to_json()] == before


@given(events)
def test_json_round_trip(batch: list[Event]) -> None:
    counted = _counted(batch)
    assert VariantTelemetry.from_json(json.loads(json.dumps(counted.to_json()))) == counted
    assert VariantTelemetry.from_json(counted.to_json()) == counted


def test_a_json_copy_does_not_share_the_live_histograms() -> None:
    live = _counted([(5.0, False, 0.4, None)])
    copy = VariantTelemetry.from_json(live.to_json())
    live.observe(latency_ms=5.0)
    live.observe_score(0.4)
    assert copy.requests == 1
    assert sum(copy.latency_counts) == 1
    assert sum(copy.score_counts) == 1


def test_from_json_ignores_nothing_it_needs() -> None:
    data = _counted([(5.0, True, None, None)]).to_json()
    del data["errors"]
    with pytest.raises(KeyError):
        VariantTelemetry.from_json(data)


@pytest.mark.parametrize(
    "histogram", ["latency_counts", "score_counts", "positive_label_scores", "negative_label_scores"]
)
def test_merging_histograms_of_different_lengths_raises(histogram: str) -> None:
    short = VariantTelemetry()
    setattr(short, histogram, getattr(short, histogram)[:-1])
    with pytest.raises(ValueError, match=r"^histograms over different bucket edges cannot be merged$"):
        VariantTelemetry().merged(short)
    with pytest.raises(ValueError, match="different bucket edges"):
        short.merged(VariantTelemetry())


def test_latency_buckets_are_half_open_and_at_most_ten_percent_wide() -> None:
    assert LATENCY_EDGES_MS[0] == 0.05
    assert LATENCY_EDGES_MS[-1] >= 120_000.0
    ratios = [high / low for low, high in itertools.pairwise(LATENCY_EDGES_MS)]
    assert min(ratios) > 1.0999 and max(ratios) < 1.1001  # 1.1, give or take the edges' rounding to 6 places
    telemetry = VariantTelemetry()
    assert len(telemetry.latency_counts) == len(LATENCY_EDGES_MS) + 1
    telemetry.observe(latency_ms=LATENCY_EDGES_MS[10])  # on an edge: the bucket above it
    telemetry.observe(latency_ms=0.0)
    telemetry.observe(latency_ms=10_000_000.0, error=True)
    assert telemetry.latency_counts[11] == 1
    assert telemetry.latency_counts[0] == 1
    assert telemetry.latency_counts[-1] == 1
    assert (telemetry.requests, telemetry.errors, sum(telemetry.latency_counts)) == (3, 1, 3)


@pytest.mark.parametrize(
    ("score", "bucket"),
    [
        (-1.0, 0),
        (0.0, 0),
        (0.005, 0),
        (0.01, 1),
        (0.0999, 9),
        (0.1, 10),
        (0.5, 50),
        (0.98, 98),
        (0.99, 99),
        (1.0, 100),
        (7.0, 100),
    ],
)
def test_score_bucket(score: float, bucket: int) -> None:
    assert score_bucket(score) == bucket


@given(st.floats(min_value=-2.0, max_value=3.0, allow_nan=False))
def test_score_bucket_matches_the_edges(score: float) -> None:
    assert score_bucket(score) == bisect_right(SCORE_EDGES, score)
    assert 0 <= score_bucket(score) < len(SCORE_EDGES) + 1


def test_scores_and_labels() -> None:
    telemetry = VariantTelemetry()
    assert len(telemetry.score_counts) == 101
    high = telemetry.observe_score(0.93)
    low = telemetry.observe_score(0.12)
    telemetry.observe_label(bucket=high, label=1)
    telemetry.observe_label(bucket=low, label=0)
    telemetry.observe_label(bucket=low, label=1)
    assert (high, low) == (93, 12)
    assert telemetry.score_counts[93] == telemetry.score_counts[12] == 1
    assert telemetry.positive_label_scores[93] == telemetry.positive_label_scores[12] == 1
    assert telemetry.negative_label_scores[12] == 1
    assert telemetry.labels == 3
    assert telemetry.requests == 0  # scores are rows, requests are observed separately


def test_rollout_telemetry_by_variant() -> None:
    rollout = RolloutTelemetry()
    rollout.candidate.observe(latency_ms=1.0)
    assert rollout.of(Variant.CANDIDATE) is rollout.candidate
    assert rollout.of(Variant.BASELINE) is rollout.baseline
    assert (rollout.baseline.requests, rollout.candidate.requests) == (0, 1)
