"""Smoke test of ``python -m bench.gateway.overhead`` on a few hundred requests: both apps, both
models, in a loop and in a real uvicorn server under real wrk; the table and the record have their
shape. Figures come from the benchmark run, never from here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.gateway.overhead import NO_OP_ROW, NoOpBackend, NoOpEstimator, main
from modelcanary.domain.errors import RequestError
from modelcanary.domain.state import ModelVersion

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("wrk_installed"),
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

    table = capsys.readouterr().out
    assert "| gateway | no-op | " in table and "| gateway - bare | in a loop, µs |" in table
    assert list(tmp_path.glob("overhead-*.json")) and list(tmp_path.glob("overhead-*.md"))


def test_the_no_op_models_answer_a_constant_without_calling_the_model(
    pyfunc_backend: Any, mlflow_registry: Any
) -> None:
    """Each app's no-op is what it says: a constant per row, whatever the input. The gateway's is
    the real loaded model with only the estimator's method swapped, so the gateway's own checks
    still run (a bad input is still refused), and the loaded model is left as it was."""
    assert NoOpEstimator().predict_proba(np.ones((3, 4))).tolist() == [NO_OP_ROW] * 3

    version = ModelVersion(name="fraud", version="1")
    real = pyfunc_backend.load(version)
    no_op = NoOpBackend(pyfunc_backend).load(version)
    rows = {name: [0.5, 1.5] for name in mlflow_registry.features}
    assert no_op.predict(rows) == [NO_OP_ROW] * 2
    assert real.predict(rows) != [NO_OP_ROW] * 2  # the real model, untouched
    with pytest.raises(RequestError):
        no_op.predict({name: ["x", 1.0] for name in mlflow_registry.features})
