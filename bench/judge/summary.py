"""From outcomes to the rows of the report: one per scenario and judge (and the oracle).

>>> low, high = clopper_pearson(0, 20)
>>> low, round(high, 4)
(0.0, 0.1684)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from bench.judge.run import ORACLE, Outcome
from bench.judge.scenarios import Scenario

Row = dict[str, Any]


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a binomial proportion: ``k`` successes in ``n``."""
    if n <= 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(special.betaincinv(k, n - k + 1, tail))
    high = 1.0 if k == n else float(special.betaincinv(k + 1, n - k, 1 - tail))
    return low, high


def rows(scenarios: list[Scenario], outcomes: dict[str, dict[str, Outcome]]) -> list[Row]:
    table = []
    for scenario in scenarios:
        results = outcomes[scenario.name]
        oracle = results[ORACLE]
        for judge, outcome in results.items():
            table.append(_row(scenario, judge, outcome, None if judge == ORACLE else oracle))
    return table


def _row(scenario: Scenario, judge: str, outcome: Outcome, oracle: Outcome | None) -> Row:
    valid = outcome.look != -2
    n = int(valid.sum())
    rolled = (outcome.look >= 0) & valid
    k = int(rolled.sum())
    requests = outcome.requests[rolled].astype(np.float64)
    aa = scenario.is_aa
    applies = not (aa and judge == ORACLE)
    rate_ci = clopper_pearson(k, n) if applies else (None, None)
    row: Row = {
        "scenario": scenario.name,
        "kind": "A/A" if aa else "regression",
        "judge": judge,
        "reps": int(outcome.look.shape[0]),
        "rollbacks": k if applies else None,
        "false_rollback_rate": _rate(k, n) if aa and applies else None,
        "fpr_ci_low": rate_ci[0] if aa else None,
        "fpr_ci_high": rate_ci[1] if aa else None,
        "power": _rate(k, n) if not aa else None,
        "power_ci_low": rate_ci[0] if not aa else None,
        "power_ci_high": rate_ci[1] if not aa else None,
        "median_requests_to_rollback": float(np.median(requests)) if applies and k else None,
        "p90_requests_to_rollback": float(np.percentile(requests, 90)) if applies and k else None,
        "mean_requests_to_rollback": float(requests.mean()) if applies and k else None,
        "bad_outcomes_before_rollback": float(outcome.bad[valid].mean()) if applies and n else None,
        "oracle_ratio": _oracle_ratio(outcome, oracle) if not aa else None,
        "seconds_per_call": outcome.seconds / outcome.calls if applies and outcome.calls else None,
        "judge_calls": outcome.calls,
        "judge_seconds": outcome.seconds,
        "rollback_metrics": dict(sorted(outcome.failing.items())),  # how often each metric was named at a rollback
        "judge_errors": int((~valid).sum()),
        "error": outcome.messages[0] if outcome.messages else None,
    }
    return row


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def _oracle_ratio(outcome: Outcome, oracle: Outcome | None) -> float | None:
    """Mean candidate requests to detection, the judge's over the oracle's, on the repetitions where
    both detected (the same streams, so the ratio compares like with like)."""
    if oracle is None:
        return None
    both = (outcome.look >= 0) & (oracle.look >= 0)
    if not both.any():
        return None
    return float(outcome.requests[both].mean() / max(oracle.requests[both].mean(), 1.0))
