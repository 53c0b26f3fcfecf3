"""The spec's data-plane settings (circuit breaker and deadline): typed values, and refusals that
name the field and its YAML line."""

from __future__ import annotations

import pytest

from modelcanary.domain.errors import SpecError
from modelcanary.domain.spec import load_spec
from modelcanary.domain.traffic import Batching, CircuitBreaker

BASE = """\
apiVersion: modelcanary/v1
kind: Rollout
spec:
  endpoint: fraud
  baseline: models:/fraud@champion
  candidate: models:/fraud/2
  traffic:
    steps: [{weight: 5}]
TRAFFIC
  analysis:
    metrics: [{kind: error_rate}]
"""
#  7 traffic  8 steps  9 the first line put in for TRAFFIC


def _spec(traffic: str) -> str:
    return BASE.replace("TRAFFIC\n", traffic)


def _problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        load_spec(text, source="rollout.yaml")
    return caught.value.problems


def test_the_breaker_is_on_by_default_with_no_deadline() -> None:
    traffic = load_spec(_spec("")).spec.traffic
    assert traffic.circuit_breaker == CircuitBreaker(consecutive_failures=5, deadline=None)


def test_breaker_settings() -> None:
    text = _spec("    circuitBreaker:\n      consecutiveFailures: 3\n      deadline: 250ms\n")
    assert load_spec(text).spec.traffic.circuit_breaker == CircuitBreaker(consecutive_failures=3, deadline=0.25)


@pytest.mark.parametrize(
    ("lines", "where", "message"),
    [
        (
            "    circuitBreaker:\n      consecutiveFailures: 0\n",
            "spec.traffic.circuitBreaker.consecutiveFailures (line 10)",
            "Input should be greater than or equal to 1",
        ),
        (
            "    circuitBreaker:\n      deadline: soon\n",
            "spec.traffic.circuitBreaker.deadline (line 10)",
            "Value error, 'soon' is not a duration; write e.g. 30s, 5m, 1h or 250ms",
        ),
        (  # the field's own line, not its object's
            "    circuitBreaker:\n      deadline: 0s\n",
            "spec.traffic.circuitBreaker.deadline (line 10)",
            "Input should be greater than 0",
        ),
        (
            "    circuitBreaker:\n      deadline: .inf\n",
            "spec.traffic.circuitBreaker.deadline (line 10)",
            "Value error, inf is too long a duration: give a finite one, e.g. 30s, 5m or 1h",
        ),
        (
            "    circuitBreaker:\n      failures: 3\n",
            "spec.traffic.circuitBreaker.failures (line 10)",
            "Extra inputs are not permitted",
        ),
    ],
)
def test_bad_breaker_settings_name_field_and_line(lines: str, where: str, message: str) -> None:
    assert _problems(_spec(lines)) == [(where, message)]


SEGMENTS = """\
    segments:
      - {name: eu, header: x-region, in: [eu-west, eu-central]}
      - {name: idle, field: velocity, in: ["0.0"]}
    candidateSegments: [eu, other]
"""


def test_segments_and_the_segments_that_may_see_the_candidate() -> None:
    traffic = load_spec(_spec(SEGMENTS)).spec.traffic
    assert [(s.name, s.header, s.field, s.values) for s in traffic.segments] == [
        ("eu", "x-region", None, ["eu-west", "eu-central"]),
        ("idle", None, "velocity", ["0.0"]),
    ]
    assert traffic.candidate_segments == ["eu", "other"]
    # and they survive the JSON the store keeps of a validated spec
    spec = load_spec(_spec(SEGMENTS))
    assert type(spec).model_validate_json(spec.model_dump_json(by_alias=True)) == spec


def test_no_segments_by_default_and_every_segment_sees_the_candidate() -> None:
    traffic = load_spec(_spec("")).spec.traffic
    assert (traffic.segments, traffic.candidate_segments) == ([], None)


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        (
            "candidateSegments: [eu, other]",
            "candidateSegments: [eu, us]",
            "spec.traffic.candidateSegments (line 12)",
            "Value error, unknown segment(s) us; defined: eu, idle, other",
        ),
        (
            "name: idle,",
            "name: eu,",
            "spec.traffic.segments (line 9)",
            "Value error, segment names must be unique; repeated: eu",
        ),
        (
            "{name: eu, header: x-region,",
            "{name: eu, header: x-region, field: region,",
            "spec.traffic.segments[0] (line 10)",
            "Value error, give exactly one of header or field",
        ),
        (
            "name: idle,",
            "name: other,",
            "spec.traffic.segments[1].name (line 11)",
            "Value error, 'other' is the segment of requests no rule matches; name this one otherwise",
        ),
        (
            ' in: ["0.0"]}',
            " in: []}",
            "spec.traffic.segments[1].in (line 11)",
            "List should have at least 1 item after validation, not 0",
        ),
        (
            "name: eu,",
            "name: 'e u',",
            "spec.traffic.segments[0].name (line 10)",
            "String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.-]*$'",
        ),
    ],
)
def test_bad_segments_name_field_and_line(old: str, new: str, where: str, message: str) -> None:
    assert _problems(_spec(SEGMENTS.replace(old, new))) == [(where, message)]


def test_cache_settings() -> None:
    assert load_spec(_spec("")).spec.traffic.cache is None
    text = _spec("    cache: {maxEntries: 500, ttl: 2m, variants: [candidate]}\n")
    cache = load_spec(text).spec.traffic.cache
    assert cache is not None and (cache.max_entries, cache.ttl, cache.variants) == (500, 120.0, ["candidate"])
    default = load_spec(_spec("    cache: {}\n")).spec.traffic.cache
    assert default is not None and (default.max_entries, default.ttl, default.variants) == (
        10_000,
        60.0,
        ["baseline", "candidate"],
    )


@pytest.mark.parametrize(
    ("lines", "where", "message"),
    [
        (
            "    cache:\n      maxEntries: 0\n",
            "spec.traffic.cache.maxEntries (line 10)",
            "Input should be greater than or equal to 1",
        ),
        (  # the field's own line, not its object's
            "    cache:\n      maxEntries: 5\n      ttl: 0s\n",
            "spec.traffic.cache.ttl (line 11)",
            "Input should be greater than 0",
        ),
        (
            "    cache:\n      variants: [baseline, baseline]\n",
            "spec.traffic.cache.variants (line 10)",
            "Value error, each name once; repeated: baseline",
        ),
        (
            "    cache:\n      variants: [shadow]\n",
            "spec.traffic.cache.variants[0] (line 10)",
            "Input should be 'baseline' or 'candidate'",
        ),
    ],
)
def test_bad_cache_settings_name_field_and_line(lines: str, where: str, message: str) -> None:
    assert _problems(_spec(lines)) == [(where, message)]


def test_batching_settings() -> None:
    assert load_spec(_spec("")).spec.traffic.batching is None
    text = _spec("    batching: {maxBatchSize: 32, maxWaitUs: 2000, variants: [candidate]}\n")
    batching = load_spec(text).spec.traffic.batching
    assert batching == Batching(max_batch_size=32, max_wait_us=2000, variants=["candidate"])
    assert load_spec(_spec("    batching: {}\n")).spec.traffic.batching == Batching(
        max_batch_size=64, max_wait_us=500, variants=["baseline", "candidate"]
    )


@pytest.mark.parametrize(
    ("lines", "where", "message"),
    [
        (
            "    batching:\n      maxBatchSize: 0\n",
            "spec.traffic.batching.maxBatchSize (line 10)",
            "Input should be greater than or equal to 1",
        ),
        (
            "    batching:\n      maxWaitUs: -1\n",
            "spec.traffic.batching.maxWaitUs (line 10)",
            "Input should be greater than or equal to 0",
        ),
        (
            "    batching:\n      maxWait: 2ms\n",
            "spec.traffic.batching.maxWait (line 10)",
            "Extra inputs are not permitted",
        ),
    ],
)
def test_bad_batching_settings_name_field_and_line(lines: str, where: str, message: str) -> None:
    assert _problems(_spec(lines)) == [(where, message)]


def test_shadow_settings() -> None:
    assert load_spec(_spec("")).spec.traffic.shadow is None
    shadow = load_spec(_spec("    shadow: {sample: 0.25, duration: 1m, queue: 50, keep: 2m}\n")).spec.traffic.shadow
    assert shadow is not None and (shadow.sample, shadow.duration, shadow.queue, shadow.keep) == (0.25, 60, 50, 120)
    default = load_spec(_spec("    shadow: {}\n")).spec.traffic.shadow
    assert default is not None and (default.sample, default.duration, default.queue) == (0.1, 0.0, 1000)


@pytest.mark.parametrize(
    ("lines", "where", "message"),
    [
        ("    shadow:\n      sample: 0\n", "spec.traffic.shadow.sample (line 10)", "Input should be greater than 0"),
        (
            "    shadow:\n      sample: 1.5\n",
            "spec.traffic.shadow.sample (line 10)",
            "Input should be less than or equal to 1",
        ),
        (
            "    shadow:\n      queue: 0\n",
            "spec.traffic.shadow.queue (line 10)",
            "Input should be greater than or equal to 1",
        ),
        (
            "    shadow:\n      keep: never\n",
            "spec.traffic.shadow.keep (line 10)",
            "Value error, 'never' is not a duration; write e.g. 30s, 5m, 1h or 250ms",
        ),
        (
            "    shadow:\n      duration: -1\n",
            "spec.traffic.shadow.duration (line 10)",
            "Input should be greater than or equal to 0",
        ),
        ("    shadow:\n      rate: 0.1\n", "spec.traffic.shadow.rate (line 10)", "Extra inputs are not permitted"),
    ],
)
def test_bad_shadow_settings_name_field_and_line(lines: str, where: str, message: str) -> None:
    assert _problems(_spec(lines)) == [(where, message)]
