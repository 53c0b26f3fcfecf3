"""The report: a table on the terminal, the rows as JSON, and a results file per run."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.judge.summary import Row


def table(rows: list[Row], *, title: str) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold")
    for name, justify in [
        ("scenario", "left"), ("judge", "left"), ("reps", "right"), ("false rollbacks [95% CI]", "right"),
        ("power", "right"), ("median req.", "right"), ("p90 req.", "right"), ("bad outcomes", "right"),
        ("vs oracle", "right"), ("ms/call", "right"),
    ]:  # fmt: skip
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    previous = None
    for row in rows:
        fpr = row["false_rollback_rate"]
        rate = "—" if fpr is None else f"{fpr:.3f} [{row['fpr_ci_low']:.3f}, {row['fpr_ci_high']:.3f}]"
        seconds = row["seconds_per_call"]
        out.add_row(
            row["scenario"] if row["scenario"] != previous else "",
            row["judge"] + (f" ({row['judge_errors']} raised)" if row["judge_errors"] else ""),
            str(row["reps"]),
            rate,
            _num(row["power"], ".3f"),
            _num(row["median_requests_to_rollback"], ",.0f"),
            _num(row["p90_requests_to_rollback"], ",.0f"),
            _num(row["bad_outcomes_before_rollback"], ",.1f"),
            _num(row["oracle_ratio"], ".2f"),
            _num(None if seconds is None else seconds * 1000, ".3f"),
            end_section=False,
        )
        previous = row["scenario"]
    return out


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table, for docs/judge-benchmark.md."""
    head = [
        "scenario", "judge", "reps", "false rollbacks [95% CI]", "power", "median req.", "p90 req.",
        "bad outcomes", "vs oracle", "ms/call",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["--:"] * (len(head) - 2)) + "|"]
    for row in rows:
        fpr, seconds = row["false_rollback_rate"], row["seconds_per_call"]
        cells = [
            row["scenario"],
            row["judge"] + (f" ({row['judge_errors']} raised)" if row["judge_errors"] else ""),
            str(row["reps"]),
            "—" if fpr is None else f"{fpr:.3f} [{row['fpr_ci_low']:.3f}, {row['fpr_ci_high']:.3f}]",
            _num(row["power"], ".3f"),
            _num(row["median_requests_to_rollback"], ",.0f"),
            _num(row["p90_requests_to_rollback"], ",.0f"),
            _num(row["bad_outcomes_before_rollback"], ",.1f"),
            _num(row["oracle_ratio"], ".2f"),
            _num(None if seconds is None else seconds * 1000, ".3f"),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _num(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def print_table(rows: list[Row], *, title: str) -> None:
    console = Console()
    if not console.is_terminal:  # a file or a pipe: wide enough that no cell wraps
        console = Console(width=170)
    console.print(table(rows, title=title))
    errors = {(r["scenario"], r["judge"]): r["error"] for r in rows if r["error"]}
    for (scenario, judge), message in errors.items():
        console.print(f"[red]{judge} raised on {scenario}:[/red] {message}")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_results(directory: Path, rows: list[Row], *, argv: list[str], seed: int, extra: dict[str, Any]) -> Path:
    """``directory/judge-<UTC timestamp>.json``: the rows and how they were made."""
    now = datetime.now(UTC)
    path = directory / f"judge-{now.strftime('%Y%m%dT%H%M%S%fZ')}.json"
    write_json(
        path,
        {
            "benchmark": "judge",
            "finished_at": now.isoformat(),
            "command": argv,
            "seed": seed,
            **extra,
            "machine": {
                "python": sys.version.split()[0],
                "implementation": platform.python_implementation(),
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
            },
            "rows": rows,
        },
    )
    return path
