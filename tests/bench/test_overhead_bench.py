"""Smoke test of ``python -m bench.gateway.overhead`` on a few hundred requests: both apps, both
models, in a loop and in a real uvicorn server under real wrk; the table and the record have their
shape. Figures come from the benchmark run, never from here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.gateway.overhead import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"),
]


def test_every_line_is_measured_both_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "record.json"
    args = ["--rounds", "1", "--calls", "200", "--seconds", "1", "--warmup", "0", "--results-dir", str(tmp_path)]
    assert main([*args, "--json", str(out)]) == 0

    record = json.loads(out.read_text())
    lines = {(line["app"], line["model"]): line for line in record["lines"]}
    assert sorted(lines) == [("bare", "model"), ("bare", "no-op"), ("gateway", "model"), ("gateway", "no-op")]
    for line in lines.values():
        assert len(line["loop_us"]) == 1 and len(line["server_us"]) == 1
        assert line["loop_us"][0] > 0 and line["server_us"][0] > 0
    # the no-op model is what it says: every line with the real model costs more than without it
    for app in ("bare", "gateway"):
        assert lines[app, "model"]["loop_us"][0] > lines[app, "no-op"]["loop_us"][0]

    table = capsys.readouterr().out
    assert "| gateway | no-op | " in table and "| gateway - bare | in a loop, µs |" in table
    assert list(tmp_path.glob("overhead-*.json")) and list(tmp_path.glob("overhead-*.md"))
