"""``python -m bench.gateway.steadiness``: its figures from made-up chunk times, and a short real run
that prints its table and writes its record. Figures come from the benchmark run, never from here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gateway.steadiness import main, summarise

MS = 1e-3


def test_slow_chunks_count_only_when_their_thread_was_on_the_cpu() -> None:
    steady = [(0.5 * MS, 0.5 * MS)] * 1_000
    slowed = [(1.0 * MS, 0.99 * MS)] * 40  # the CPU ran it at half speed: on the CPU throughout
    preempted = [(1.0 * MS, 0.1 * MS)] * 10  # waited for the CPU: not the CPU's speed
    figures = summarise(steady + slowed + preempted)

    assert figures.chunks == 1_050
    assert figures.median_ms == pytest.approx(0.5)
    assert figures.slow_on_cpu_share == pytest.approx(40 / 1_050)
    assert figures.longest_slow_run == 40
    assert figures.slow_periods == 2  # two disjoint windows of 20 chunks
    assert figures.worst_period_slowdown == pytest.approx(2.0)


def test_a_short_run_prints_and_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seconds", "0.2", "--json", str(tmp_path / "s.json"), "--results-dir", str(tmp_path)]) == 0
    assert "| 1 | " in capsys.readouterr().out
    (row,) = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert row["chunks"] > 0 and row["p99_ms"] >= row["median_ms"] > 0
    assert list(tmp_path.glob("steadiness-*.json"))
