"""Smoke test of ``python -m bench.gateway.instructions``: one line counted for real under
callgrind on a few requests, and the table read from counts. Figures come from the benchmark run,
never from here."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from bench.gateway.instructions import Line, _total, count, table
from bench.gateway.model import prepare


@pytest.mark.slow
@pytest.mark.usefixtures("valgrind_installed")
def test_a_line_is_counted_under_callgrind_from_its_first_counted_request(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared.pickle"
    prepared.write_bytes(pickle.dumps(prepare(tmp_path / "prepared")))
    few, more = (count("bare", "no-op", prepared, n, tmp_path / str(n), None) for n in (20, 220))
    # the warm-up and start are not counted: 200 more requests cost about 200 requests' more
    per_request = (more - few) / 200
    assert 0 < few < more and few < 40 * per_request


def test_the_table_reads_the_gateways_work_against_the_bare_apps(tmp_path: Path) -> None:
    out = tmp_path / "callgrind.out"
    out.write_text("events: Ir\nsummary: 1234\nfl=x\n")
    assert _total(out) == 1234
    lines = [
        Line("this", "bare", "model", 8_000, 10),
        Line("this", "bare", "no-op", 1_000, 10),
        Line("this", "gateway", "model", 9_000, 10),
        Line("this", "gateway", "no-op", 3_000, 10),
    ]
    text = table(lines)
    assert "| this | gateway | model | 900 |" in text
    assert "| this | model | 100 | 1.125 |" in text and "| this | no-op | 200 | 3.000 |" in text
