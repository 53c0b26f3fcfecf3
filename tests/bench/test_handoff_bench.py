"""Smoke test of ``python -m bench.handoff`` at a small size: it hands off and adopts what it says,
on each engine, and writes its table. Figures come from the benchmark run, never from here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.handoff.__main__ import main


def test_the_command_hands_off_adopts_and_writes_its_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "handoff.md"
    main(["--repeat", "1", "--predictions", "50", "120", "--markdown", str(table)])  # asserts each adoption whole
    printed = capsys.readouterr().out
    assert "| sqlite | 50 |" in printed and "| sqlite | 120 |" in printed
    if os.environ.get("MODELCANARY_REQUIRE_POSTGRES") == "1":
        assert "| postgresql | 120 |" in printed
    assert table.read_text().startswith("`python -m bench.handoff --repeat 1`")
