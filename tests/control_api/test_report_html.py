"""The post-mortem report of a real rollout: one self-contained HTML file that tells its story."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from modelcanary.adapters.store.schema import audit
from modelcanary.api.report_html import report_html
from modelcanary.cli.main import cli

Story = Any  # tests/control_api/conftest.py's Story


class _Text(HTMLParser):
    """The page's visible text, and every attribute that could fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.fetching: list[tuple[str, str]] = []
        self.hidden = 0

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.text.append(data)

    def handle_endtag(self, tag: str) -> None:
        self.hidden -= tag in ("style", "title")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hidden += tag in ("style", "title")
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "srcset", "action") and value:
                self.fetching.append((tag, value))


def _read(page: str) -> tuple[str, list[tuple[str, str]]]:
    parser = _Text()
    parser.feed(page)
    return re.sub(r"\s+", " ", " ".join(parser.text)), parser.fetching


def test_the_report_of_a_rolled_back_rollout_tells_the_whole_story(ended_story: Story) -> None:
    store, rollout_id = ended_story.store, ended_story.rollout_id
    page = report_html(store, rollout_id)
    text, fetching = _read(page)

    # self-contained: nothing to fetch, no URL at all, plots inline
    assert fetching == []
    assert not re.search(r"https?://", page)
    assert page.count("<svg") == 2  # the weight over time, the evidence over time
    assert "<script" not in page

    assert f"Rollout fraud-v2 {rollout_id}" in text
    assert "ROLLED BACK : rolled back: accuracy failed" in text
    # the timeline: every phase, every actor, with their reasons
    history = store.history(rollout_id)
    assert [t.target.value for t in history] == ["canary", "canary", "canary", "canary", "rolled_back"]
    assert page.count('<tr class="transition">') == len(history)
    for transition in history:
        assert transition.reason in text
    assert "pending → canary" in text and "canary → rolled_back" in text
    assert "paused by token:bob" in text and "resumed by token:bob" in text
    for actor in ("token:alice", "token:bob", "controller"):
        assert f"{actor} :" in text  # in the list of actors, with what each did
    # the evidence: every metric at every decision taken on evidence, against 1/alpha
    decided = [t for t in history if t.judgement]
    assert len(decided) == 2  # the advance to step 2 and the roll back
    assert text.count("At +") == 2
    for name in ("error-rate", "latency", "accuracy"):
        assert text.count(f"{name} (") >= 3  # the decision table and one per decision
    assert "1/alpha = 22.22" in text  # alpha 0.05 less the share spent on baseline bounds
    assert re.search(r"accuracy \(quality\) fail", text)
    # models, spec, traffic
    assert "models:/fraud/1" in text and "models:/fraud/2" in text
    assert '"minLabels": 50' in text
    assert re.search(r"candidate 3000 0 0.00%", text)
    # the audit trail with its hashes and the chain's verdict
    events = store.audit_events(rollout_id)
    assert [e["action"] for e in events][:2] == ["rollout.create", "rollout.canary"]
    assert page.count('<tr class="audit">') == len(events)
    for event in events:
        assert event["hash"] in text
    assert f"Audit chain verified: {len(store.audit_events())} events" in text


def test_a_tampered_audit_chain_shows_in_the_report(ended_story: Story) -> None:
    store = ended_story.store
    with store.engine.begin() as conn:
        first = conn.execute(sa.select(sa.func.min(audit.c.id))).scalar_one()
        conn.execute(audit.update().where(audit.c.id == first).values(actor="token:mallory"))
    text, _ = _read(report_html(store, ended_story.rollout_id))
    assert f"Audit chain BROKEN at event id {first} (position 0): hash does not match" in text
    assert "token:mallory" in text


def test_a_live_rollout_reports_the_judges_view_now(story: Story) -> None:
    text, _ = _read(report_html(story.store, story.rollout_id))
    assert "CANARY : step 1 of 2" in text and "still running" in text
    assert "Not decided yet; the judge's view of the telemetry now" in text


def test_the_report_command_writes_the_file(ended_story: Story, tmp_path: Path) -> None:
    out = tmp_path / "post-mortem.html"
    url = ended_story.store.engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli, ["report", ended_story.rollout_id, "--out", str(out), "--store", url])
    assert result.exit_code == 0, result.output
    assert f"{ended_story.rollout_id} (rolled_back) to {out}" in result.stderr
    text, fetching = _read(out.read_text())
    assert "ROLLED BACK : rolled back: accuracy failed" in text and "Audit chain verified" in text
    assert fetching == []


def test_the_report_command_names_an_unknown_rollout(tmp_path: Path) -> None:
    out = tmp_path / "x.html"
    result = CliRunner().invoke(cli, ["report", "nope", "--out", str(out), "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    assert "nope" in result.stderr
    assert not out.exists()
