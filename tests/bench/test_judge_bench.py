"""Smoke run of the judge benchmark (bench/judge): a tiny scenario file, 8 repetitions of 600 s."""

from __future__ import annotations

import json
from typing import Any

import pytest
from scipy import stats

from bench.judge.__main__ import DEFAULT_SCENARIOS, main
from bench.judge.scenarios import load_scenarios
from bench.judge.summary import clopper_pearson

SCENARIOS = """
defaults:
  rps: 50
  duration_s: 600
  steps: [10, 50]
  step_s: 300
  baseline:  {error_rate: 0.01, latency_ms: {dist: lognormal, median: 40, sigma: 0.5}, positive_rate: 0.9}
  candidate: {error_rate: 0.01, latency_ms: {dist: lognormal, median: 40, sigma: 0.5}, positive_rate: 0.9}
  label_delay_s: {dist: exponential, mean: 60}
  judge_every_s: 10
scenarios:
  - name: aa-noisy
    noise: {ar1_rho: 0.5, minute_sd: 0.1}
    diurnal_amplitude: 0.3
  - name: errors-x5
    candidate: {error_rate: 0.05, latency_ms: {dist: gamma, median: 40, shape: 3}}
    baseline: {latency_ms: {dist: gamma, median: 40, shape: 3}}
"""
KEYS = {
    "scenario": str,
    "judge": str,
    "reps": int,
    "false_rollback_rate": float,
    "fpr_ci_low": float,
    "fpr_ci_high": float,
    "power": float,
    "median_requests_to_rollback": float,
    "p90_requests_to_rollback": float,
    "bad_outcomes_before_rollback": float,
    "oracle_ratio": float,
}
TIMING = {"seconds_per_call", "judge_seconds"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("judge-bench")
    scenarios = tmp / "scenarios.yaml"
    scenarios.write_text(SCENARIOS)
    out: dict[str, Any] = {"results": tmp / "results"}
    for name, jobs in [("first", 1), ("again", 1), ("two_jobs", 2)]:
        path = tmp / f"{name}.json"
        argv = ["--scenarios", str(scenarios), "--reps", "8", "--seed", "7", "--jobs", str(jobs)]
        assert main([*argv, "--json", str(path), "--results-dir", str(out["results"]), "--quiet"]) == 0
        out[name] = json.loads(path.read_text())
    return out


def _without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def test_rows_have_the_promised_keys_and_types(runs: dict[str, Any]) -> None:
    rows = runs["first"]
    assert {(r["scenario"], r["judge"]) for r in rows} >= {("aa-noisy", "oracle-sprt"), ("errors-x5", "oracle-sprt")}
    for row in rows:
        for key, kind in KEYS.items():
            assert key in row, key
            assert row[key] is None or isinstance(row[key], kind), (key, row[key])
        assert row["reps"] == 8
        aa = row["scenario"] == "aa-noisy"
        if aa and row["judge"] != "oracle-sprt":
            assert row["fpr_ci_low"] <= row["false_rollback_rate"] <= row["fpr_ci_high"]
            assert row["power"] is None
        if aa:
            assert row["oracle_ratio"] is None
        else:
            assert row["false_rollback_rate"] is None and row["fpr_ci_low"] is None
            assert isinstance(row["power"], float)


def test_every_run_leaves_a_record(runs: dict[str, Any]) -> None:
    records = sorted(runs["results"].glob("judge-*.json"))
    assert len(records) == 3
    record = json.loads(records[0].read_text())
    assert record["seed"] == 7 and "--reps" in record["command"]
    assert record["machine"]["cpu_count"] >= 1 and record["machine"]["python"]
    assert _without_timing(record["rows"]) == _without_timing(runs["first"])


def test_the_oracle_detects_a_fivefold_error_rate(runs: dict[str, Any]) -> None:
    (oracle,) = [r for r in runs["first"] if r["scenario"] == "errors-x5" and r["judge"] == "oracle-sprt"]
    assert oracle["power"] >= 0.875
    assert oracle["median_requests_to_rollback"] < 500


def test_the_same_seed_gives_the_same_rows_whatever_the_jobs(runs: dict[str, Any]) -> None:
    assert _without_timing(runs["first"]) == _without_timing(runs["again"])
    assert _without_timing(runs["first"]) == _without_timing(runs["two_jobs"])


@pytest.mark.parametrize(("k", "n"), [(0, 8), (1, 8), (8, 8), (3, 50), (100, 2000), (0, 2000)])
def test_clopper_pearson_matches_the_beta_quantiles(k: int, n: int) -> None:
    low, high = clopper_pearson(k, n)
    expected_low = 0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1)
    expected_high = 1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k)
    assert low == pytest.approx(expected_low, abs=1e-12)
    assert high == pytest.approx(expected_high, abs=1e-12)


def test_the_tail_only_scenario_keeps_the_median_and_moves_the_p99_by_30_percent() -> None:
    (tail,) = [s for s in load_scenarios(DEFAULT_SCENARIOS) if s.name == "latency-p99+30%-tail-only"]
    base, cand = tail.baseline.latency, tail.candidate.latency
    assert cand.quantile(0.5) == pytest.approx(base.quantile(0.5), rel=1e-4)
    assert cand.quantile(0.99) / base.quantile(0.99) == pytest.approx(1.3, rel=1e-4)
    assert cand.quantile(0.9) / base.quantile(0.9) < 1.02  # the body barely moves


def test_labels_arrive_as_the_delay_law_says_and_no_more_spread() -> None:
    import numpy as np

    from bench.judge.simulate import _arrivals, delay_pmf

    outcomes = np.zeros((20_000, 40), dtype=np.int64)
    outcomes[:, 0] = 1000
    arrivals = _arrivals(np.random.default_rng(1), outcomes, 300.0, 10)
    expected = 1000 * delay_pmf(300.0, 10, 40)
    assert np.all(np.abs(arrivals.mean(axis=0) - expected) < 5 * np.sqrt(expected / 20_000))
    # each label arrives once: by a look, the arrived count is Binomial(1000, cdf), not over-dispersed
    seen, cdf = arrivals.cumsum(axis=1)[:, -1], expected.sum() / 1000
    assert seen.var() == pytest.approx(1000 * cdf * (1 - cdf), rel=0.1)
