"""Medians over rounds, ratios to setup (1), the goals of issue 4 (reported, never asserted), and
the table and JSON record."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from bench.gateway.load import Load

BARE = "1 bare uvicorn + model"


def summarise(measured: dict[str, list[Load]]) -> list[dict[str, Any]]:
    """One row per label: the median of each figure over the rounds, and the ratios to (1)."""
    rows = []
    for label, loads in measured.items():
        generator = [load.generator_cpu_s / load.seconds for load in loads]
        row: dict[str, Any] = {
            "setup": label,
            "rounds": len(loads),
            "rps": statistics.median(load.rps for load in loads),
            "p50_ms": statistics.median(load.p50_ms for load in loads),
            "p99_ms": statistics.median(load.p99_ms for load in loads),
            "errors": sum(load.errors for load in loads),
            "generator_cpu_share": statistics.median(generator),  # of one core
            # each round offers half of that round's (1): the median, like every other figure
            "offered_rps": statistics.median(o) if (o := [x.offered_rps for x in loads if x.offered_rps]) else None,
            "each_round": [load.to_json() for load in loads],
        }
        rows.append(row)
    bare = next((row for row in rows if row["setup"] == BARE), None)
    for row in rows:
        row["rps_vs_bare"] = row["rps"] / bare["rps"] if bare else None
        row["p50_ms_minus_bare"] = row["p50_ms"] - bare["p50_ms"] if bare else None
    return rows


def _find(rows: list[dict[str, Any]], prefix: str) -> dict[str, Any] | None:
    return next((row for row in rows if row["setup"].startswith(prefix)), None)


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal of issue 4 with the measured value, or why it could not be judged."""

    def ratio(a: str, b: str, key: str = "rps") -> float | None:
        x, y = _find(rows, a), _find(rows, b)
        if not x or not y or not y[key] or x["errors"] or y["errors"]:
            return None  # a row with failed requests says nothing about speed
        return float(x[key] / y[key])

    def failed(*labels: str) -> bool:
        """Whether a row that ran had failed requests: a goal reading it is not judged (the
        faster competitor's row failing must not leave the goal to the slower one)."""
        return any(bool(row and row["errors"]) for row in (_find(rows, label) for label in labels))

    gateway, bare = _find(rows, "2 "), _find(rows, "1 ")
    checks: list[tuple[str, float | None, Callable[[float], bool], str]] = [
        ("(2) >= 0.9x (1) throughput", ratio("2 ", "1 "), lambda v: v >= 0.9, "{:.2f}x"),
        (
            "(2) p50 within +0.5 ms of (1)",
            gateway["p50_ms"] - bare["p50_ms"] if gateway and bare and not failed("2 ", "1 ") else None,
            lambda v: v <= 0.5,
            "{:+.2f} ms",
        ),
        (
            "(2) >= 3x MLServer (the faster of 5 and 5b)",
            None if failed("5 ", "5b") else _slowest(ratio("2 ", "5 "), ratio("2 ", "5b")),
            lambda v: v >= 3,
            "{:.2f}x",
        ),
        (
            "(2) >= 10x Ray Serve (the faster of 6 and 6b)",
            None if failed("6 ", "6b") else _slowest(ratio("2 ", "6 "), ratio("2 ", "6b")),
            lambda v: v >= 10,
            "{:.1f}x",
        ),
        (
            "(3) live p99 within +10% of (2) at the same load",
            None if failed("3a", "3b") else _paired_p99_ratio(_find(rows, "3b"), _find(rows, "3a")),
            lambda v: v <= 1.1,
            "{:.2f}x",
        ),
        ("(4) batching >= 2x unbatched", ratio("4b", "4a"), lambda v: v >= 2, "{:.2f}x"),
        ("(4) the same on 200 boosted trees (4d over 4c)", ratio("4d", "4c"), lambda v: v >= 2, "{:.2f}x"),
        ("(7) via gateway >= 0.9x direct", ratio("7b", "7a"), lambda v: v >= 0.9, "{:.2f}x"),
    ]
    return [
        {
            "goal": goal,
            "value": value,
            "shown": fmt.format(value) if value is not None else "not measured (or requests failed)",
            "met": ok(value) if value is not None else None,
        }
        for goal, value, ok, fmt in checks
    ]


def _paired_p99_ratio(lane: dict[str, Any] | None, alone: dict[str, Any] | None) -> float | None:
    """3b's p99 over 3a's: the median of each round's ratio (the two run back to back in a round,
    so a slow stretch of the machine weighs on both), not the ratio of medians taken apart, which
    one stalled round on either side sets (3a's rounds at 2.8, 51 and 56 ms once read 0.07x)."""
    if not lane or not alone or not alone["p99_ms"]:
        return None
    pairs = list(zip(lane["each_round"], alone["each_round"], strict=False))
    if len(pairs) != lane["rounds"] or len(pairs) != alone["rounds"]:
        return float(lane["p99_ms"] / alone["p99_ms"])  # rounds that do not pair up
    return float(statistics.median(x["p99_ms"] / y["p99_ms"] for x, y in pairs))


def _slowest(*ratios: float | None) -> float | None:
    """The smallest of the ratios measured: the gateway against the best a competitor did."""
    measured = [r for r in ratios if r is not None]
    return min(measured) if measured else None


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


def markdown(rows: list[dict[str, Any]], not_run: dict[str, str], checks: list[dict[str, Any]], setting: str) -> str:
    out = [
        f"{setting}\n",
        "| setup | req/s | p50 ms | p99 ms | req/s ÷ (1) | p50 - (1) ms | errors | load gen CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        offered = f" (offered {row['offered_rps']:.0f}/s)" if row["offered_rps"] else ""
        out.append(
            f"| {row['setup']}{offered} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{_num(row['rps_vs_bare'], '{:.2f}')} | {_num(row['p50_ms_minus_bare'], '{:+.2f}')} | {row['errors']} | "
            f"{row['generator_cpu_share']:.0%} |"
        )
    for key, why in not_run.items():
        out.append(f"| ({key}) not run: {why} | | | | | | | |")
    out += ["", "| goal (issue 4) | measured | met |", "|---|--:|:-:|"]
    for check in checks:
        met = {True: "yes", False: "**no**", None: "-"}[check["met"]]
        out.append(f"| {check['goal']} | {check['shown']} | {met} |")
    return "\n".join(out) + "\n"
