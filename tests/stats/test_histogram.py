"""Quantiles read from the latency histogram agree with numpy's on the raw values, within one bucket."""

from __future__ import annotations

from bisect import bisect_right

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcanary.domain.telemetry import LATENCY_EDGES_MS
from modelcanary.stats.histogram import quantile


def _binned(values: np.ndarray) -> list[int]:
    counts = [0] * (len(LATENCY_EDGES_MS) + 1)
    for value in values:
        counts[bisect_right(LATENCY_EDGES_MS, value)] += 1
    return counts


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    size=st.integers(min_value=1, max_value=3000),
    q=st.sampled_from([0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999]),
)
def test_quantile_is_within_a_bucket_of_numpy(seed: int, size: int, q: float) -> None:
    rng = np.random.default_rng(seed)
    # latencies from a few ms to seconds; kept inside the closed buckets, where the bound holds
    values = rng.lognormal(mean=rng.uniform(0.0, 7.0), sigma=rng.uniform(0.05, 2.0), size=size)
    values = np.clip(values, LATENCY_EDGES_MS[0], LATENCY_EDGES_MS[-1] * 0.999)
    estimate = quantile(LATENCY_EDGES_MS, _binned(values), q)
    # The histogram's q-quantile is the value of rank q*n, numpy's "inverted_cdf"; the default
    # "linear" method interpolates between two values that in a sparse tail can be buckets apart.
    exact = float(np.quantile(values, q, method="inverted_cdf"))
    assert estimate is not None
    index = bisect_right(LATENCY_EDGES_MS, exact)
    low, high = LATENCY_EDGES_MS[index - 1], LATENCY_EDGES_MS[index]
    assert low <= estimate <= high  # the exact quantile's bucket
    width = (high - low) / low
    assert width < 0.1001  # 10%, give or take the edges' rounding to 6 places
    assert abs(estimate - exact) / exact <= width


def test_large_sample_agrees_with_numpy_default_method_too() -> None:
    values = np.random.default_rng(7).lognormal(mean=3.0, sigma=0.6, size=20_000)
    counts = _binned(values)
    for q in (0.5, 0.9, 0.95, 0.99):
        estimate = quantile(LATENCY_EDGES_MS, counts, q)
        assert estimate is not None
        assert estimate == pytest.approx(float(np.quantile(values, q)), rel=0.10)


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        ([0, 5, 5, 0], 0.5, 20.0),
        ([0, 10, 0, 0], 0.25, 12.5),  # linear inside [10, 20): rank 2.5 of 10
        ([4, 0, 0, 0], 0.5, 5.0),  # the open first bucket is read as [0, 10)
        ([0, 0, 2, 2], 0.25, 25.0),
        ([0, 1, 0, 3], 0.2, 18.0),
        ([0, 1, 0, 3], 0.5, 30.0),  # above the last edge: its lower edge, nothing is known above it
    ],
)
def test_quantile_by_hand(counts: list[int], q: float, expected: float) -> None:
    assert quantile([10, 20, 30], counts, q) == expected


def test_empty_histogram_has_no_quantile() -> None:
    assert quantile(LATENCY_EDGES_MS, [0] * (len(LATENCY_EDGES_MS) + 1), 0.5) is None


@pytest.mark.parametrize("q", [0.001, 0.5, 0.999])
def test_everything_in_the_last_bucket_reads_its_lower_edge(q: float) -> None:
    counts = [0] * len(LATENCY_EDGES_MS) + [42]
    result = quantile(LATENCY_EDGES_MS, counts, q)
    assert result == LATENCY_EDGES_MS[-1]
    assert isinstance(result, float)


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5])
def test_q_must_be_inside_zero_one(q: float) -> None:
    with pytest.raises(ValueError, match=r"^q must be in \(0, 1\)$"):
        quantile([10, 20, 30], [0, 1, 1, 0], q)


@pytest.mark.parametrize("counts", [[1, 1, 1], [1, 1, 1, 1, 1], []])
def test_counts_need_one_more_bucket_than_edges(counts: list[int]) -> None:
    with pytest.raises(ValueError, match=r"^a histogram has one more bucket than edges$"):
        quantile([10, 20, 30], counts, 0.5)


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=4, max_size=4), st.floats(0.01, 0.99))
def test_quantile_is_monotone_in_q(counts: list[int], q: float) -> None:
    if sum(counts) == 0:
        return
    lower = quantile([10, 20, 30], counts, q * 0.5)
    upper = quantile([10, 20, 30], counts, q)
    assert lower is not None and upper is not None
    assert 0.0 <= lower <= upper <= 30.0
