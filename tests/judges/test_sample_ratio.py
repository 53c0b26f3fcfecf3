"""The sample-ratio check under ``candidateSegments``: the weight is the candidate's share of the
eligible segments' requests (the others are all the baseline's), and ``analyse``, as the controller
runs it, gives the judge those segments' requests alone, so the check tests that split."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from modelcanary.domain.judgement import Judgement, Look, Memory, Verdict
from modelcanary.domain.spec import load_spec
from modelcanary.domain.telemetry import RolloutTelemetry, VariantTelemetry
from modelcanary.engine.analysis import analyse
from modelcanary.judges import sequential
from modelcanary.judges.sample_ratio import NO_KEYS, SampleRatio

SPEC = load_spec(
    json.dumps(
        {
            "apiVersion": "modelcanary/v1",
            "kind": "Rollout",
            "spec": {
                "endpoint": "fraud",
                "baseline": "models:/fraud/1",
                "candidate": "models:/fraud/2",
                "traffic": {
                    "segments": [{"name": "eu", "header": "x-region", "in": ["eu-west"]}],
                    "candidateSegments": ["eu"],
                    "steps": [{"weight": 10}],
                },
                "analysis": {"metrics": [{"kind": "error_rate"}]},
            },
        }
    )
)


def _serve(counts: VariantTelemetry, segment: str | None, n: int) -> None:
    """``n`` error-free requests, counted in the totals and (as the gateway does) in their segment."""
    for part in (counts, counts.segment(segment)) if segment is not None else (counts,):
        part.requests += n
        part.latency_counts[10] += n


def _looks(
    ratio: float,
    *,
    seed: int,
    weights: Sequence[float] = (10.0,) * 60,
    segments: bool = True,
    before_the_fix: int = 0,
) -> tuple[list[Judgement], Memory]:
    """A rollout judged every 10 s at ``weights`` (one a look), ~250 requests a look in segment eu
    (eligible) and ~250 in other; the candidate serves ``ratio`` times its weight of eu's. The first
    ``before_the_fix`` looks are judged as before the judge saw the eligible requests alone: on all."""
    rng = np.random.default_rng(seed)
    telemetry, judgements = RolloutTelemetry(), []
    memory: Memory = {}
    for index, weight in enumerate(weights):
        eu, other = (int(n) for n in rng.poisson(250, 2))
        served = int(rng.binomial(eu, ratio * weight / 100))
        _serve(telemetry.candidate, "eu" if segments else None, served)
        _serve(telemetry.baseline, "eu" if segments else None, eu - served)
        _serve(telemetry.baseline, "other" if segments else None, other)
        snapshot = RolloutTelemetry(
            VariantTelemetry.from_json(telemetry.baseline.to_json()),
            VariantTelemetry.from_json(telemetry.candidate.to_json()),
        )
        look = Look(at=10.0 * (index + 1), weight=weight, telemetry=snapshot)
        if index < before_the_fix:
            judgement, memory = sequential.judge(SPEC.spec.analysis, look, memory)
        else:
            judgement, memory = analyse(SPEC, look, memory)
        judgements.append(judgement)
    return judgements, memory


def test_half_the_traffic_eligible_at_weight_10_is_a_right_split_and_passes() -> None:
    """The candidate serves 5% of all requests and 10% of the eligible ones: no mismatch (judged
    on all requests, this held at every look from the fourth and never passed)."""
    for seed in range(10):
        judgements, _ = _looks(1.0, seed=seed)
        assert [j.hold for j in judgements] == [None] * len(judgements), f"seed {seed}"
        assert judgements[-1].verdict is Verdict.PASS


def test_a_mismatch_within_the_eligible_traffic_still_holds() -> None:
    judgements, _ = _looks(0.6, seed=1)
    hold = judgements[-1].hold
    assert hold is not None
    served = re.search(r"the candidate served ([\d.]+)% of this step's requests with its weight at 10%", hold)
    assert served is not None and 5 < float(served.group(1)) < 7
    assert judgements[-1].verdict is Verdict.INCONCLUSIVE


def test_without_counts_per_segment_the_totals_are_judged_without_the_check_and_it_says_so() -> None:
    """A metric source other than the gateway counts no segments: the eligible requests cannot be
    told from the others, so the judge judges them all, the split (the candidate's share of all
    requests, half its weight here) is not tested, and the judgement says why."""
    judgements, memory = _looks(1.0, seed=2, segments=False)
    assert {j.hold for j in judgements} == {None}
    check = judgements[-1].metrics[-1]
    assert (check.name, check.verdict) == ("candidate-segments", Verdict.PASS)
    assert check.reason.startswith("judged on all requests: the candidate may see segments eu alone")
    assert judgements[-1].verdict is Verdict.PASS and "segments" not in memory


def test_a_rollout_judged_on_all_requests_before_starts_afresh_on_the_eligible_ones() -> None:
    """A rollout judged on all requests before, at 10% then 50% (held on the mismatch that made),
    is held no longer: the judge starts again, on the eligible requests."""
    weights = (10.0,) * 20 + (50.0,) * 40
    judgements, memory = _looks(1.0, seed=3, weights=weights, before_the_fix=40)
    assert judgements[39].hold is not None and "% of this step's requests with its weight at 50%" in judgements[39].hold
    assert [j.hold for j in judgements[40:]] == [None] * 20 and memory["segments"] == ["eu"]
    assert judgements[-1].verdict is Verdict.PASS


def test_a_check_that_starts_afresh_leaves_out_the_requests_before_it_and_still_catches_a_mismatch() -> None:
    """The judge's memory starts empty mid-rollout (a restart, a new counting basis) with 10,000
    requests already split 50/50 at an earlier weight; from then on the candidate gets half of its
    10%. Those earlier requests are left out, as after a weight change: counted, they made the
    plug-in read the candidate as far over its share, and the mismatch after them was not held in
    40 looks (it is at the third)."""
    plain = json.loads(SPEC.model_dump_json(by_alias=True, exclude_none=True))
    plain["spec"]["traffic"] = {"steps": [{"weight": 10}]}
    spec = load_spec(json.dumps(plain))
    rng = np.random.default_rng(5)
    telemetry = RolloutTelemetry()
    memory: Memory = {}
    _serve(telemetry.baseline, None, 5_000)
    _serve(telemetry.candidate, None, 5_000)
    held_at = None
    for index in range(40):
        served = int(rng.binomial(500, 0.05))
        _serve(telemetry.candidate, None, served)
        _serve(telemetry.baseline, None, 500 - served)
        snapshot = RolloutTelemetry(
            VariantTelemetry.from_json(telemetry.baseline.to_json()),
            VariantTelemetry.from_json(telemetry.candidate.to_json()),
        )
        judgement, memory = analyse(spec, Look(at=600.0 + 10.0 * index, weight=10.0, telemetry=snapshot), memory)
        if judgement.hold is not None:
            held_at = index
            break
    assert held_at is not None and held_at <= 5


# -- the check on its own: sticky routing, the hold's share, counts that went down -----------------


def _split(
    steps: Sequence[tuple[float, float, int]], *, sticky: bool = False, seed: int = 0
) -> tuple[list[Judgement], list[Memory]]:
    """A rollout judged every 10 s, ~500 error-free requests a look: ``(weight, served share, looks)``
    per step, the candidate serving ``served share`` percent of them."""
    rng = np.random.default_rng(seed)
    telemetry, judgements, memories = RolloutTelemetry(), [], []
    memory: Memory = {}
    at = 0.0
    for weight, share, looks in steps:
        for _ in range(looks):
            at += 10.0
            n = int(rng.poisson(500))
            served = int(rng.binomial(n, share / 100))
            _serve(telemetry.candidate, None, served)
            _serve(telemetry.baseline, None, n - served)
            snapshot = RolloutTelemetry(
                VariantTelemetry.from_json(telemetry.baseline.to_json()),
                VariantTelemetry.from_json(telemetry.candidate.to_json()),
            )
            look = Look(at=at, weight=weight, telemetry=snapshot)
            if sticky:
                look = replace(look, sticky=True)
            judgement, memory = sequential.judge(SPEC.spec.analysis, look, memory)
            judgements.append(judgement)
            memories.append(memory)
    return judgements, memories


def test_with_sticky_routing_and_no_keys_counted_the_check_is_off_and_the_judgement_says_so() -> None:
    """The router splits keys (users), and one heavy user moves many requests at once: the request
    share is no binomial at the weight, and a correct split of users was held (then rolled back at
    the step's maxDuration). With ``Look.sticky`` the check tests the keys' split; telemetry that
    counts no keys (a metric source's) is not checked, and the judgement says why."""
    judgements, _ = _split([(10.0, 6.0, 40)], sticky=True)
    assert {j.hold for j in judgements} == {None}
    off = judgements[-1].metrics[-1]
    assert (off.name, off.verdict, off.reason) == ("sample-ratio", Verdict.PASS, NO_KEYS)
    assert judgements[-1].verdict is Verdict.PASS
    assert "the telemetry counts no keys" in judgements[-1].summary()
    routed, _ = _split([(10.0, 6.0, 40)])  # the same split, routed request by request, holds
    assert routed[-1].hold is not None and all(m.name != "sample-ratio" for m in routed[-1].metrics)


# -- sticky routing: the split of users -------------------------------------------------------------


def _users(
    weights: Sequence[float],
    *,
    seed: int,
    users: int = 4_000,
    gateways: int = 1,
    stuck_at: float | None = None,
) -> tuple[RolloutTelemetry, list[RolloutTelemetry]]:
    """Sticky traffic, as the gateway counts it, one snapshot a look (10 s) at each weight: users
    with heavy-tailed request rates (Pareto, shape 1.1, 0.05 a second at the least: a few send
    hundreds of requests a look), each on its own bucket; every gateway counts a user once at each
    weight, the first time one of its requests reaches it (requests go to ``gateways`` gateways at
    random, as a load balancer without affinity sends them). ``stuck_at``: the router splits at
    that weight, whatever the rollout's (a gateway that stopped following the routing table)."""
    rng = np.random.default_rng(seed)
    rate = 0.05 * (1 + rng.pareto(1.1, users))
    bucket = rng.integers(0, 10_000, users)
    telemetry, snapshots = RolloutTelemetry(), []
    seen = np.zeros((gateways, users), dtype=bool)
    previous = None
    for weight in weights:
        if weight != previous:
            seen[:] = False
            previous = weight
        on_candidate = bucket < (weight if stuck_at is None else stuck_at) * 100
        requests = rng.poisson(rate * 10)
        for counts, side in ((telemetry.candidate, on_candidate), (telemetry.baseline, ~on_candidate)):
            _serve(counts, None, int(requests[side].sum()))
        for gateway in range(gateways):
            reached = rng.binomial(requests, 1 / gateways) > 0
            new = reached & ~seen[gateway]
            seen[gateway] |= reached
            for counts, side in ((telemetry.candidate, on_candidate), (telemetry.baseline, ~on_candidate)):
                counts.keys += int((new & side).sum())
                counts.key_gateways = max(counts.key_gateways, gateways if (reached & side).any() else 0)
        snapshots.append(
            RolloutTelemetry(
                VariantTelemetry.from_json(telemetry.baseline.to_json()),
                VariantTelemetry.from_json(telemetry.candidate.to_json()),
            )
        )
    return telemetry, snapshots


def _judge_all(snapshots: list[RolloutTelemetry], weights: Sequence[float]) -> list[Judgement]:
    memory: Memory = {}
    judgements = []
    for index, (snapshot, weight) in enumerate(zip(snapshots, weights, strict=True)):
        look = Look(at=10.0 * (index + 1), weight=weight, telemetry=snapshot, sticky=True)
        judgement, memory = sequential.judge(SPEC.spec.analysis, look, memory)
        judgements.append(judgement)
    return judgements


STEPS = (1.0,) * 30 + (5.0,) * 30 + (25.0,) * 30


def test_a_right_split_of_users_passes_where_a_split_of_their_requests_held() -> None:
    """Heavy users on a right split: the check of the keys holds none of ten rollouts, and says
    each look what it tested. The same requests, tested as if each were routed on its own, held
    all ten (sticky routing's reason the check tests users there)."""
    held_by_requests = 0
    for seed in range(10):
        _, snapshots = _users(STEPS, seed=seed)
        judgements = _judge_all(snapshots, STEPS)
        assert [j.hold for j in judgements] == [None] * len(judgements), f"seed {seed}"
        check = judgements[-1].metrics[-1]
        assert (check.name, check.verdict, check.limit) == ("sample-ratio", Verdict.PASS, 25.0)
        assert check.candidate is not None and 20 < check.candidate < 30
        assert check.e_value is None  # not evidence against the candidate: off its chart (its reason says it)
        # its samples are the users it tested, this step's, as its share and its reason count them
        users = check.baseline_samples + check.candidate_samples
        assert f"of {users:,} users (sticky keys) counted at this weight" in check.reason
        assert check.candidate == pytest.approx(100 * check.candidate_samples / users, abs=0.01)
        assert users < snapshots[-1].baseline.keys + snapshots[-1].candidate.keys  # not the earlier steps'
        assert re.fullmatch(
            r"the candidate has [\d.]+% of [\d,]+ users \(sticky keys\) counted at this weight, its weight 25%; "
            r"e-value [\d.e+-]+ against 1000",
            check.reason,
        ), check.reason
        ratio = SampleRatio()
        before = [0, 0]
        for index, (snapshot, weight) in enumerate(zip(snapshots, STEPS, strict=True)):
            now = [snapshot.baseline.requests, snapshot.candidate.requests]
            hold = ratio.update(before, now, Look(at=10.0 * (index + 1), weight=weight, telemetry=snapshot))
            before = now
        held_by_requests += hold is not None
    assert held_by_requests >= 8  # 10 of 10, measured


def test_a_gateway_that_splits_users_at_an_old_weight_is_held_naming_the_users_share() -> None:
    """The rollout is at 5% and 25%, the router still at 1%: held, on this step's users."""
    _, snapshots = _users(STEPS, seed=1, stuck_at=1.0)
    judgements = _judge_all(snapshots, STEPS)
    held = [index for index, judgement in enumerate(judgements) if judgement.hold is not None]
    assert held and 30 <= held[0] < 40, held
    hold = judgements[-1].hold
    assert hold is not None
    served = re.search(r"served ([\d.]+)% of this step's users \(sticky keys\) with its weight at 25%", hold)
    assert served is not None and 0.5 < float(served.group(1)) < 1.5
    assert judgements[-1].metrics[-1].verdict is Verdict.INCONCLUSIVE


def test_keys_counted_by_several_gateways_bet_as_if_counted_once() -> None:
    """Three gateways behind a load balancer without affinity count a heavy user three times, a
    light one once. Tempered by the gateways' count, the e-process stays a test supermartingale:
    over 120 right splits it reached 20 (Ville: at most 5% may) in no more than 5%; untempered, the
    repeated counts are overdispersion it reads as a mismatch. (Over 200 seeds, measured: tempered
    4 reached 20, none 1,000; untempered 38 reached 20, and 12 reached 1,000, where the check holds:
    6%, for a check promised to hold a right split at most 0.1% of the time.)"""
    tempered = untempered = 0
    for seed in range(120):
        _, snapshots = _users(STEPS, seed=seed, users=1_500, gateways=3)
        ratios, before, peaks = (SampleRatio(), SampleRatio()), [0, 0], [0.0, 0.0]
        for index, (snapshot, weight) in enumerate(zip(snapshots, STEPS, strict=True)):
            now = [snapshot.baseline.keys, snapshot.candidate.keys]
            look = Look(at=10.0 * (index + 1), weight=weight, telemetry=snapshot)
            for which, (ratio, gateways) in enumerate(zip(ratios, (3, 1), strict=True)):
                ratio.update(before, now, look, gateways=gateways)
                peaks[which] = max(peaks[which], ratio.log_e)
            before = now
        tempered += peaks[0] >= math.log(20)
        untempered += peaks[1] >= math.log(20)
    assert tempered <= 10, tempered  # 5% of 120, and the binomial's slack
    assert untempered > 2 * tempered + 8, (tempered, untempered)


def test_the_hold_reports_this_steps_share() -> None:
    """At 10% the split was right; at 50% the candidate serves 40%. The hold said 34%, the share
    since the rollout started; it says this step's."""
    judgements, _ = _split([(10.0, 10.0, 30), (50.0, 40.0, 30)])
    hold = judgements[-1].hold
    assert hold is not None
    served = re.search(r"the candidate served ([\d.]+)% of this step's requests with its weight at 50%", hold)
    assert served is not None and 39 < float(served.group(1)) < 41


def test_counts_that_went_down_are_not_counted() -> None:
    """A counter reset (the candidate's requests fewer than at the last look) is no interval of
    requests: the check neither bets on it nor counts it in this step's share."""
    _, memories = _split([(10.0, 10.0, 10)])
    last = memories[-1]
    baseline, candidate = last["requests"]
    reset = RolloutTelemetry()
    _serve(reset.baseline, None, baseline + 450)
    _serve(reset.candidate, None, candidate - 100)
    _, after = sequential.judge(SPEC.spec.analysis, Look(at=110.0, weight=10.0, telemetry=reset), last)
    assert after["requests"] != last["requests"]
    assert after["srm"] == last["srm"]
