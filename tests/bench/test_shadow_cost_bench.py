"""Smoke test of ``python -m bench.gateway.shadow_cost`` on a few hundred requests: both gateways
built, the lane's copies predicted (none shed, none without the lane), the table and the record
have their shape. Figures come from the benchmark run, never from here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gateway.shadow_cost import main

pytestmark = pytest.mark.slow


def test_the_lane_predicts_a_copy_of_every_request_the_baseline_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "record.json"
    args = ["--rounds", "1", "--calls", "200", "--chunk", "50", "--results-dir", str(tmp_path), "--json", str(out)]
    assert main(args) == 0

    record = json.loads(out.read_text())
    [off], [on] = record["rounds"]["off"], record["rounds"]["on"]
    assert off["copies"] == 0 and off["cpu_us_per_request"] > 0
    # sample 1.0 of what the baseline served at 50%: about half the requests, every one predicted
    assert 50 < on["copies"] < 150 and on["cpu_us_per_request"] > 0

    table = capsys.readouterr().out
    assert "| on (sample 1.0) | " in table and "µs of the loop thread's CPU per copy" in table
    assert list(tmp_path.glob("shadow-cost-*.json")) and list(tmp_path.glob("shadow-cost-*.md"))
