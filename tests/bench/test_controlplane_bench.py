"""Smoke test of ``python -m bench.controlplane`` at a small size, on both engines: it measures
what it says (every rollout decided each round, both gateways applying each routing change) and
writes its rows. Figures come from the benchmark run, never from here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.controlplane.__main__ import main, run_engine


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
def test_every_rollout_is_decided_and_both_gateways_follow(store_url: str, processes: int) -> None:
    row = run_engine("engine", store_url, rollouts=12, rounds=2, poll_s=0.05, processes=processes)
    # every active rollout, every round (each round ends by aborting one), whichever process saved it
    assert row["decisions"] == 12 + 11
    assert row["decision_latency_ms_p99"] >= row["decision_latency_ms_p50"] > 0
    assert row["propagated"] == 2 * 2  # each round's routing change, applied by both gateways
    assert 0 < row["propagation_ms_p50"] <= row["propagation_ms_max"]


def test_the_command_prints_and_writes_its_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rows.json"
    args = ["--rollouts", "5", "--rounds", "1", "--engines", "sqlite", "--poll", "0.05", "--json", str(out)]
    assert main([*args, "--processes", "1,2", "--results-dir", str(tmp_path)]) == 0
    alone, shared = json.loads(out.read_text())
    assert (alone["engine"], alone["processes"], shared["processes"], shared["rollouts"]) == ("sqlite", 1, 2, 5)
    printed = capsys.readouterr().out
    assert "| sqlite | 1 | 5 |" in printed and "| sqlite | 2 | 5 |" in printed
    assert list(tmp_path.glob("controlplane-*.json"))
