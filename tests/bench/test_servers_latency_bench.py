"""Smoke test of ``python -m bench.gateway.servers_latency`` at a low rate for one short round:
the gateway on both servers, real processes under the real generators; the table and the record
have their shape. Figures come from the benchmark run, never from here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gateway.servers_latency import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("wrk_installed"),
]


def test_both_servers_are_measured_at_each_rate_and_saturated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "record.json"
    args = ["--rates", "200,400", "--rounds", "1", "--seconds", "1", "--results-dir", str(tmp_path)]
    assert main([*args, "--json", str(out)]) == 0

    record = json.loads(out.read_text())
    assert sorted(record["medians"]) == ["granian", "uvicorn"]
    for figures in record["medians"].values():
        assert sorted(figures) == sorted(
            [
                "p50 ms at 200/s",
                "p99 ms at 200/s",
                "p50 ms at 400/s",
                "p99 ms at 400/s",
                "saturated req/s",
                "saturated p50 ms",
            ]
        )
        assert figures["p99 ms at 400/s"] >= figures["p50 ms at 400/s"] > 0 and figures["saturated req/s"] > 0
    assert len(record["rounds"]) == 1
    table = capsys.readouterr().out
    assert "| figure (median over rounds) | uvicorn | granian |" in table
    assert list(tmp_path.glob("servers-latency-*.json"))
