"""One rollout's whole story as a single self-contained HTML file, for a post-mortem or an audit.

Spec, timeline (every transition with its actor and reason, the weight over time), the evidence
each decision was taken on (every metric's e-value against 1/alpha), the final decision, who acted,
the model versions, and the rollout's audit events with their hashes and the chain's verify result.
Plots are inline SVG drawn here; the file links to nothing, so it reads the same offline, years on.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any, Protocol

from modelcanary.api.svg import duration, evidence_chart, step_chart
from modelcanary.controller.report import Report, ReportStore, rollout_report, variant_summary
from modelcanary.domain.judgement import Judgement
from modelcanary.domain.state import ModelVersion
from modelcanary.domain.telemetry import Variant

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} h1 small{font-weight:normal;color:#666;font-size:.6em}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top} th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:.8em;overflow:auto;border:1px solid #e5e5e5}
.outcome{font-size:1.2em;padding:.5em .8em;border-radius:4px;background:#eef}
.promoted{background:#e3f6e3} .rolled_back,.aborted{background:#fde8e8} .awaiting_approval{background:#fff6d8}
.pass{color:#1a7f1a} .fail{color:#c00;font-weight:bold} .inconclusive{color:#a66f00} .no_data{color:#888}
.hash{font-family:ui-monospace,monospace;font-size:11px;word-break:break-all}
.ok{color:#1a7f1a;font-weight:bold} .broken{color:#c00;font-weight:bold} .muted{color:#666}
"""


class _Link(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def position(self) -> int: ...
    @property
    def reason(self) -> str: ...


class StoryStore(ReportStore, Protocol):
    def audit_events(self, rollout_id: str | None = None) -> list[dict[str, Any]]: ...

    def verify_audit(self) -> tuple[int, _Link | None]: ...


def report_html(
    store: StoryStore,
    rollout_id: str,
    *,
    now: float | None = None,
    chain: tuple[int, _Link | None] | None = None,
    whole_log: bool = True,
) -> str:
    """Read a rollout's report and audit events from the store, verify the whole audit chain (an
    event of this rollout is only as trustworthy as the chain it sits in), and render them.

    ``chain`` is the chain's verification (its length and first broken link), if the caller has
    one at hand: the server keeps its last walk while the chain's head stays put. ``whole_log``
    False, for a reader limited to some endpoints, gives only whether the chain holds: its length
    and where it broke are the whole log's."""
    count, broken = chain if chain is not None else store.verify_audit()
    link = None if broken is None else {"id": broken.id, "position": broken.position, "reason": broken.reason}
    verify = {"ok": broken is None, "count": count if whole_log else None, "broken": link if whole_log else None}
    return render(
        rollout_report(store, rollout_id),
        spec_text=store.get(rollout_id)[1],
        audit=store.audit_events(rollout_id),
        verify=verify,
        now=now,
    )


def render(
    report: Report,
    *,
    spec_text: str,
    audit: Sequence[dict[str, Any]],
    verify: dict[str, Any],
    now: float | None = None,
) -> str:
    state = report.state
    title = f"Rollout {state.name} ({state.id})"
    sections = [
        f'<h1>Rollout {_e(state.name)} <small id="rollout-id">{_e(state.id)}</small></h1>',
        f'<p class="outcome {state.phase.value}" id="outcome"><b>{_phase(report)}</b>: {_e(state.reason)}</p>',
        _summary(report, audit),
        _decision(report),
        _timeline(report),
        _evidence(report),
        _traffic(report),
        f'<h2 id="spec">Spec</h2><pre>{_e(spec_text)}</pre>',
        _audit(audit, verify),
        f'<p class="muted">Report written {_when(now) if now is not None else "by modelcanary"}; '
        "times are UTC, offsets from the rollout's start.</p>",
    ]
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def _summary(report: Report, audit: Sequence[dict[str, Any]]) -> str:
    state = report.state
    ended = state.updated_at if state.phase.is_terminal() else None
    rows = [
        ("endpoint", _e(state.endpoint)),
        ("baseline", _model(state.baseline)),
        ("candidate", _model(state.candidate)),
        ("started", _when(state.created_at)),
        ("ended", f"{_when(ended)} (after {duration(ended - state.created_at)})" if ended else "still running"),
        ("final step", f"step {state.step + 1}, candidate at {state.weight:g}% of traffic"),
        ("judge", _e(report.judgement.judge)),
        ("actors", _actors(report, audit)),
    ]
    body = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<h2 id="summary">Summary</h2><table>{body}</table>'


def _model(version: ModelVersion) -> str:
    extra = [f"run {_e(version.run_id)}" if version.run_id else "", _e(version.source) if version.source else ""]
    detail = ", ".join(part for part in extra if part)
    return f"<code>{_e(version.uri)}</code>" + (f' <span class="muted">({detail})</span>' if detail else "")


def _actors(report: Report, audit: Sequence[dict[str, Any]]) -> str:
    """Everyone who changed the rollout or left an audit event on it, with what they did."""
    done: dict[str, Counter[str]] = {}
    for transition in report.history:
        what = transition.target.value if transition.source != transition.target else "step/pause change"
        done.setdefault(transition.actor, Counter())[what] += 1
    for event in audit:
        done.setdefault(str(event["actor"]), Counter())[str(event["action"])] += 1
    items = []
    for actor, counts in sorted(done.items()):
        what = ", ".join(f"{name} x{count}" if count > 1 else name for name, count in sorted(counts.items()))
        items.append(f'<li><b class="actor">{_e(actor)}</b>: {_e(what)}</li>')
    return f"<ul>{''.join(items)}</ul>" if items else "none"


def _decision(report: Report) -> str:
    state, judgement = report.state, report.judgement
    last = report.history[-1] if report.history else None
    by = f" by <b>{_e(last.actor)}</b> at {_when(last.at)}" if last and state.phase.is_terminal() else ""
    lead = (
        f"<p>{_phase(report)}{by}: {_e(state.reason)}</p>"
        if state.phase.is_terminal()
        else f"<p>Not decided yet; the judge's view of the telemetry now: <b>{judgement.verdict.value}</b>.</p>"
    )
    return f'<h2 id="decision">Decision</h2>{lead}{_judgement_table(judgement)}'


def _judgement_table(judgement: Judgement) -> str:
    head = "".join(
        f"<th>{name}</th>"
        for name in ("metric", "verdict", "baseline", "candidate", "limit", "bound", "samples b/c", "e-value", "why")
    )
    rows = []
    for metric in judgement.metrics:
        unit = f" {_e(metric.unit)}" if metric.unit else ""
        numbers = "".join(
            f'<td class="num">{_number(value)}{unit if value is not None else ""}</td>'
            for value in (metric.baseline, metric.candidate, metric.limit, metric.bound)
        )
        rows.append(
            f'<tr class="metric"><td>{_e(metric.name)} <span class="muted">({_e(metric.kind)})</span></td>'
            f'<td class="{metric.verdict.value}">{metric.verdict.value}</td>{numbers}'
            f'<td class="num">{metric.baseline_samples}/{metric.candidate_samples}</td>'
            f'<td class="num">{_number(metric.e_value)}</td><td>{_e(metric.reason)}</td></tr>'
        )
    overall = ""
    if judgement.e_value is not None and judgement.threshold is not None:
        overall = (
            f"<p>Combined evidence against the candidate: e-value <b>{_number(judgement.e_value)}</b>; the judge "
            f"rolls back at 1/alpha = {_number(judgement.threshold)}.</p>"
        )
    hold = f"<p>Held: {_e(judgement.hold)}</p>" if judgement.hold else ""
    return f"{overall}{hold}<table><tr>{head}</tr>{''.join(rows)}</table>"


def _timeline(report: Report) -> str:
    state = report.state
    start = state.created_at
    points = [(0.0, 0.0)] + [(t.at - start, t.weight) for t in report.history]
    end = max(state.updated_at - start, points[-1][0], 1.0)
    chart = step_chart({"candidate weight": points}, end=end, y_max=100.0, label="candidate weight over time")
    rows = []
    for transition in report.history:
        change = (
            f"{transition.source.value} → {transition.target.value}"
            if transition.source != transition.target
            else transition.target.value
        )
        rows.append(
            f'<tr class="transition"><td>{_when(transition.at)}<br><span class="muted">+'
            f'{duration(transition.at - start)}</span></td><td class="actor">{_e(transition.actor)}</td>'
            f"<td>{_e(change)}{' (paused)' if transition.paused else ''}</td><td>{transition.step + 1}</td>"
            f'<td class="num">{transition.weight:g}%</td><td>{_e(transition.reason)}</td></tr>'
        )
    head = "<tr><th>at</th><th>actor</th><th>phase</th><th>step</th><th>weight</th><th>reason</th></tr>"
    return f'<h2 id="timeline">Timeline</h2>{chart}<table>{head}{"".join(rows)}</table>'


def _evidence(report: Report) -> str:
    """Each metric's e-value at every decision that saved its judgement, against 1/alpha."""
    start = report.state.created_at
    looks = [(t.at - start, Judgement.model_validate(t.judgement)) for t in report.history if t.judgement]
    if not report.state.phase.is_terminal():
        looks.append((report.state.updated_at - start, report.judgement))
    series: dict[str, list[tuple[float, float]]] = {}
    threshold = None
    for at, judgement in looks:
        threshold = judgement.threshold or threshold
        for metric in judgement.metrics:
            if metric.e_value is not None:
                series.setdefault(metric.name, []).append((at, metric.e_value))
    if not series or threshold is None:
        return (
            '<h2 id="evidence">Evidence</h2><p>No e-values were recorded with a decision '
            f"(the {_e(report.judgement.judge)} judge reports none, or no decision was taken on evidence).</p>"
        )
    end = max(max(at for at, _ in looks), 1.0)
    chart = evidence_chart(series, threshold=threshold, end=end, label="each metric's e-value at each decision")
    tables = "".join(
        f"<h3>At +{duration(at)}</h3>{_judgement_table(judgement)}" for at, judgement in looks if judgement.metrics
    )
    return (
        '<h2 id="evidence">Evidence</h2><p>Evidence against "the candidate is within its margin", per metric, '
        "at each decision. It crossing the dashed line (1/alpha) is what rolls a rollout back.</p>"
        f"{chart}{tables}"
    )


def _traffic(report: Report) -> str:
    head = (
        "<tr><th>variant</th><th>requests</th><th>errors</th><th>error rate</th><th>p50 ms</th><th>p90 ms</th>"
        "<th>p95 ms</th><th>p99 ms</th><th>labels</th><th>positive labels</th></tr>"
    )
    rows = []
    for variant in Variant:
        summary = variant_summary(report.telemetry.of(variant))
        latency = "".join(f'<td class="num">{_number(value)}</td>' for value in summary["latency_ms"].values())
        rows.append(
            f'<tr><th>{variant.value}</th><td class="num">{summary["requests"]}</td>'
            f'<td class="num">{summary["errors"]}</td><td class="num">{_percent(summary["error_rate"])}</td>'
            f'{latency}<td class="num">{summary["labels"]}</td><td class="num">{summary["positive_labels"]}</td></tr>'
        )
    return f'<h2 id="traffic">Traffic</h2><table>{head}{"".join(rows)}</table>'


def _audit(events: Iterable[dict[str, Any]], verify: dict[str, Any]) -> str:
    broken = verify.get("broken")
    count = verify.get("count")
    if verify.get("ok"):
        length = f" {count} events," if count is not None else ""
        check = f'<p class="ok" id="verify">Audit chain verified:{length} no broken link.</p>'
    else:
        where = f" at event id {broken['id']} (position {broken['position']}): {broken['reason']}" if broken else ""
        check = f'<p class="broken" id="verify">Audit chain BROKEN{_e(where)}.</p>'
    head = "<tr><th>id</th><th>at</th><th>actor</th><th>action</th><th>detail</th><th>prev hash / hash</th></tr>"
    rows = [
        f'<tr class="audit"><td>{_e(str(event.get("id", "")))}</td><td>{_when(float(event["at"]))}</td>'
        f'<td class="actor">{_e(str(event["actor"]))}</td><td>{_e(str(event["action"]))}</td>'
        f"<td><code>{_e(json.dumps(event.get('detail'), sort_keys=True))}</code></td>"
        f'<td class="hash">{_e(str(event.get("prev_hash", "")))}<br>{_e(str(event.get("hash", "")))}</td></tr>'
        for event in events
    ]
    return f'<h2 id="audit">Audit trail</h2>{check}<table>{head}{"".join(rows)}</table>'


def _phase(report: Report) -> str:
    state = report.state
    return _e(state.phase.value.replace("_", " ").upper() + (" (paused)" if state.paused else ""))


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return dt.datetime.fromtimestamp(at, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _e(text: str) -> str:
    return escape(text, quote=True)
