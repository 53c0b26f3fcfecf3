"""Simulated rollouts, vectorised over a block of repetitions with numpy.

Per look interval (``judge_every_s``) and variant, with ``vol`` the expected requests:

- latency-bucket counts ~ Poisson(vol * p_bucket): Poisson splitting makes the buckets independent
  and their total Poisson(vol), exactly as if requests arrived one by one;
- errors ~ Binomial(requests, error_rate); the other requests are served predictions, each right
  with probability ``positive_rate``: right ~ Binomial(served, positive_rate);
- labels arrive later, each after its own exponential delay from a moment uniform in its interval.
  The delay being memoryless, this is exact as a chain: a new label arrives within its own
  interval with probability ``1 - c`` (``c = mean/dt * (1 - exp(-dt/mean))``), and a pending one
  within the next interval with probability ``1 - exp(-dt/mean)``, whenever it was made; so
  arrivals ~ Binomial(new, 1 - c) + Binomial(pending, 1 - exp(-dt/mean)), interval by interval.
  In expectation that is the outcomes convolved with the discretised delay pmf (``delay_pmf``);
  drawing Poisson(convolution) instead would redraw noise the outcomes already carry, and nearly
  double the variance of the cumulative label counts, which the judges would take for a difference.

A scenario with a shadow lane (``shadow: {sample: S, agreement: PHI}``) adds, per interval, after
every draw above (so the streams above are the same with or without a lane, for a seed):

- copies of the baseline's served rows: Binomial(right, S) of its right ones, Binomial(wrong, S) of
  its wrong ones (not sent to anyone: they add no candidate request, no bad outcome);
- each copy fails with the candidate's error rate (its per-minute conditions included, as its live
  requests): a shadow error, no pair;
- each other copy is a pair, the candidate right with P(both right) / p_b where the baseline was
  right and (p_c - P(both right)) / (1 - p_b) where it was wrong, P(both right) = p_b p_c + PHI
  sqrt(p_b (1 - p_b) p_c (1 - p_c)) (``ShadowLane.joint``), p the variants' ``positive_rate``;
- the four categories' labels (both right, only the baseline, only the candidate, both wrong)
  arrive by the same chain as the other labels, drawn apart from the baseline's own label.

Noise (see scenarios.yaml): per minute, an AR(1) log-factor on each variant's traffic volume
(independently), and one shared by both variants on their error rate and latency scale; optionally
one per variant on those too. Standard normals are drawn in one fixed order whatever the knobs, so
scenarios that differ only in a knob see the same underlying draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bench.judge.distributions import BUCKETS
from bench.judge.scenarios import Scenario, ShadowLane
from modelcanary.domain.shadow import ShadowTelemetry
from modelcanary.domain.telemetry import SCORE_EDGES, RolloutTelemetry, VariantTelemetry, score_bucket

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]
SCORE = 0.9  # every prediction is served at this score; its label says whether it was right
SCORE_BUCKET = score_bucket(SCORE)
SCORE_BUCKETS = len(SCORE_EDGES) + 1


@dataclass(frozen=True)
class Streams:
    """Cumulative counts at each look of a block of repetitions. Axes: (rep, variant, look[, bucket]),
    variant 0 the baseline and 1 the candidate."""

    look_at: Floats  # (looks,) seconds at each look
    weight: Floats  # (looks,) the candidate's weight (percent) during the interval before each look
    requests: Ints
    errors: Ints
    served_right: Ints  # predictions served (not errors) that turn out right
    served_wrong: Ints
    label_right: Ints  # labels arrived by each look
    label_wrong: Ints
    latency: Ints  # (rep, variant, look, BUCKETS)
    # the shadow lane's, None without one: (rep, look) copies made and failed; (rep, 4, look) labelled
    # pairs arrived, as ShadowTelemetry.paired_labels (both right, baseline only, candidate only, both wrong)
    shadow_requests: Ints | None = None
    shadow_errors: Ints | None = None
    paired: Ints | None = None

    @property
    def reps(self) -> int:
        return int(self.requests.shape[0])

    def increments(self, counts: Ints) -> Ints:
        """Per-interval counts from cumulative ones, along the look axis."""
        return np.diff(counts, axis=2, prepend=np.zeros_like(counts[:, :, :1]))

    def bad_outcomes(self) -> Ints:
        """(rep, look): errors plus wrong predictions the candidate has served by each look."""
        return self.errors[:, 1] + self.served_wrong[:, 1]

    def telemetry(self, rep: int, look: int) -> RolloutTelemetry:
        """What a judge sees at ``look``: fresh objects, so no judge can change another's input."""
        candidate = self._variant(rep, 1, look)
        if self.shadow_requests is not None and self.shadow_errors is not None and self.paired is not None:
            # pairs, discordant rows and score differences are not simulated: no judge reads them
            candidate.shadow = ShadowTelemetry(
                requests=int(self.shadow_requests[rep, look]),
                errors=int(self.shadow_errors[rep, look]),
                paired_labels=self.paired[rep, :, look].tolist(),
            )
        return RolloutTelemetry(baseline=self._variant(rep, 0, look), candidate=candidate)

    def _variant(self, rep: int, variant: int, look: int) -> VariantTelemetry:
        served = int(self.served_right[rep, variant, look] + self.served_wrong[rep, variant, look])
        scores, positive, negative = [0] * SCORE_BUCKETS, [0] * SCORE_BUCKETS, [0] * SCORE_BUCKETS
        scores[SCORE_BUCKET] = served
        positive[SCORE_BUCKET] = int(self.label_right[rep, variant, look])
        negative[SCORE_BUCKET] = int(self.label_wrong[rep, variant, look])
        return VariantTelemetry(
            requests=int(self.requests[rep, variant, look]),
            errors=int(self.errors[rep, variant, look]),
            latency_counts=self.latency[rep, variant, look].tolist(),
            score_counts=scores,
            positive_label_scores=positive,
            negative_label_scores=negative,
        )


def simulate(scenario: Scenario, rng: np.random.Generator, reps: int) -> Streams:
    s = scenario
    dt, looks, minutes = s.judge_every_s, s.looks, -(-s.duration_s // 60)  # minutes rounded up
    look_start = np.arange(looks) * dt
    weight = np.array([s.weight_at(float(t)) for t in look_start])

    eps_traffic = rng.standard_normal((reps, 2, minutes))
    eps_shared = rng.standard_normal((reps, 1, minutes))
    eps_own = rng.standard_normal((reps, 2, minutes))
    z_traffic = ar1(eps_traffic, s.noise.ar1_rho, s.noise.minute_sd)
    z_conditions = ar1(eps_shared, s.noise.ar1_rho, s.noise.minute_sd) + ar1(
        eps_own, s.noise.ar1_rho, s.noise.independent_sd
    )

    volume = _volume(s, z_traffic)  # (rep, variant, look)
    minute = look_start // 60
    per_minute = np.exp(z_conditions)  # (rep, variant, minute): scale of error rate and latency
    latency = np.empty((reps, 2, looks, BUCKETS), dtype=np.int64)
    errors = np.empty((reps, 2, looks), dtype=np.int64)
    models = (s.baseline, s.candidate)
    for v, model in enumerate(models):
        if np.all(per_minute[:, v] == 1.0):
            probs = model.latency.bucket_probs()  # no noise: one distribution for every look
        else:
            probs = model.latency.bucket_probs(per_minute[:, v])[:, minute]  # (rep, look, bucket)
        latency[:, v] = rng.poisson(volume[:, v, :, None] * probs)
    requests = latency.sum(axis=3)
    for v, model in enumerate(models):
        rate = np.minimum(model.error_rate * per_minute[:, v, minute], 1.0)
        errors[:, v] = rng.binomial(requests[:, v], rate)
    positive_rate = np.array([m.positive_rate for m in models])[None, :, None]
    right = rng.binomial(requests - errors, positive_rate)
    wrong = requests - errors - right
    label_right, label_wrong = _arrivals(rng, np.stack([right, wrong]), s.label_delay_mean_s, dt)
    lane: tuple[Ints | None, ...] = (None, None, None)
    if s.shadow is not None:  # its draws come last, so a lane changes none of the streams above
        lane = tuple(
            counts.cumsum(axis=-1)
            for counts in _lane(s, s.shadow, rng, right[:, 0], wrong[:, 0], per_minute[:, 1, minute])
        )
    return Streams(
        look_at=(look_start + dt).astype(np.float64),
        weight=weight,
        requests=requests.cumsum(axis=2),
        errors=errors.cumsum(axis=2),
        served_right=right.cumsum(axis=2),
        served_wrong=wrong.cumsum(axis=2),
        label_right=label_right.cumsum(axis=2),
        label_wrong=label_wrong.cumsum(axis=2),
        latency=latency.cumsum(axis=2),
        shadow_requests=lane[0],
        shadow_errors=lane[1],
        paired=lane[2],
    )


def _lane(
    s: Scenario, lane: ShadowLane, rng: np.random.Generator, right: Ints, wrong: Ints, conditions: Floats
) -> tuple[Ints, Ints, Ints]:
    """Per interval: the shadow copies of the baseline's served rows ``right`` and ``wrong`` (rep, look),
    those that failed, and the four pair categories' labels arrived (rep, 4, look)."""
    p_b = s.baseline.positive_rate
    (both, _, candidate_only, _), _ = lane.joint(p_b, s.candidate.positive_rate)
    copies = rng.binomial(np.stack([right, wrong]), lane.sample)  # (baseline right / wrong, rep, look)
    failed = rng.binomial(copies, np.minimum(s.candidate.error_rate * conditions, 1.0))
    scored = copies - failed
    given = np.clip([both / p_b, candidate_only / (1 - p_b)], 0.0, 1.0)  # P(candidate right | baseline's)
    candidate_right = rng.binomial(scored, given[:, None, None])
    right_c, wrong_c = candidate_right, scored - candidate_right
    categories = np.stack([right_c[0], wrong_c[0], right_c[1], wrong_c[1]])  # paired_labels' order
    arrived = _arrivals(rng, categories, s.label_delay_mean_s, s.judge_every_s)
    return copies.sum(axis=0), failed.sum(axis=0), arrived.transpose(1, 0, 2)


def ar1(eps: Floats, rho: float, sd: float) -> Floats:
    """A stationary AR(1) along the last axis with marginal standard deviation ``sd``."""
    z = np.empty_like(eps)
    z[..., 0] = sd * eps[..., 0]
    innovation = sd * np.sqrt(1.0 - rho * rho)
    for m in range(1, eps.shape[-1]):
        z[..., m] = rho * z[..., m - 1] + innovation * eps[..., m]
    return z


def delay_pmf(mean: float, dt: int, looks: int) -> Floats:
    """P(a label arrives ``d`` looks after the interval of its prediction), the prediction uniform in
    its interval and the delay exponential: the look ``d`` later sees it when delay <= d*dt + V, V ~ U(0, dt).
    The simulation does not use it (its chain is exact); tests check the chain against it.

    >>> pmf = delay_pmf(300.0, 10, 2000)
    >>> round(float(pmf.sum()), 9), round(float(pmf @ np.arange(2000)) * 10 + 5, 3)
    (1.0, 305.0)
    """
    pmf = np.zeros(looks)
    if mean <= 0:
        pmf[0] = 1.0
        return pmf
    c = mean / dt * -np.expm1(-dt / mean)  # P(not seen by the interval's own look)
    d = np.arange(1, looks)
    pmf[0] = 1.0 - c
    pmf[1:] = c * (np.exp(-(d - 1) * dt / mean) - np.exp(-d * dt / mean))
    return pmf


def _arrivals(rng: np.random.Generator, outcomes: Ints, mean: float, dt: int) -> Ints:
    """Labels arriving per interval, from outcomes per interval (last axis), by the exact chain above."""
    if mean <= 0:
        return outcomes.copy()
    same = 1.0 - mean / dt * -np.expm1(-dt / mean)
    later = -np.expm1(-dt / mean)
    arrivals = np.empty_like(outcomes)
    pending = np.zeros(outcomes.shape[:-1], dtype=np.int64)
    for k in range(outcomes.shape[-1]):
        arrivals[..., k] = rng.binomial(pending, later) + rng.binomial(outcomes[..., k], same)
        pending += outcomes[..., k] - arrivals[..., k]
    return arrivals


def _volume(s: Scenario, z_traffic: Floats) -> Floats:
    """Expected requests per look interval and variant: rps with the diurnal swing integrated exactly
    per second, split by the weight, times each variant's per-minute traffic factor."""
    t = np.arange(s.duration_s, dtype=np.float64)
    period = 2 * np.pi / s.duration_s
    per_second = s.rps * (1 + s.diurnal_amplitude * (np.cos(period * t) - np.cos(period * (t + 1))) / period)
    share = np.array([s.weight_at(float(x)) for x in range(0, s.duration_s, s.step_s)]) / 100
    candidate = share[np.arange(s.duration_s) // s.step_s]
    split = np.stack([1 - candidate, candidate]) * per_second  # (variant, second)
    noisy = split[None] * np.exp(z_traffic[:, :, np.arange(s.duration_s) // 60])
    return np.add.reduceat(noisy, np.arange(0, s.duration_s, s.judge_every_s), axis=2)
