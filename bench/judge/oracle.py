"""The oracle: Wald's sequential probability ratio test, knowing both variants' true distributions.

It reads only the candidate's data (errors, latency-bucket counts, arrived labels) and sums, over
those metrics, the log-likelihood ratio of the candidate's true (noise-free) laws against the
baseline's. It rolls back when the sum reaches log(1/alpha); there is no acceptance boundary. No
test that must hold its error rate at alpha can, on average, detect this alternative with fewer
requests (Wald-Wolfowitz), so it is the yardstick of the speed of detection. With no difference
(A/A) there is nothing to detect, and the oracle does not apply.

With a shadow lane it reads the lane's data too, each term the log-ratio of the truth against the
law with the candidate equal to the baseline:

- each shadow copy, failed or not: the candidate's error rate against the baseline's;
- each arrived labelled pair, by its category (both right, only the baseline right, only the
  candidate right, both wrong): its probability under the true joint law against the joint law of
  the baseline with itself, at the same phi (``ShadowLane.joint``).

Given the baseline's outcome on a row, the candidate's (in the lane) is independent of everything
else the oracle reads, so the sum is still the log-likelihood ratio of all it reads.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from bench.judge.scenarios import Scenario
from bench.judge.simulate import Streams

_TINY = 1e-300


def log_ratio(candidate: NDArray[np.float64], baseline: NDArray[np.float64]) -> NDArray[np.float64]:
    """log(candidate / baseline) per cell, 0 where the two agree (so 0/0 adds nothing).

    >>> log_ratio(np.array([0.2, 0.0]), np.array([0.1, 0.0])).round(4).tolist()
    [0.6931, 0.0]
    """
    same = candidate == baseline
    ratio = np.log(np.maximum(candidate, _TINY)) - np.log(np.maximum(baseline, _TINY))
    return np.where(same, 0.0, ratio)


def log_lr(scenario: Scenario, streams: Streams) -> NDArray[np.float64]:
    """(rep, look): the cumulative log-likelihood ratio of the candidate's data at each look."""
    cand, base = scenario.candidate, scenario.baseline
    error = _binary(cand.error_rate, base.error_rate)
    label = _binary(cand.positive_rate, base.positive_rate)
    latency = log_ratio(cand.latency.bucket_probs(), base.latency.bucket_probs())
    errors = streams.errors[:, 1]
    llr: NDArray[np.float64] = (
        errors * error[0]
        + (streams.requests[:, 1] - errors) * error[1]
        + streams.latency[:, 1] @ latency
        + streams.label_right[:, 1] * label[0]
        + streams.label_wrong[:, 1] * label[1]
    )
    if scenario.shadow is not None:
        llr = llr + lane_log_lr(scenario, streams)
    return llr


def lane_log_lr(scenario: Scenario, streams: Streams) -> NDArray[np.float64]:
    """(rep, look): the shadow lane's terms of ``log_lr``, zero without a lane."""
    lane, paired = scenario.shadow, streams.paired
    requests, errors = streams.shadow_requests, streams.shadow_errors
    if lane is None or paired is None or requests is None or errors is None:
        return np.zeros(streams.errors[:, 1].shape)
    cand, base = scenario.candidate, scenario.baseline
    error = _binary(cand.error_rate, base.error_rate)
    truth, _ = lane.joint(base.positive_rate, cand.positive_rate)
    null, _ = lane.joint(base.positive_rate, base.positive_rate)
    category = log_ratio(np.array(truth), np.array(null))
    llr: NDArray[np.float64] = (
        errors * error[0] + (requests - errors) * error[1] + np.einsum("rcl,c->rl", paired, category)
    )
    return llr


def _binary(candidate: float, baseline: float) -> NDArray[np.float64]:
    """log-ratios of (event, no event) under two Bernoulli laws."""
    return log_ratio(np.array([candidate, 1 - candidate]), np.array([baseline, 1 - baseline]))


def detect(scenario: Scenario, streams: Streams, alpha: float) -> NDArray[np.int64]:
    """(rep,): the first look at which the oracle rolls back, -1 if it never does."""
    crossed = log_lr(scenario, streams) >= np.log(1 / alpha)
    first = np.argmax(crossed, axis=1)
    return np.where(crossed.any(axis=1), first, -1).astype(np.int64)
