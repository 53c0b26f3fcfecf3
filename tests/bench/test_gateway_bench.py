"""Smoke test of ``python -m bench.gateway`` for about a second a setup, on setups 1 (bare uvicorn
+ model), 2 (``modelcanary gateway`` with a rollout at 50%) and 3 (paced, without and with the
shadow lane): real servers, real wrk, and the
table and JSON record have their shape. Figures come from the benchmark run, never from here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gateway.__main__ import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("wrk_installed"),
]


def test_setups_1_and_2_print_and_write_their_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "record.json"
    args = ["--setups", "1,2,3", "--rounds", "1", "--seconds", "1", "--warmup", "0", "--connections", "4"]
    assert main([*args, "--json", str(out), "--markdown", str(tmp_path / "t.md"), "--results-dir", str(tmp_path)]) == 0

    record = json.loads(out.read_text())
    rows = {row["setup"]: row for row in record["rows"]}
    assert sorted(rows)[:2] == ["1 bare uvicorn + model", "1g bare app on granian (RSGI) + model"]
    assert sorted(rows)[2:4] == ["2 gateway 50/50 sticky", "2g gateway 50/50 sticky on granian (--server granian)"]
    assert [name[:2] for name in sorted(rows)[4:]] == ["3a", "3b"]  # setup 3 without and with the shadow lane
    for row in rows.values():
        assert row["rps"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
        assert row["errors"] == 0  # every request answered 200
        assert row["rounds"] == 1 and len(row["each_round"]) == 1
    assert "3" not in record["not_run"]
    for setup in ("3a", "3b"):  # the gateway's CPU over the live requests it served, each round
        [cpu_us] = record["notes"][f"{setup} gateway CPU µs per live request, per round"].strip("; ").split("; ")
        assert float(cpu_us.replace(",", "")) > 0
    assert rows["1 bare uvicorn + model"]["rps_vs_bare"] == 1.0
    assert rows["2 gateway 50/50 sticky"]["rps_vs_bare"] == pytest.approx(
        rows["2 gateway 50/50 sticky"]["rps"] / rows["1 bare uvicorn + model"]["rps"]
    )
    goals = {goal["goal"]: goal for goal in record["goals"]}
    goal = goals["(2) >= 0.9x (1) throughput"]
    assert goal["value"] == pytest.approx(rows["2 gateway 50/50 sticky"]["rps_vs_bare"], abs=0.01)
    assert goal["met"] is (goal["value"] >= 0.9)
    assert goals["(2) >= 3x MLServer (the faster of 5 and 5b)"]["met"] is None  # not measured in this run

    table = capsys.readouterr().out
    assert "| 1 bare uvicorn + model | " in table and "| 2 gateway 50/50 sticky | " in table
    assert (tmp_path / "t.md").read_text().strip() == table.strip()
    assert list(tmp_path.glob("gateway-*.json")) and list(tmp_path.glob("gateway-*.md"))


def test_the_mlserver_and_ray_goals_read_the_faster_of_each_servers_two_settings() -> None:
    from bench.gateway.report import goals

    def row(setup: str, rps: float) -> dict[str, object]:
        return {"setup": setup, "rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0}

    rows = [row("2 gateway 50/50 sticky", 4_000.0), row("6 Ray Serve", 20.0)]
    ray_goal = "(2) >= 10x Ray Serve (the faster of 6 and 6b)"
    alone = {goal["goal"]: goal for goal in goals(rows)}[ray_goal]
    assert alone["value"] == 200.0 and alone["met"] is True
    tuned = {g["goal"]: g for g in goals([*rows, row("6b Ray Serve, max_ongoing_requests 64", 500.0)])}[ray_goal]
    assert tuned["value"] == 8.0 and tuned["met"] is False

    mlserver_goal = "(2) >= 3x MLServer (the faster of 5 and 5b)"
    rows = [row("2 gateway 50/50 sticky", 4_000.0), row("5 MLServer", 1_000.0)]
    assert {g["goal"]: g for g in goals(rows)}[mlserver_goal]["value"] == 4.0
    batching = {g["goal"]: g for g in goals([*rows, row("5b MLServer adaptive batching", 2_000.0)])}[mlserver_goal]
    assert batching["value"] == 2.0 and batching["met"] is False


def test_a_goal_reading_a_row_with_failed_requests_is_not_judged() -> None:
    """Not by the rows that are left: the faster competitor failing must not leave the goal to
    the slower one, and a p50 of failed requests says nothing."""
    from bench.gateway.report import goals

    def row(setup: str, rps: float, errors: int = 0) -> dict[str, object]:
        return {"setup": setup, "rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "errors": errors}

    rows = [
        row("1 bare uvicorn + model", 5_000.0, errors=3),
        row("2 gateway 50/50 sticky", 4_000.0),
        row("5 MLServer", 1_000.0),
        row("5b MLServer adaptive batching", 2_000.0, errors=1),
    ]
    judged = {g["goal"]: g for g in goals(rows)}
    for goal in ("(2) >= 3x MLServer (the faster of 5 and 5b)", "(2) p50 within +0.5 ms of (1)"):
        assert (judged[goal]["value"], judged[goal]["met"]) == (None, None), goal


def test_an_open_loop_row_shows_the_median_offered_rate_of_its_rounds() -> None:
    from bench.gateway.load import Load
    from bench.gateway.report import summarise

    def paced(offered: float) -> Load:
        return Load(100, 1.0, offered, 1.0, 2.0, 0, 0.1, offered_rps=offered)

    (row,) = summarise({"3a gateway 50/50, paced": [paced(3_100.0), paced(3_900.0), paced(3_700.0)]})
    assert row["offered_rps"] == 3_700.0  # not the first round's


def test_the_shadow_lane_goal_is_the_median_of_each_rounds_ratio() -> None:
    """3a and 3b run back to back in each round: a round where the machine stalled weighs on the
    pair, not on one side's median (3a at 2.8, 51 and 56 ms read 0.07x as a ratio of medians)."""
    from bench.gateway.load import Load
    from bench.gateway.report import goals, summarise

    def paced(p99: float) -> Load:
        return Load(100, 1.0, 100.0, 1.0, p99, 0, 0.1, offered_rps=100.0)

    rows = summarise(
        {
            "3a gateway 50/50, paced": [paced(2.8), paced(51.0), paced(56.0)],
            "3b + 100% shadow lane, paced": [paced(3.3), paced(3.4), paced(23.7)],
        }
    )
    (goal,) = [g for g in goals(rows) if g["goal"].startswith("(3)")]
    assert goal["value"] == pytest.approx(23.7 / 56.0)  # the median of the rounds' 1.18, 0.067 and 0.42


def test_setup_4_batches_the_light_model_and_the_boosted_trees(tmp_path: Path) -> None:
    """Four gateways at 64 connections: unbatched and batched, on the LogisticRegression of every
    setup and on 200 boosted trees (registered through MLflow with skops, as a user would)."""
    out = tmp_path / "record.json"
    args = ["--setups", "4", "--rounds", "1", "--seconds", "1", "--warmup", "0", "--results-dir", str(tmp_path)]
    assert main([*args, "--json", str(out)]) == 0

    record = json.loads(out.read_text())
    rows = {row["setup"][:2]: row for row in record["rows"]}
    assert sorted(rows) == ["4a", "4b", "4c", "4d"]
    assert all(row["errors"] == 0 and row["rps"] > 0 for row in rows.values())
    goals = {goal["goal"]: goal for goal in record["goals"]}
    boosted = goals["(4) the same on 200 boosted trees (4d over 4c)"]
    assert boosted["value"] == pytest.approx(rows["4d"]["rps"] / rows["4c"]["rps"])
    assert boosted["met"] is (boosted["value"] >= 2)
