"""Smoke test of ``python -m bench.gateway.instructions``: one line counted for real under
callgrind on a few requests, and the table read from counts. Figures come from the benchmark run,
never from here."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from bench.gateway.instructions import Line, _total, count, count_in_server, table
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


@pytest.mark.slow
@pytest.mark.usefixtures("valgrind_installed", "wrk_installed")
def test_a_line_is_counted_in_a_server_under_wrk(tmp_path: Path) -> None:
    (tmp_path / "prepared.pickle").write_bytes(pickle.dumps(prepare(tmp_path / "prepared")))
    instructions, requests = count_in_server("bare", "no-op", tmp_path, 2, None)
    assert requests > 0 and instructions > 10_000 * requests  # the server's own work and the app's


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
    lines += [Line(line.tree, line.app, line.model, line.instructions * 2, 10, where="server") for line in lines]
    text = table(lines)
    assert "| loop | this | gateway | model | 900 |" in text and "| server | this | gateway | model | 1,800 |" in text
    assert "| loop | this | model | 100 | 1.125 |" in text and "| loop | this | no-op | 200 | 3.000 |" in text
    assert "| server | this | model | 200 | 1.125 |" in text
