"""What the CLI shows of a rollout: one report, rendered as rich tables or as JSON."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.table import Column, Table

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.domain.judgement import Judgement, Look, Verdict
from modelcanary.domain.spec import load_spec
from modelcanary.domain.state import RolloutState, Transition
from modelcanary.domain.telemetry import RolloutTelemetry
from modelcanary.engine.analysis import analyse, pair

_STYLE = {Verdict.PASS: "green", Verdict.FAIL: "bold red", Verdict.INCONCLUSIVE: "yellow", Verdict.NO_DATA: "dim"}


@dataclass(frozen=True)
class Report:
    state: RolloutState
    history: list[Transition]
    telemetry: RolloutTelemetry
    judgement: Judgement  # the judge's view of the current telemetry, recomputed (judges are pure)

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout": self.state.model_dump(mode="json", exclude={"judge_memory"}),
            "judgement": {**self.judgement.model_dump(mode="json"), "verdict": self.judgement.verdict.value},
            "requests": {"baseline": self.telemetry.baseline.requests, "candidate": self.telemetry.candidate.requests},
            "labels": {"baseline": self.telemetry.baseline.labels, "candidate": self.telemetry.candidate.labels},
            "history": [transition.model_dump(mode="json") for transition in self.history],
        }


def rollout_report(store: SqlStore, rollout_id: str) -> Report:
    state, text = store.get(rollout_id)
    telemetry = pair(store.read_telemetry(rollout_id))
    look = Look(at=state.updated_at - state.created_at, weight=state.weight, telemetry=telemetry)
    judgement, _ = analyse(load_spec(text), look, state.judge_memory)
    return Report(state=state, history=store.history(rollout_id), telemetry=telemetry, judgement=judgement)


def _when(at: float | None) -> str:
    return dt.datetime.fromtimestamp(at).strftime("%H:%M:%S") if at else "-"


def rollouts_table(states: list[RolloutState]) -> Table:
    # the id is the handle every other command takes: never cut it; the reason wraps instead
    table = Table(*(Column(name, no_wrap=True) for name in ("id", "endpoint", "phase", "weight", "models")), "reason")
    for state in states:
        phase = state.phase.value + (" (paused)" if state.paused else "")
        models = f"{state.baseline.name} {state.baseline.version} -> {state.candidate.version}"
        table.add_row(state.id, state.endpoint, phase, f"{state.weight:g}%", models, state.reason)
    return table


def status_view(report: Report) -> Group:
    state, telemetry = report.state, report.telemetry
    head = Table.grid(padding=(0, 2))
    head.add_row("rollout", state.id)
    head.add_row(
        "phase",
        f"{state.phase.value}{' (paused)' if state.paused else ''}, step {state.step + 1}, "
        f"candidate at {state.weight:g}%",
    )
    head.add_row("models", f"{state.baseline.uri} -> {state.candidate.uri}")
    head.add_row(
        "traffic",
        f"baseline {telemetry.baseline.requests} requests, {telemetry.baseline.labels} labels; "
        f"candidate {telemetry.candidate.requests} requests, {telemetry.candidate.labels} labels",
    )
    head.add_row("reason", state.reason)
    metrics = Table(
        "metric", "verdict", "baseline", "candidate", "limit", "samples b/c", title=f"judge: {report.judgement.judge}"
    )
    for metric in report.judgement.metrics:
        metrics.add_row(
            metric.name,
            f"[{_STYLE[metric.verdict]}]{metric.verdict.value}[/]",
            *(
                f"{value:.4g}" if value is not None else "-"
                for value in (metric.baseline, metric.candidate, metric.limit)
            ),
            f"{metric.baseline_samples}/{metric.candidate_samples}",
        )
    history = Table("at", "actor", "phase", "weight", "reason", title="history")
    for transition in report.history:
        history.add_row(
            _when(transition.at),
            transition.actor,
            transition.target.value,
            f"{transition.weight:g}%",
            transition.reason,
        )
    return Group(head, metrics, history)
