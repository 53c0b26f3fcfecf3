"""The shipped specs: every example and the demo's spec load; the deliberately invalid example is refused
at exactly the lines its comments mark."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest

from modelcanary.domain.errors import SpecError
from modelcanary.domain.spec import load_spec
from modelcanary.domain.traffic import Step, StickyKey

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VALID = sorted(path for path in EXAMPLES.glob("*.yaml") if not path.name.startswith("invalid-"))
INVALID = sorted(EXAMPLES.glob("invalid-*.yaml"))


def test_the_examples_are_there() -> None:
    assert EXAMPLES / "fraud-rollout.yaml" in VALID
    assert EXAMPLES / "invalid-rollout.yaml" in INVALID


@pytest.mark.parametrize("path", VALID, ids=lambda path: path.name)
def test_example_loads(path: Path) -> None:
    load_spec(path.read_text(), source=path.name)


def test_fraud_rollout_is_the_documented_plan() -> None:
    spec = load_spec((EXAMPLES / "fraud-rollout.yaml").read_text()).spec
    assert (spec.endpoint, spec.baseline, spec.candidate) == (
        "fraud",
        "models:/fraud@champion",
        "models:/fraud@challenger",
    )
    steps = [step for step in spec.traffic.steps if isinstance(step, Step)]
    assert steps == spec.traffic.steps  # weight steps only
    assert [step.weight for step in steps] == [1, 5, 25, 50, 100]
    for step in steps:
        assert step.min_requests > 0
        # written in minutes: whole minutes, at least one
        assert step.min_duration >= 60 and step.min_duration % 60 == 0
        assert step.max_duration > step.min_duration and step.max_duration % 60 == 0
    assert spec.traffic.sticky_key == StickyKey(header="x-user-id")
    assert [(metric.kind, metric.name) for metric in spec.analysis.metrics] == [
        ("error_rate", "error-rate"),
        ("latency", "latency-p99"),
        ("quality", "accuracy"),
    ]
    latency, quality = spec.analysis.metrics[1], spec.analysis.metrics[2]
    assert latency.kind == "latency" and latency.quantile == 0.99
    assert quality.kind == "quality" and quality.measure == "accuracy"
    assert spec.on_success.set_alias == "champion"


def test_invalid_example_is_refused_at_the_marked_lines() -> None:
    path = EXAMPLES / "invalid-rollout.yaml"
    text = path.read_text()
    marked = [number for number, line in enumerate(text.splitlines(), start=1) if "# MISTAKE" in line]
    assert len(marked) == 3
    with pytest.raises(SpecError) as caught:
        load_spec(text, source=path.name)
    assert [where for where, _message in caught.value.problems] == [
        f"spec.candidate (line {marked[0]})",
        f"spec.traffic.steps[1].maxDuration (line {marked[1]})",
        f"spec.traffic.steps[2].minRequest (line {marked[2]})",
    ]
    messages = [message for _where, message in caught.value.problems]
    assert "is not a model ref; write models:/NAME@ALIAS" in messages[0]
    assert messages[1] == "Value error, maxDuration must be at least minDuration"
    assert messages[2] == "Extra inputs are not permitted"
    assert str(caught.value).startswith("invalid rollout spec invalid-rollout.yaml:\n")


@pytest.mark.parametrize("path", INVALID, ids=lambda path: path.name)
def test_every_invalid_example_is_refused(path: Path) -> None:
    with pytest.raises(SpecError):
        load_spec(path.read_text(), source=path.name)


def test_demo_spec_loads() -> None:
    text = files("modelcanary.sim").joinpath("demo-rollout.yaml").read_text()
    spec = load_spec(text, source="demo-rollout.yaml")
    assert spec.name == "fraud-challenger"
    steps = [step for step in spec.spec.traffic.steps if isinstance(step, Step)]
    assert steps == spec.spec.traffic.steps  # weight steps only
    assert [step.weight for step in steps] == [10, 25, 50, 100]
    assert spec.spec.on_success.set_alias == "champion"
