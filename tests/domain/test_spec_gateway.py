"""The spec's data-plane settings (circuit breaker and deadline): typed values, and refusals that
name the field and its YAML line."""

from __future__ import annotations

import pytest

from modelcanary.domain.errors import SpecError
from modelcanary.domain.spec import CircuitBreaker, load_spec

BASE = """\
apiVersion: modelcanary/v1
kind: Rollout
spec:
  endpoint: fraud
  baseline: models:/fraud@champion
  candidate: models:/fraud/2
  traffic:
    steps: [{weight: 5}]
TRAFFIC
  analysis:
    metrics: [{kind: error_rate}]
"""
#  7 traffic  8 steps  9 the first line put in for TRAFFIC


def _spec(traffic: str) -> str:
    return BASE.replace("TRAFFIC\n", traffic)


def _problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        load_spec(text, source="rollout.yaml")
    return caught.value.problems


def test_the_breaker_is_on_by_default_with_no_deadline() -> None:
    traffic = load_spec(_spec("")).spec.traffic
    assert traffic.circuit_breaker == CircuitBreaker(consecutive_failures=5, deadline=None)


def test_breaker_settings() -> None:
    text = _spec("    circuitBreaker:\n      consecutiveFailures: 3\n      deadline: 250ms\n")
    assert load_spec(text).spec.traffic.circuit_breaker == CircuitBreaker(consecutive_failures=3, deadline=0.25)


@pytest.mark.parametrize(
    ("lines", "where", "message"),
    [
        (
            "    circuitBreaker:\n      consecutiveFailures: 0\n",
            "spec.traffic.circuitBreaker.consecutiveFailures (line 10)",
            "Input should be greater than or equal to 1",
        ),
        (
            "    circuitBreaker:\n      deadline: soon\n",
            "spec.traffic.circuitBreaker.deadline (line 10)",
            "Value error, 'soon' is not a duration; write e.g. 30s, 5m, 1h or 250ms",
        ),
        (
            "    circuitBreaker:\n      deadline: 0s\n",
            "spec.traffic.circuitBreaker (line 9)",
            "Value error, deadline must be more than 0 (e.g. 250ms); leave it out for none",
        ),
        (
            "    circuitBreaker:\n      failures: 3\n",
            "spec.traffic.circuitBreaker.failures (line 10)",
            "Extra inputs are not permitted",
        ),
    ],
)
def test_bad_breaker_settings_name_field_and_line(lines: str, where: str, message: str) -> None:
    assert _problems(_spec(lines)) == [(where, message)]
