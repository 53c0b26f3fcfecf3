"""What the CLI shows of a rollout: one report, rendered as rich tables or as JSON.

Rich reads ``[...]`` in a cell as markup: every stored string (a reason, an actor, a name) goes
in escaped, or a reason like ``see [/] notes`` breaks the view for everyone from then on."""

from __future__ import annotations

import datetime as dt

from rich.console import Group
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from modelcanary.controller.report import Report
from modelcanary.domain.judgement import Judgement, Verdict
from modelcanary.domain.state import RolloutState

_STYLE = {Verdict.PASS: "green", Verdict.FAIL: "bold red", Verdict.INCONCLUSIVE: "yellow", Verdict.NO_DATA: "dim"}


def _when(at: float | None) -> str:
    return dt.datetime.fromtimestamp(at).strftime("%H:%M:%S") if at else "-"


def rollouts_table(states: list[RolloutState]) -> Table:
    # the id is the handle every other command takes: never cut it; the reason wraps instead
    table = Table(*(Column(name, no_wrap=True) for name in ("id", "endpoint", "phase", "weight", "models")), "reason")
    for state in states:
        phase = state.phase.value + (" (paused)" if state.paused else "")
        models = f"{state.baseline.name} {state.baseline.version} -> {state.candidate.version}"
        table.add_row(*map(escape, (state.id, state.endpoint, phase, f"{state.weight:g}%", models, state.reason)))
    return table


def status_view(report: Report) -> Group:
    state, telemetry = report.state, report.telemetry
    head = Table.grid(padding=(0, 2))
    head.add_row("rollout", escape(state.id))
    head.add_row(
        "phase",
        f"{state.phase.value}{' (paused)' if state.paused else ''}, step {state.step + 1}, "
        f"candidate at {state.weight:g}%",
    )
    head.add_row("models", escape(f"{state.baseline.uri} -> {state.candidate.uri}"))
    head.add_row(
        "traffic",
        f"baseline {telemetry.baseline.requests} requests, {telemetry.baseline.labels} labels; "
        f"candidate {telemetry.candidate.requests} requests, {telemetry.candidate.labels} labels",
    )
    head.add_row("reason", escape(state.reason))
    judgement = report.judgement
    if judgement.hold:
        head.add_row("hold", escape(judgement.hold))
    metrics = Table(
        "metric",
        "verdict",
        "baseline",
        "candidate",
        "limit",
        "samples b/c",
        "e-value",
        title=escape(f"judge: {judgement.judge}"),
    )
    for metric in judgement.metrics:
        metrics.add_row(
            escape(metric.name),
            f"[{_STYLE[metric.verdict]}]{metric.verdict.value}[/]",
            *(
                f"{value:.4g}" if value is not None else "-"
                for value in (metric.baseline, metric.candidate, metric.limit)
            ),
            f"{metric.baseline_samples}/{metric.candidate_samples}",
            "-" if metric.e_value is None else f"{metric.e_value:.3g}",
        )
    history = Table("at", "actor", "phase", "weight", "reason", title="history")
    for transition in report.history:
        history.add_row(
            _when(transition.at),
            escape(transition.actor),
            transition.target.value,
            f"{transition.weight:g}%",
            escape(transition.reason),
        )
    return Group(head, *_evidence(report.judgement), metrics, history)


def _evidence(judgement: Judgement) -> list[Text | Table]:
    """Each metric's e-value, and their weighted mean that the judge acts on, as a bar against the
    1/alpha line (judges without e-values show none)."""
    threshold = judgement.threshold
    rows = [(metric.name, metric.e_value, metric.verdict) for metric in judgement.metrics]
    rows.append(("all metrics", judgement.e_value, judgement.verdict))
    if threshold is None or all(e_value is None for _, e_value, _ in rows):
        return []
    title = Text(f"evidence against the candidate (the judge rolls back at 1/alpha = {threshold:.3g})", style="bold")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")  # an indent under the title
    for name, e_value, verdict in rows:
        if e_value is not None:
            grid.add_row("", escape(name), f"[{_STYLE[verdict]}]{_bar(e_value, threshold)}[/]│", f"{e_value:.3g}")
    return [title, grid]


def _bar(e_value: float, threshold: float, width: int = 20) -> str:
    """Evidence on a log scale from 1 to the threshold (the 1/alpha line, drawn after the bar by
    the views): full when the judge rolls back.

    >>> _bar(1.0, 20.0, width=4), _bar(20.0, 20.0, width=4)
    ('░░░░', '████')
    """
    import math

    share = 0.0 if e_value <= 1 else min(math.log(e_value) / math.log(threshold), 1.0)
    filled = round(share * width)
    return "█" * filled + "░" * (width - filled)
