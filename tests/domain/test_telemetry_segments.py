"""Per-segment counts and breaker trips in telemetry: mergeable across replicas, and read from rows
written before they existed."""

from __future__ import annotations

from modelcanary.domain.telemetry import RolloutTelemetry, VariantTelemetry, score_bucket


def _replica(segment: str, requests: int, errors: int) -> VariantTelemetry:
    counts = VariantTelemetry()
    for index in range(requests):
        error = index < errors
        counts.observe(latency_ms=2.0, error=error)
        counts.segment(segment).observe(latency_ms=2.0, error=error)
        counts.segment(segment).observe_score(0.7)
    return counts


def test_segments_merge_by_name_and_the_totals_hold_them_all() -> None:
    first, second = _replica("eu", 3, 1), _replica("us", 4, 0)
    second.segments["eu"] = _replica("eu", 2, 2).segments["eu"]
    total = first.merged(second)
    assert total.requests == 7
    assert {name: (c.requests, c.errors) for name, c in total.segments.items()} == {"eu": (5, 3), "us": (4, 0)}
    # merging made copies: the replicas' own counts did not move
    assert (first.segments["eu"].requests, second.segments["eu"].requests) == (3, 2)
    assert sum(total.segments["eu"].score_counts) == 5


def test_json_round_trip_and_rows_from_before_segments() -> None:
    counts = _replica("eu", 2, 1)
    counts.breaker_trips, counts.breaker_reason = 1, "down"
    assert VariantTelemetry.from_json(counts.to_json()) == counts
    old = counts.to_json()
    for key in ("segments", "breaker_trips", "breaker_reason"):
        del old[key]
    read = VariantTelemetry.from_json(old)
    assert (read.requests, read.segments, read.breaker_trips, read.breaker_reason) == (2, {}, 0, "")
    assert "segments" not in VariantTelemetry().to_json()  # no segments, no key: rows stay small


def test_breaker_trips_add_up_and_keep_a_reason() -> None:
    a, b = VariantTelemetry(), VariantTelemetry(breaker_trips=1, breaker_reason="gw-2 took it out")
    assert (a.merged(b).breaker_trips, a.merged(b).breaker_reason) == (1, "gw-2 took it out")
    assert b.merged(b).breaker_trips == 2


def test_by_segment_pairs_the_variants() -> None:
    telemetry = RolloutTelemetry(baseline=_replica("eu", 2, 0), candidate=_replica("us", 3, 3))
    telemetry.candidate.segment("eu").observe_label(bucket=score_bucket(0.2), label=1)
    paired = telemetry.by_segment()
    assert list(paired) == ["eu", "us"]
    assert (paired["eu"].baseline.requests, paired["eu"].candidate.requests) == (2, 0)
    assert paired["us"].candidate.summary()["error_rate"] == 1.0
    assert paired["eu"].candidate.summary()["accuracy"] == 0.0


def test_keys_add_up_over_gateways_and_segments_and_the_gateways_are_counted_once() -> None:
    """Each gateway counts the sticky keys it saw, in their segments too, and says it counts them
    (``key_gateways`` 1); summed over gateways, that is how many count them, in the totals and in
    the counts of some segments alike. Rows from before keys were counted read as none."""
    gateways = []
    for eu, us in ((3, 1), (2, 4)):
        counts = VariantTelemetry(keys=eu + us, key_gateways=1)
        counts.segment("eu").keys, counts.segment("us").keys = eu, us
        counts.segment("eu").requests, counts.segment("us").requests = eu, us
        counts.requests = eu + us
        gateways.append(counts)
    total = gateways[0].merged(gateways[1])
    assert (total.keys, total.key_gateways, total.segments["eu"].keys) == (10, 2, 5)
    within = total.within(["eu"])
    assert within is not None and (within.keys, within.key_gateways) == (5, 2)
    assert VariantTelemetry.from_json(total.to_json()) == total
    assert "keys" not in VariantTelemetry().to_json()
    old = total.to_json()
    del old["keys"], old["key_gateways"]
    assert (VariantTelemetry.from_json(old).keys, VariantTelemetry.from_json(old).key_gateways) == (0, 0)
