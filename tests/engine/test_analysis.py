"""``analyse`` on a rollout whose candidate may see some segments alone (``candidateSegments``):
every judge compares the candidate with the baseline's requests in those segments, like with like,
and starts again when the requests it counts change."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelcanary.domain.judgement import Judgement, Look, Memory, Verdict
from modelcanary.domain.spec import RolloutSpec, load_spec
from modelcanary.domain.telemetry import LATENCY_EDGES_MS, RolloutTelemetry, VariantTelemetry
from modelcanary.engine.analysis import analyse
from modelcanary.judges import JUDGES, get_judge

EDGES = np.array(LATENCY_EDGES_MS)
# segment: (error rate, median latency in ms). eu fails six times as often and is twice as slow.
SEGMENTS = {"eu": (0.06, 20.0), "other": (0.01, 10.0)}


def spec(judge: str = "sequential") -> RolloutSpec:
    body = {
        "endpoint": "fraud",
        "baseline": "models:/fraud/1",
        "candidate": "models:/fraud/2",
        "traffic": {
            "segments": [{"name": "eu", "header": "x-region", "in": ["eu-west"]}],
            "candidateSegments": ["eu"],
            "steps": [{"weight": 10}],
        },
        "analysis": {"judge": judge, "metrics": [{"kind": "error_rate"}, {"kind": "latency"}]},
    }
    return load_spec(json.dumps({"apiVersion": "modelcanary/v1", "kind": "Rollout", "spec": body}))


def _serve(
    counts: VariantTelemetry, segment: str, n: int, errors: int, latencies: np.ndarray, *, in_segment: bool = True
) -> None:
    """``n`` requests as a gateway counts them: in the variant's totals and in their segment."""
    histogram = np.bincount(np.searchsorted(EDGES, latencies, side="right"), minlength=len(EDGES) + 1)
    for part in (counts, counts.segment(segment)) if in_segment else (counts,):
        part.requests += n
        part.errors += errors
        part.latency_counts = [a + int(b) for a, b in zip(part.latency_counts, histogram, strict=True)]


def _random_look(rng: np.random.Generator, telemetry: RolloutTelemetry, candidate_error_rate: float) -> None:
    """~10 s of traffic: ~150 requests in eu, 10% of them the candidate's, ~350 in other."""
    eu, other = (int(n) for n in rng.poisson((150, 350)))
    served = int(rng.binomial(eu, 0.1))
    for counts, segment, n, error_rate in (
        (telemetry.candidate, "eu", served, candidate_error_rate),
        (telemetry.baseline, "eu", eu - served, SEGMENTS["eu"][0]),
        (telemetry.baseline, "other", other, SEGMENTS["other"][0]),
    ):
        median = SEGMENTS[segment][1]
        _serve(counts, segment, n, int(rng.binomial(n, error_rate)), rng.lognormal(np.log(median), 0.5, n))


def _snapshot(telemetry: RolloutTelemetry) -> RolloutTelemetry:
    return RolloutTelemetry(
        VariantTelemetry.from_json(telemetry.baseline.to_json()),
        VariantTelemetry.from_json(telemetry.candidate.to_json()),
    )


def _rolled_back(seed: int, *, candidate_error_rate: float = SEGMENTS["eu"][0]) -> Judgement | None:
    """The judgement that rolled the rollout back within 60 looks (10 minutes), or None."""
    rollout, rng, telemetry = spec(), np.random.default_rng(seed), RolloutTelemetry()
    memory: Memory = {}
    for index in range(60):
        _random_look(rng, telemetry, candidate_error_rate)
        look = Look(at=10.0 * (index + 1), weight=10.0, telemetry=_snapshot(telemetry))
        judgement, memory = analyse(rollout, look, memory)
        if judgement.verdict is Verdict.FAIL:
            return judgement
    return None


def test_an_identical_candidate_in_a_segment_unlike_the_others_is_not_rolled_back() -> None:
    """Judged against the baseline's requests in every segment, this candidate (the baseline's
    equal in eu) was rolled back in each of these runs, on latency (with only the error rate, in 9
    of the first 10); against the baseline's in eu, in none of them (alpha is 5%)."""
    assert [seed for seed in range(20) if _rolled_back(seed) is not None] == []


def test_a_regression_inside_the_segment_is_still_caught() -> None:
    for seed in range(3):
        judgement = _rolled_back(seed, candidate_error_rate=0.15)
        assert judgement is not None, f"seed {seed}"
        assert [m.name for m in judgement.failing()] == ["error-rate"]


def _even_look(telemetry: RolloutTelemetry) -> None:
    """10 s of traffic with no noise: eu's 1,000 requests split 100/900 at eu's error rate and
    latency (all at its median), other's 1,000 at its own, all the baseline's."""
    for counts, segment, n in ((telemetry.candidate, "eu", 100), (telemetry.baseline, "eu", 900)):
        _serve(counts, segment, n, int(n * SEGMENTS["eu"][0]), np.full(n, SEGMENTS["eu"][1]))
    _serve(telemetry.baseline, "other", 1000, 10, np.full(1000, SEGMENTS["other"][1]))


@pytest.mark.parametrize("judge", sorted(JUDGES))
def test_every_judge_sees_the_eligible_segments_alone(judge: str) -> None:
    """The candidate is the baseline's equal in eu: each judge shows them equal, and fails neither
    metric (against all the baseline's requests, 3.4% errors and half of them at 10 ms, every
    judge failed one)."""
    rollout, telemetry = spec(judge), RolloutTelemetry()
    memory: Memory = {}
    for index in range(40):
        _even_look(telemetry)
        judgement, memory = analyse(rollout, Look(10.0 * (index + 1), 10.0, _snapshot(telemetry)), memory)
        assert not judgement.failing(), f"look {index}: {judgement.summary()}"
    for metric in judgement.metrics:
        assert metric.baseline is not None and metric.baseline == pytest.approx(metric.candidate), metric


@pytest.mark.parametrize("judge", sorted(JUDGES))
def test_a_judge_that_counted_other_requests_starts_again(judge: str) -> None:
    """A rollout judged on all requests before (a memory of the code before this was judged on
    the eligible segments alone), or whose per-segment counts stop adding up (a replica that does
    not count them joins): the memory's cumulative counts are of other requests, and a look on
    from them would feed the judge negative or mixed increments. It starts again, as at a first
    look (an e-process started again is still one)."""
    rollout, telemetry = spec(judge), RolloutTelemetry()
    analysis, rng = rollout.spec.analysis, np.random.default_rng(7)
    on_totals: Memory = {}
    on_segments: Memory = {}
    for index in range(30):
        _random_look(rng, telemetry, SEGMENTS["eu"][0])
        look = Look(at=10.0 * (index + 1), weight=10.0, telemetry=_snapshot(telemetry))
        _, on_totals = get_judge(judge)(analysis, look, on_totals)
        _, on_segments = analyse(rollout, look, on_segments)
    _random_look(rng, telemetry, SEGMENTS["eu"][0])
    look = Look(at=310.0, weight=10.0, telemetry=_snapshot(telemetry))
    assert analyse(rollout, look, on_totals) == analyse(rollout, look, {})
    _serve(telemetry.baseline, "eu", 50, 1, np.full(50, 20.0), in_segment=False)
    uncounted = Look(at=310.0, weight=10.0, telemetry=_snapshot(telemetry))
    assert analyse(rollout, uncounted, on_segments) == analyse(rollout, uncounted, {})
