"""The contract every judge in ``judges.JUDGES`` keeps, whatever its statistics: a pure, replayable
fold over looks that names every metric, never passes without data, and catches a gross regression.

Streams are built as the gateway builds telemetry, one request at a time with ``observe`` and
``observe_label``, and cached, since every judge folds over the same ones.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Iterator

import numpy as np
import pytest

from modelcanary import judges
from modelcanary.domain.judgement import Judgement, Look, Memory, Verdict
from modelcanary.domain.metrics import Analysis
from modelcanary.domain.telemetry import RolloutTelemetry, VariantTelemetry

NAMES = sorted(judges.JUDGES)
LOOK_EVERY_S = 10.0
SPEC = Analysis.model_validate(
    {
        "metrics": [  # every kind, not in the default order, with names of our own
            {"kind": "quality", "name": "accuracy"},
            {"kind": "error_rate", "name": "errors"},
            {"kind": "drift", "name": "psi"},
            {"kind": "latency", "name": "p95"},
            {"kind": "cost", "name": "cpu"},
        ]
    }
)


class Stream:
    """Cumulative telemetry of both variants, grown request by request."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.baseline, self.candidate = VariantTelemetry(), VariantTelemetry()

    def serve(
        self,
        variant: VariantTelemetry,
        requests: int,
        *,
        error_rate: float = 0.01,
        median_ms: float = 40.0,
        accuracy: float = 0.9,
        labelled: float = 0.5,
        cpu_ms: float | None = 2.0,
    ) -> None:
        latency = self.rng.lognormal(math.log(median_ms), 0.5, requests)
        error, right, positive, label = self.rng.random((4, requests)) < [[error_rate], [accuracy], [0.3], [labelled]]
        for i in range(requests):
            variant.observe(latency_ms=float(latency[i]), error=bool(error[i]), cpu_ms=cpu_ms)
            if error[i]:
                continue
            predicted = bool(positive[i]) == bool(right[i])  # right predictions agree with the truth
            bucket = variant.observe_score(0.8 if predicted else 0.2)
            if label[i]:
                variant.observe_label(bucket=bucket, label=int(positive[i]))

    def look(self, at: float, *, same: bool = False) -> Look:
        """A snapshot: what the store would hand the judge. With ``same``, the candidate's telemetry
        is a copy of the baseline's."""
        candidate = self.baseline if same else self.candidate
        telemetry = RolloutTelemetry(
            baseline=VariantTelemetry.from_json(self.baseline.to_json()),
            candidate=VariantTelemetry.from_json(candidate.to_json()),
        )
        return Look(at=at, weight=50.0, telemetry=telemetry)


@functools.cache
def stream(name: str) -> tuple[Look, ...]:
    """Looks every 10 s. ``aa``: 30 min, identical telemetry; ``regression``: 30 min, candidate at 30%
    errors vs 1%, a thousand requests per variant per look; ``mixed``: 10 min, a candidate a little
    worse on errors, latency and accuracy; ``remote``: 10 min, the candidate served by a remote model,
    whose CPU time the gateway cannot measure; ``empty``: 30 min without a request."""
    s, looks = Stream(seed=sum(map(ord, name))), []
    minutes = 10 if name in ("mixed", "remote") else 30
    for k in range(1, minutes * 6 + 1):
        if name == "aa":
            s.serve(s.baseline, 300)
        elif name == "regression":
            s.serve(s.baseline, 1000)
            s.serve(s.candidate, 1000, error_rate=0.3)
        elif name == "mixed":
            s.serve(s.baseline, 200)
            s.serve(s.candidate, 200, error_rate=0.02, median_ms=44.0, accuracy=0.88)
        elif name == "remote":
            s.serve(s.baseline, 200)
            s.serve(s.candidate, 200, cpu_ms=None)
        looks.append(s.look(k * LOOK_EVERY_S, same=name == "aa"))
    return tuple(looks)


def fold(name: str, looks: tuple[Look, ...], memory: Memory | None = None) -> Iterator[tuple[Judgement, Memory]]:
    judge, memory = judges.get_judge(name), {} if memory is None else memory
    for look in looks:
        judgement, memory = judge(SPEC, look, memory)
        yield judgement, memory


@pytest.mark.parametrize("name", NAMES)
def test_one_metric_judgement_per_metric_in_spec_order(name: str) -> None:
    for judgement, _ in fold(name, stream("mixed")):
        assert judgement.judge == name
        assert [(m.name, m.kind) for m in judgement.metrics] == [(m.name, m.kind) for m in SPEC.metrics]
        assert all(isinstance(m.verdict, Verdict) for m in judgement.metrics)


@pytest.mark.parametrize("name", NAMES)
def test_memory_is_json_and_round_trips(name: str) -> None:
    for _, memory in fold(name, stream("mixed")):
        text = json.dumps(memory, allow_nan=False)  # strict JSON: what any store can keep
        assert json.loads(text) == memory


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_leaves_its_inputs_alone(name: str) -> None:
    judge = judges.get_judge(name)
    memory: Memory = {}
    for look in stream("mixed"):
        saved_memory = copy.deepcopy(memory)
        saved_telemetry = copy.deepcopy((look.telemetry.baseline.to_json(), look.telemetry.candidate.to_json()))
        first = judge(SPEC, look, memory)
        second = judge(SPEC, look, memory)
        assert first == second
        assert memory == saved_memory
        assert (look.telemetry.baseline.to_json(), look.telemetry.candidate.to_json()) == saved_telemetry
        assert first[1] is not memory
        memory = first[1]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [1, 5, 23, 59])
def test_replay_from_stored_memory_equals_one_fold(name: str, k: int) -> None:
    looks = stream("mixed")
    straight = list(fold(name, looks))
    stored = json.loads(json.dumps(straight[k - 1][1]))  # saved in the store, loaded by another process
    resumed = list(fold(name, looks[k:], stored))
    assert [judgement for judgement, _ in resumed] == [judgement for judgement, _ in straight[k:]]
    assert resumed[-1][1] == straight[-1][1]


@pytest.mark.parametrize("name", NAMES)
def test_no_data_is_never_a_pass(name: str) -> None:
    judgements = [judgement for judgement, _ in fold(name, stream("empty"))]
    assert all(m.verdict is Verdict.NO_DATA for m in judgements[0].metrics)
    assert all(m.verdict is not Verdict.PASS for judgement in judgements for m in judgement.metrics)


@pytest.mark.parametrize("name", NAMES)
def test_identical_variants_are_never_rolled_back(name: str) -> None:
    for judgement, _ in fold(name, stream("aa")):
        assert judgement.verdict is not Verdict.FAIL, judgement.summary()


@pytest.mark.parametrize("name", NAMES)
def test_a_gross_error_regression_is_rolled_back(name: str) -> None:
    first = next((judgement for judgement, _ in fold(name, stream("regression")) if judgement.failing()), None)
    assert first is not None, f"{name} never rolled back a candidate at 30% errors vs 1%"
    assert "errors" in [m.name for m in first.failing()], first.summary()


@pytest.mark.parametrize("name", NAMES)
def test_cost_is_no_data_where_cpu_time_was_not_measured(name: str) -> None:
    """A remote candidate costs the gateway nothing it can see: that is no data, not a cost of 0."""
    for judgement, _ in fold(name, stream("remote")):
        [cpu] = [m for m in judgement.metrics if m.name == "cpu"]
        assert cpu.verdict is Verdict.NO_DATA, cpu
        assert (cpu.baseline_samples > 0, cpu.candidate_samples) == (True, 0)
