"""PNG figures of the rows (matplotlib, Agg backend): false rollbacks in A/A scenarios, and
candidate requests to rollback and power in the regressions, every judge beside the oracle."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, safe in worker-less CI too

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from bench.judge.run import ORACLE
from bench.judge.summary import Row

FALSE_ROLLBACKS = "judge-false-rollbacks.png"
REQUESTS = "judge-requests-to-rollback.png"
POWER = "judge-power.png"


def plot(rows: list[Row], directory: Path, *, alpha: float) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [
        _false_rollbacks([r for r in rows if r["kind"] == "A/A" and r["judge"] != ORACLE], directory, alpha),
        _requests([r for r in rows if r["kind"] == "regression"], directory),
        _power([r for r in rows if r["kind"] == "regression"], directory),
    ]


def _layout(rows: list[Row]) -> tuple[list[str], list[str], float]:
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    judges = list(dict.fromkeys(r["judge"] for r in rows))
    return scenarios, judges, 0.8 / max(len(judges), 1)


def _false_rollbacks(rows: list[Row], directory: Path, alpha: float) -> Path:
    scenarios, judges, width = _layout(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(scenarios)), 4.0))
    for j, judge in enumerate(judges):
        mine = {r["scenario"]: r for r in rows if r["judge"] == judge}
        x = np.array([i + (j - (len(judges) - 1) / 2) * width for i, s in enumerate(scenarios) if s in mine])
        rate = np.array([mine[s]["false_rollback_rate"] for s in scenarios if s in mine], dtype=float)
        low = np.array([mine[s]["fpr_ci_low"] for s in scenarios if s in mine], dtype=float)
        high = np.array([mine[s]["fpr_ci_high"] for s in scenarios if s in mine], dtype=float)
        ax.errorbar(x, rate, yerr=[rate - low, high - rate], fmt="o", capsize=3, label=judge)
    ax.axhline(alpha, color="black", linestyle="--", linewidth=1, label=f"alpha = {alpha:g}")
    ax.set_yscale("symlog", linthresh=0.01)  # linear near 0 and alpha, compressed up to 1
    ax.set_ylim(0, 1.05)
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=20, ha="right")
    ax.set_ylabel("false-rollback rate (95% CI)")
    ax.set_title("A/A scenarios: how often each judge rolls back a candidate that is no worse")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, directory / FALSE_ROLLBACKS)


def _requests(rows: list[Row], directory: Path) -> Path:
    scenarios, judges, width = _layout(rows)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(scenarios)), 4.5))
    for j, judge in enumerate(judges):
        mine = {r["scenario"]: r for r in rows if r["judge"] == judge and r["median_requests_to_rollback"]}
        x = np.array([i + (j - (len(judges) - 1) / 2) * width for i, s in enumerate(scenarios) if s in mine])
        median = np.array([mine[s]["median_requests_to_rollback"] for s in scenarios if s in mine], dtype=float)
        p90 = np.array([mine[s]["p90_requests_to_rollback"] for s in scenarios if s in mine], dtype=float)
        oracle = judge == ORACLE
        points = ax.scatter(x, median, label=judge, zorder=3, marker="*" if oracle else "o", s=60 if oracle else 25)
        if oracle:
            points.set_color("black")
        whisker = [np.zeros_like(median), p90 - median]
        ax.errorbar(x, median, yerr=whisker, fmt="none", capsize=2, alpha=0.5, color=points.get_facecolor()[0])
    ax.set_yscale("log")
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=45, ha="right", fontsize="small")
    ax.set_ylabel("candidate requests to rollback\n(median, whisker to p90)")
    ax.set_title("Regressions: exposure before rollback (among repetitions that rolled back)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, directory / REQUESTS)


def _power(rows: list[Row], directory: Path) -> Path:
    scenarios, judges, width = _layout(rows)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(scenarios)), 4.0))
    for j, judge in enumerate(judges):
        mine = {r["scenario"]: r for r in rows if r["judge"] == judge}
        x = [i + (j - (len(judges) - 1) / 2) * width for i, s in enumerate(scenarios) if s in mine]
        power = [mine[s]["power"] for s in scenarios if s in mine]
        color = {"color": "black"} if judge == ORACLE else {}
        ax.bar(x, power, width=width, label=judge, **color)  # type: ignore[arg-type]
    ax.axhline(0.9, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1.05)
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=45, ha="right", fontsize="small")
    ax.set_ylabel("power by the end of the run")
    ax.set_title("Regressions: share of repetitions rolled back")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, directory / POWER)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
