"""A rollout with a story, for the dashboard and report tests: started by a person on the real MLflow
registry, driven by a real controller on a hand-moved clock over telemetry written through a real
SQLite store, so its history, judgements, telemetry and audit trail are all real. The fixtures are
imported by conftest.py."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import pytest

from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import run_command, start_rollout
from modelcanary.domain.phases import Phase
from modelcanary.domain.state import RolloutState
from modelcanary.domain.telemetry import Variant, VariantTelemetry
from modelcanary.engine.decide import Command

STARTER = "token:alice"


def story_spec(endpoint: str = "fraud") -> str:
    # no alias moves and no tags: the session's registry is shared with other tests
    document = {
        "apiVersion": "modelcanary/v1",
        "kind": "Rollout",
        "metadata": {"name": f"{endpoint}-v2"},
        "spec": {
            "endpoint": endpoint,
            "baseline": "models:/fraud@champion",
            "candidate": "models:/fraud@challenger",
            "traffic": {
                "steps": [
                    {"weight": 10, "minRequests": 50, "minDuration": "60s", "maxDuration": "1h"},
                    {"weight": 50, "minRequests": 50, "minDuration": "60s", "maxDuration": "1h"},
                ]
            },
            "analysis": {
                "alpha": 0.05,
                "metrics": [
                    {"kind": "error_rate", "margin": 0.05, "minRequests": 50},
                    {"kind": "latency", "quantile": 0.95, "margin": 0.5, "minRequests": 50},
                    {"kind": "quality", "name": "accuracy", "measure": "accuracy", "margin": 0.1, "minLabels": 50},
                ],
            },
            "onFailure": {"tagVersion": False},
        },
    }
    return json.dumps(document, indent=2)  # JSON is YAML


def counts(requests: int, *, errors: int = 0, correct: int = 0, wrong: int = 0, ms: float = 5.0) -> VariantTelemetry:
    """Cumulative counts: ``requests`` requests around ``ms`` each, and ``correct + wrong`` labelled
    predictions, half of each positive."""
    telemetry = VariantTelemetry()
    for index in range(requests):
        # spread over [ms/e, ms*e), so every quantile has requests above it
        telemetry.observe(latency_ms=ms * math.exp((index * 37 % 100) / 50 - 1), error=index < errors)
    for index in range(correct + wrong):
        label = index % 2
        guess = label if index < correct else 1 - label
        telemetry.observe_label(bucket=telemetry.observe_score(0.9 if guess else 0.1), label=label)
    return telemetry


@dataclass
class Story:
    """One rollout and the controller that drives it; ``now`` is the controller's clock."""

    store: SqlStore
    registry: MlflowRegistry
    now: float
    rollout_id: str = ""

    def __post_init__(self) -> None:
        self.controller = Controller(store=self.store, registry=self.registry, clock=lambda: self.now)

    def telemetry(self, baseline: VariantTelemetry, candidate: VariantTelemetry) -> None:
        self.store.write_telemetry(
            "gw-1", [(self.rollout_id, Variant.BASELINE, baseline), (self.rollout_id, Variant.CANDIDATE, candidate)]
        )

    def tick(self, at: float) -> list[RolloutState]:
        self.now = at
        return self.controller.tick()

    def state(self) -> RolloutState:
        return self.store.get(self.rollout_id)[0]

    def to_second_step(self) -> RolloutState:
        """Good telemetry and a minute later: the rollout advances to 50% (on what came after the
        first look: the judge bets on no look's requests before it)."""
        self.telemetry(counts(3000, correct=1350, wrong=150), counts(600, correct=450, wrong=50))
        (advanced,) = self.tick(self.now + 62)
        assert (advanced.phase, advanced.weight) == (Phase.CANARY, 50.0), advanced.reason
        return advanced


@pytest.fixture
def story(store: SqlStore, registry: MlflowRegistry) -> Story:
    """A rollout at step 1 (10%), with a first look's telemetry judged; the clock stands near now."""
    start = time.time() - 600
    story = Story(store=store, registry=registry, now=start)
    state = start_rollout(story.store, registry, story_spec(), source="story.yaml", actor=STARTER, now=start)
    story.rollout_id = state.id
    (entered,) = story.tick(start + 1)
    assert entered.phase is Phase.CANARY
    story.telemetry(counts(1000, correct=450, wrong=50), counts(20, correct=9, wrong=1))
    assert story.tick(start + 5) == []
    return story


@pytest.fixture
def ended_story(story: Story) -> Story:
    """The whole arc: step 1, step 2, paused and resumed by bob, then rolled back by the controller
    on a candidate that is wrong half the time."""
    story.to_second_step()
    run_command(story.store, story.rollout_id, Command.PAUSE, actor="token:bob", now=story.now + 10)
    run_command(story.store, story.rollout_id, Command.RESUME, actor="token:bob", now=story.now + 20)
    # the first look at 50% (no bet on the interval the weight changed in), then a bad one
    story.telemetry(counts(3100, correct=1400, wrong=155), counts(700, correct=495, wrong=55))
    assert story.tick(story.now + 25) == []
    story.telemetry(counts(5000, correct=2250, wrong=250), counts(3000, correct=1400, wrong=1400))
    (ended,) = story.tick(story.now + 6)
    assert ended.phase is Phase.ROLLED_BACK, ended.reason
    return story
