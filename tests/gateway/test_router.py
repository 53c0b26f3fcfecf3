"""Routing is a pure function of (salt, key, weight): sticky, monotone in the weight, and fair."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcanary.domain.telemetry import Variant
from modelcanary.gateway.router import BUCKETS, bucket, choose

salts = st.text(min_size=0, max_size=20)
keys = st.text(min_size=0, max_size=40)
weights = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@given(salts, keys, weights)
def test_same_inputs_same_variant(salt: str, key: str, weight: float) -> None:
    first = choose(salt, key, weight)
    assert all(choose(salt, key, weight) is first for _ in range(3))
    assert 0 <= bucket(salt, key) < BUCKETS


@given(salts, keys, weights, weights)
def test_raising_the_weight_never_moves_a_key_back(salt: str, key: str, w1: float, w2: float) -> None:
    low, high = sorted((w1, w2))
    if choose(salt, key, low) is Variant.CANDIDATE:
        assert choose(salt, key, high) is Variant.CANDIDATE
    if choose(salt, key, high) is Variant.BASELINE:
        assert choose(salt, key, low) is Variant.BASELINE


@given(salts, st.one_of(st.none(), keys))
def test_weight_zero_is_all_baseline_and_hundred_all_candidate(salt: str, key: str | None) -> None:
    rng = random.Random(0)
    assert choose(salt, key, 0.0, rng=rng) is Variant.BASELINE
    assert choose(salt, key, 100.0, rng=rng) is Variant.CANDIDATE


@given(salts, keys, weights)
def test_the_candidate_takes_the_buckets_below_the_weight(salt: str, key: str, weight: float) -> None:
    expected = Variant.CANDIDATE if bucket(salt, key) < weight * BUCKETS / 100 else Variant.BASELINE
    assert choose(salt, key, weight) is expected


@pytest.mark.parametrize("salt", ["rollout-1", "3f9c2a7e-5b1d-4e0a-9c1f-2d8e7b6a5c4d"])
@pytest.mark.parametrize("weight", [1.0, 5.0, 25.0, 50.0])
def test_candidate_share_is_the_weight(salt: str, weight: float) -> None:
    users = [f"user-{index}" for index in range(20_000)]
    share = 100 * sum(choose(salt, user, weight) is Variant.CANDIDATE for user in users) / len(users)
    assert abs(share - weight) <= 1.5


def test_the_salt_reshuffles_users() -> None:
    users = [f"user-{index}" for index in range(2_000)]
    first = [choose("rollout-1", user, 50.0) for user in users]
    second = [choose("rollout-2", user, 50.0) for user in users]
    agreement = sum(a is b for a, b in zip(first, second, strict=True)) / len(users)
    assert 0.4 < agreement < 0.6  # independent halves agree about half the time


@pytest.mark.parametrize("weight", [1.0, 5.0, 25.0, 50.0, 99.0])
def test_keyless_requests_split_at_random_at_the_weight(weight: float) -> None:
    rng = random.Random(1234)
    draws = [choose("rollout-1", None, weight, rng=rng) for _ in range(20_000)]
    share = 100 * draws.count(Variant.CANDIDATE) / len(draws)
    assert abs(share - weight) <= 1.5
    # one draw of the generator per request, compared with the weight
    replay = random.Random(1234)
    assert draws == [Variant.CANDIDATE if replay.random() < weight / 100 else Variant.BASELINE for _ in draws]


def test_keyless_requests_ignore_the_salt() -> None:
    rng_a, rng_b = random.Random(99), random.Random(99)
    a = [choose("rollout-1", None, 30.0, rng=rng_a) for _ in range(500)]
    b = [choose("rollout-2", None, 30.0, rng=rng_b) for _ in range(500)]
    assert a == b
    assert set(a) == {Variant.BASELINE, Variant.CANDIDATE}
