"""The shipped production example (``examples/fraud-rollout.yaml``) at the traffic it is sized for,
200 requests a second: through the real controller, judge and SQLite store on a simulated clock,
with a gateway's cumulative telemetry written every 30 s, an identical candidate is promoted
within every step's maxDuration, and a worse one is rolled back at the first step.

It once named the Flagger-like threshold judge, which at 2 candidate requests a second rolled the
identical candidate back after 8-13 minutes (seeds 1-3: one interval with two errors in 120
requests is above "baseline plus half a point"), and its 1% step had 60 minutes, where the default judge took 55-279
(``run`` with seeds 1-10) to show the candidate's accuracy within a point on so little traffic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelcanary.adapters.store.sql import SqlStore
from modelcanary.adapters.testing import FakeRegistry
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import start_rollout
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import load_spec
from modelcanary.domain.telemetry import LATENCY_EDGES_MS, Variant, VariantTelemetry, score_bucket
from modelcanary.domain.traffic import Step

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud-rollout.yaml"
RPS, TICK_S, T0 = 200, 30.0, 1_000_000.0


class Traffic:
    """One variant's requests, as a gateway counts them: an error rate, log-normal latency around
    40 ms, and a label for 90% of requests (10% fraud) that the model gets right ``accuracy`` of
    the time, scored 0.9 or 0.1 against the example's threshold of 0.5."""

    def __init__(self, rng: np.random.Generator, *, error_rate: float = 0.005, accuracy: float = 0.95) -> None:
        self.rng, self.error_rate, self.accuracy = rng, error_rate, accuracy
        self.counts = VariantTelemetry()

    def serve(self, n: int) -> None:
        counts, rng = self.counts, self.rng
        counts.requests += n
        counts.errors += int(rng.binomial(n, self.error_rate))
        edges = np.searchsorted(LATENCY_EDGES_MS, rng.lognormal(np.log(40.0), 0.5, n))
        for bucket, many in zip(*np.unique(edges, return_counts=True), strict=True):
            counts.latency_counts[int(bucket)] += int(many)
        labelled = int(rng.binomial(n, 0.9))
        fraud = int(rng.binomial(labelled, 0.1))
        caught, cleared = int(rng.binomial(fraud, self.accuracy)), int(rng.binomial(labelled - fraud, self.accuracy))
        high, low = score_bucket(0.9), score_bucket(0.1)
        counts.positive_label_scores[high] += caught
        counts.positive_label_scores[low] += fraud - caught
        counts.negative_label_scores[low] += cleared
        counts.negative_label_scores[high] += labelled - fraud - cleared


def run(
    tmp_path: Path, seed: int, *, judge: str | None = None, candidate: dict[str, float] | None = None
) -> tuple[Phase, float, list[str]]:
    """The example's rollout (with another ``judge``, if given) with the candidate as given: how it
    ended, when (minutes), and its history."""
    store = SqlStore(f"sqlite:///{tmp_path / f'{seed}.db'}")
    registry = FakeRegistry({"fraud": ["1", "2"]}, {("fraud", "champion"): "1", ("fraud", "challenger"): "2"})
    now = T0
    text = EXAMPLE.read_text()
    if judge is not None:
        text = text.replace("\n  analysis:\n", f"\n  analysis:\n    judge: {judge}\n", 1)
        assert f"judge: {judge}" in text
    state = start_rollout(store, registry, text, source="test", actor="test", now=now)
    controller = Controller(store=store, registry=registry, clock=lambda: now)
    rng = np.random.default_rng(seed)
    variants = {Variant.BASELINE: Traffic(rng), Variant.CANDIDATE: Traffic(rng, **(candidate or {}))}
    controller.tick()
    current = store.get(state.id)[0]
    while not current.phase.is_terminal() and now < T0 + 12 * 3600:
        now += TICK_S
        arrived = int(RPS * TICK_S)
        to_candidate = int(rng.binomial(arrived, current.weight / 100))
        variants[Variant.CANDIDATE].serve(to_candidate)
        variants[Variant.BASELINE].serve(arrived - to_candidate)
        store.write_telemetry("gateway", [(state.id, variant, each.counts) for variant, each in variants.items()])
        controller.tick()
        current = store.get(state.id)[0]
    history = [f"{(t.at - T0) / 60:.1f} min: {t.reason}" for t in store.history(state.id)]
    store.close()
    return current.phase, (now - T0) / 60, history


def test_an_identical_candidate_is_promoted_within_every_steps_max_duration(tmp_path: Path) -> None:
    phase, _minutes, history = run(tmp_path, seed=9)  # the slowest first step of seeds 1-10: 279 min
    assert phase is Phase.PROMOTED, "\n".join(history)
    steps = [step for step in load_spec(EXAMPLE.read_text()).spec.traffic.steps if isinstance(step, Step)]
    assert len(history) == len(steps) + 1  # entered each step, then promoted: no hold, no timeout


@pytest.mark.parametrize(
    ("candidate", "within_min"),
    [
        ({"error_rate": 0.2}, 10),  # a broken artefact: "shows up as errors within minutes"
        ({"error_rate": 0.015}, 240),  # three times the errors: 1.5%, half a point past the margin
        ({"accuracy": 0.90}, 60),  # five points less accurate
    ],
    ids=["broken", "errors-x3", "accuracy-5-points"],
)
def test_a_worse_candidate_is_rolled_back_at_the_first_step(
    tmp_path: Path, candidate: dict[str, float], within_min: float
) -> None:
    phase, minutes, history = run(tmp_path, seed=1, candidate=candidate)
    assert phase is Phase.ROLLED_BACK, "\n".join(history)
    assert minutes <= within_min and len(history) == 2, "\n".join(history)  # at 1%, within its maxDuration


def test_the_threshold_judge_rolls_the_identical_candidate_back_on_a_minutes_noise(tmp_path: Path) -> None:
    """Why the example leaves the default judge: 2 candidate requests a second make each minute's
    check of "baseline plus half a point" a coin toss, and five failed checks roll back."""
    phase, minutes, history = run(tmp_path, seed=1, judge="threshold")
    assert phase is Phase.ROLLED_BACK and minutes <= 30, "\n".join(history)
    assert "failed checks" in history[-1]
