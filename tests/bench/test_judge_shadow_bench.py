"""The judge benchmark's shadow lane (bench/judge): its knob, its simulated counts against the joint
law, streams unchanged without it, what the judges are told, and the oracle's lane terms."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.judge import oracle
from bench.judge.run import _fold
from bench.judge.scenarios import EXAMPLE, Scenario, merge, parse_scenario
from bench.judge.simulate import Streams, simulate
from modelcanary.domain.judgement import Judgement, Look, Memory
from modelcanary.domain.metrics import Analysis

LANE = {"sample": 0.5, "agreement": 0.5}
REPS = 4


def _scenario(**knobs: Any) -> Scenario:
    return parse_scenario(merge({**EXAMPLE, "name": "lane"}, knobs), where="test")


def _streams(scenario: Scenario, seed: int = 3) -> Streams:
    return simulate(scenario, np.random.default_rng(seed), REPS)


@pytest.mark.parametrize("delay", [0, 300])
def test_the_lane_follows_the_joint_law(delay: int) -> None:
    # p_b 0.9, p_c 0.8, phi 0.5: P(both right) = 0.72 + 0.5 x sqrt(0.09 x 0.16) = 0.78
    scenario = _scenario(
        candidate={"positive_rate": 0.8, "error_rate": 0.05},
        label_delay_s={"dist": "exponential", "mean": delay},
        shadow=LANE,
    )
    streams = _streams(scenario)
    assert streams.shadow_requests is not None and streams.shadow_errors is not None and streams.paired is not None
    served = (streams.served_right + streams.served_wrong)[:, 0, -1]
    copies, failed, paired = streams.shadow_requests[:, -1], streams.shadow_errors[:, -1], streams.paired[:, :, -1]

    def within(share: float, p: float, n: int) -> bool:  # 5 standard errors
        return abs(share - p) < 5 * float(np.sqrt(p * (1 - p) / n))

    assert within(copies.sum() / served.sum(), 0.5, int(served.sum()))
    assert within(failed.sum() / copies.sum(), 0.05, int(copies.sum()))
    labelled = int(paired.sum())
    assert labelled <= copies.sum() - failed.sum()
    if delay == 0:
        assert labelled == copies.sum() - failed.sum()  # every pair labelled at once
    for share, p in zip(paired.sum(axis=0) / labelled, [0.78, 0.12, 0.02, 0.08], strict=True):
        assert within(float(share), p, labelled)
    # and the telemetry a judge sees holds the same counts
    lane = streams.telemetry(1, scenario.looks - 1).candidate.shadow
    assert lane is not None
    assert (lane.requests, lane.errors, lane.paired_labels) == (copies[1], failed[1], paired[1].tolist())


def test_without_a_lane_the_streams_are_those_of_a_lane_scenario() -> None:
    plain = _streams(_scenario(candidate={"positive_rate": 0.895}))
    with_lane = _streams(_scenario(candidate={"positive_rate": 0.895}, shadow=LANE))
    for name in ("requests", "errors", "served_right", "served_wrong", "label_right", "label_wrong", "latency"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(with_lane, name), err_msg=name)
    assert plain.shadow_requests is None and plain.shadow_errors is None and plain.paired is None
    assert plain.telemetry(0, 10).candidate.shadow is None


def test_judges_are_told_of_the_lane() -> None:
    seen: list[tuple[bool, bool]] = []

    def spy(analysis: Analysis, look: Look, memory: Memory) -> tuple[Judgement, Memory]:
        seen.append((look.shadow, look.telemetry.candidate.shadow is not None))
        return Judgement(judge="spy", metrics=()), memory

    analysis = Analysis.model_validate({"alpha": 0.05, "metrics": [{"kind": "error_rate"}]})
    for knobs, expected in (({"shadow": LANE}, (True, True)), ({}, (False, False))):
        seen.clear()
        _fold(spy, analysis, _streams(_scenario(**knobs)), shadow="shadow" in knobs)
        assert set(seen) == {expected}


def test_the_oracles_lane_terms_are_zero_on_an_aa_lane() -> None:
    scenario = _scenario(shadow=LANE)
    assert scenario.is_aa
    streams = _streams(scenario)
    assert streams.paired is not None and streams.paired.sum() > 0
    assert not oracle.lane_log_lr(scenario, streams).any()
    assert not oracle.log_lr(scenario, streams).any()


@pytest.mark.parametrize(
    ("candidate", "reads"),
    [({"positive_rate": 0.85}, "pairs"), ({"error_rate": 0.02}, "copies")],
)
def test_the_oracle_reads_the_lane_at_its_kl_divergence(candidate: dict[str, float], reads: str) -> None:
    knobs = {"candidate": candidate, "label_delay_s": {"mean": 0}}
    scenario, plain = _scenario(**knobs, shadow=LANE), _scenario(**knobs)
    assert scenario.shadow is not None
    streams = _streams(scenario)
    lane = oracle.lane_log_lr(scenario, streams)
    np.testing.assert_allclose(oracle.log_lr(scenario, streams), oracle.log_lr(plain, streams) + lane)
    assert streams.paired is not None and streams.shadow_requests is not None
    if reads == "pairs":  # the error rates are equal: only the pairs' categories carry evidence
        truth, _ = scenario.shadow.joint(0.9, 0.85)
        null, _ = scenario.shadow.joint(0.9, 0.9)
        p, terms, n = np.array(truth), np.log(np.array(truth) / np.array(null)), streams.paired[:, :, -1].sum()
    else:  # the positive rates are equal: only the copies' failures do
        p, terms, n = np.array([0.02, 0.98]), np.log([2.0, 0.98 / 0.99]), streams.shadow_requests[:, -1].sum()
    mean, sd = p @ terms, np.sqrt(p @ terms**2 - (p @ terms) ** 2)
    assert abs(lane[:, -1].sum() - n * mean) < 5 * sd * np.sqrt(n)
    assert n * mean > 10 * sd * np.sqrt(n)  # so the check above is a check of the mean


@pytest.mark.parametrize(
    ("lane", "message"),
    [
        ({"agreement": 0.5}, "shadow is {sample"),
        ({"sample": 0.5, "phi": 0.5}, "shadow is {sample"),
        ({"sample": 0.0}, "shadow.sample must be in (0, 1]"),
        ({"sample": 1.5}, "shadow.sample must be in (0, 1]"),
        ({"sample": 1.0, "agreement": 1.0}, "shadow.agreement in [0, 1)"),
        ({"sample": 1.0, "agreement": -0.1}, "shadow.agreement in [0, 1)"),
        ({"sample": "all"}, "are numbers"),
        ([1.0, 0.5], "shadow is {sample"),
    ],
)
def test_a_bad_lane_is_refused_naming_the_scenario(lane: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r"test \(lane\): ") as raised:
        _scenario(shadow=lane)
    assert message in str(raised.value)


def test_an_infeasible_agreement_is_clipped_with_a_warning() -> None:
    with pytest.warns(UserWarning, match=r"clipped to 0\.5"):
        scenario = _scenario(candidate={"positive_rate": 0.5}, shadow={"sample": 1.0, "agreement": 0.9})
    assert scenario.shadow is not None
    probs, clipped = scenario.shadow.joint(0.9, 0.5)
    assert clipped and probs == pytest.approx((0.5, 0.4, 0.0, 0.1))
