"""The e-process building blocks against independent computations, and their validity on A/A
simulations with fixed seeds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from modelcanary.stats.eprocess import (
    bet_above,
    bet_beside,
    bet_better,
    bet_worse,
    log_lr,
    paired_bets,
    paired_stake,
    plug_in_ratio,
    rate_bounds,
    shift_bets,
    theta,
)


@pytest.mark.parametrize(("x", "total", "alt", "null"), [(3, 10, 0.4, 0.2), (0, 7, 0.1, 0.05), (9, 9, 0.9, 0.5)])
def test_log_lr_is_the_binomial_log_likelihood_ratio(x: int, total: int, alt: float, null: float) -> None:
    expected = stats.binom.logpmf(x, total, alt) - stats.binom.logpmf(x, total, null)
    assert log_lr(x, total, alt, null) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_theta_is_the_share_of_bad_events_from_the_candidate() -> None:
    # 100 candidate requests at rate 2p and 900 baseline ones at rate p: 200p of 1100p bad events
    assert theta(100, 900, 2.0) == pytest.approx(200 / 1100)


def test_bets_only_in_their_direction() -> None:
    assert bet_worse(10, 10, 100, 900, r0=1.0, r_hat=0.8) == 0.0
    assert bet_better(1, 10, 100, 900, r0=1.0, r_hat=1.2) == 0.0
    assert bet_worse(10, 10, 100, 900, r0=1.0, r_hat=3.0) > 0
    assert bet_better(0, 30, 100, 900, r0=1.0, r_hat=0.5) > 0


def test_plug_in_ratio_estimates_the_rate_ratio() -> None:
    assert plug_in_ratio(200, 10_000, 100, 10_000) == pytest.approx(2.0, rel=0.01)


@pytest.mark.parametrize("null_ratio", [1.0, 1.5])
def test_the_bad_event_e_process_is_a_supermartingale_under_the_null(null_ratio: float) -> None:
    """E[factor] <= 1 for every alternative, computed exactly over the binomial law of a batch,
    including when the true ratio is below the null (a composite null)."""
    n_c, n_b, total = 50, 950, 12
    for true_ratio in (0.5, 1.0, null_ratio):
        p = theta(n_c, n_b, true_ratio)
        for r_hat in (1.0, 1.6, 3.0, 10.0):
            expectation = sum(
                stats.binom.pmf(x, total, p) * math.exp(bet_worse(x, total - x, n_c, n_b, null_ratio, r_hat))
                for x in range(total + 1)
            )
            assert expectation <= 1 + 1e-9


@pytest.mark.parametrize("bound", [0.01, 0.3])
def test_the_one_sample_e_process_is_a_supermartingale_under_the_null(bound: float) -> None:
    """E[factor] <= 1 computed exactly over the binomial law of a batch, for every bet and every
    rate at or below the bound, 0 included (a baseline without errors and a candidate without
    errors); = 1 at the bound itself when it bets."""
    n = 40
    for rate in (0.0, bound / 2, bound):
        for alt in (bound / 2, bound * 1.1, bound * 3, 0.9):
            expectation = sum(stats.binom.pmf(x, n, rate) * math.exp(bet_above(x, n, bound, alt)) for x in range(n + 1))
            assert expectation <= 1 + 1e-9
            if rate == bound and alt > bound:
                assert expectation == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize(("n_c", "n_b"), [(5, 45), (20, 20), (30, 3), (1, 200)])
def test_the_additive_e_process_is_a_supermartingale_whatever_the_baseline_rate(n_c: int, n_b: int) -> None:
    """E[factor] <= 1 computed exactly over both variants' binomial laws, for every bet, every
    baseline rate (0, a burst of 20%, 60%) and the candidate at that rate plus the margin, the
    null's boundary; = 1 at a baseline rate of 0 where it bets (the slope at 0 is 0)."""
    for margin in (0.005, 0.05):
        for p in (0.0, 0.001, 0.2, 0.6):
            q = min(1.0, p + margin)
            for alt in (margin * 1.1, margin * 3, margin * 10, 0.9):
                expectation = sum(
                    stats.binom.pmf(x_c, n_c, q)
                    * stats.binom.pmf(x_b, n_b, p)
                    * math.exp(bet_beside(x_c, n_c, x_b, n_b, margin, alt))
                    for x_c in range(n_c + 1)
                    for x_b in range(n_b + 1)
                )
                assert expectation <= 1 + 1e-9, (margin, p, alt)
                if p == 0.0:
                    assert expectation == pytest.approx(1.0, rel=1e-9)


def test_the_one_sample_bet_is_the_binomial_likelihood_ratio_and_never_degenerate() -> None:
    expected = stats.binom.logpmf(3, 10, 0.3) - stats.binom.logpmf(3, 10, 0.01)
    assert bet_above(3, 10, 0.01, 0.3) == pytest.approx(expected, rel=1e-12)
    assert bet_above(0, 10, 0.01, 0.3) < 0  # no bad events: the bet loses, it is not clipped to 0
    assert bet_above(10, 10, 1.0, 0.5) == 0.0  # a bound of 1 cannot be rejected: no bet
    assert bet_above(3, 10, 0.0, 0.3) == 0.0  # nor a bound of 0 (never built: the margin is > 0)
    assert bet_above(3, 0, 0.01, 0.3) == 0.0  # no exposure


def _one_sample_rejections(bound: float, peek: bool = False, streams: int = 500) -> int:
    """Streams whose rate sits exactly at the bound, each read after every batch of 100 with the
    judge's mixture (half on the plug-in bet at the smoothed running rate, half on fixed bets at
    bound x 1.1 ... 10); ``peek`` bets at the batch's own rate, which no valid test may see."""
    grid = (1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
    rng = np.random.default_rng(11)
    rejected = 0
    for _ in range(streams):
        logs, bad, n = [0.0] * (1 + len(grid)), 0, 0
        for x in rng.binomial(100, bound, size=60):
            bets = [(bad + 0.5) / (n + 1.0), *(bound * g for g in grid)]
            if peek:
                bets = [max(x / 100, bound * 1.01)] * len(bets)
            logs = [log + bet_above(int(x), 100, bound, a) for log, a in zip(logs, bets, strict=True)]
            bad, n = bad + int(x), n + 100
            e = 0.5 * math.exp(logs[0]) + 0.5 * sum(math.exp(g) for g in logs[1:]) / len(grid)
            if e >= 20:  # 1 / alpha
                rejected += 1
                break
    return rejected


@pytest.mark.parametrize("bound", [0.01, 0.05])
def test_the_one_sample_e_process_at_the_boundary_rejects_at_most_alpha(bound: float) -> None:
    """Ville's inequality promises at most alpha = 5% of streams ever reach 1/alpha: the
    Clopper-Pearson upper end of the observed rate stays at or below it (a peeking bet, the check
    that this can fail, rejects almost every stream)."""
    rejected = _one_sample_rejections(bound)
    assert stats.beta.ppf(0.975, rejected + 1, 500 - rejected) <= 0.05
    assert _one_sample_rejections(bound, peek=True, streams=50) > 40


def test_rate_bounds_cover_the_truth_at_every_look_at_once() -> None:
    """Time-uniform: over 400 simulated streams read after every batch, the truth leaves the bounds
    in at most alpha of the streams (here 5%; the bound is conservative, so far fewer)."""
    rng = np.random.default_rng(7)
    p, alpha, misses = 0.03, 0.05, 0
    for _ in range(400):
        bad = np.cumsum(rng.binomial(50, p, size=60))
        n = 50 * np.arange(1, 61)
        if any(
            not (lo <= p <= hi) for lo, hi in (rate_bounds(int(x), int(m), alpha) for x, m in zip(bad, n, strict=True))
        ):
            misses += 1
    assert misses / 400 <= alpha


def test_rate_bounds_shrink_and_agree_with_the_estimate() -> None:
    wide, narrow = rate_bounds(10, 100, 0.05), rate_bounds(1000, 10_000, 0.05)
    assert wide[0] < 0.1 < wide[1] and narrow[0] < 0.1 < narrow[1]
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 5
    assert rate_bounds(0, 500, 0.05)[0] == 0.0 and rate_bounds(500, 500, 0.05)[1] == 1.0


@pytest.mark.parametrize(
    ("x", "n", "alpha"),
    [(10, 1000, 0.05), (1, 20, 0.05), (150, 1000, 0.0125), (999, 1000, 0.01), (3, 100_000, 0.05), (50, 50, 0.05)],
)
def test_rate_bounds_are_where_the_beta_binomial_mixture_crosses_one_over_alpha(x: int, n: int, alpha: float) -> None:
    """Against scipy: the mixture's log, written from its definition (the Beta(1/2, 1/2) prior's
    marginal likelihood over the likelihood at p0), equals log(1/alpha) at each finite bound, found
    by brentq; the bounds sit at most a hair outside those roots, never inside."""
    from scipy.optimize import brentq
    from scipy.special import betaln

    def log_mixture(p0: float) -> float:
        return float(betaln(0.5 + x, 0.5 + n - x) - betaln(0.5, 0.5) - x * math.log(p0) - (n - x) * math.log1p(-p0))

    def excess(p0: float) -> float:
        return log_mixture(p0) - math.log(1 / alpha)

    low, high = rate_bounds(x, n, alpha)
    p_hat = x / n
    if x > 0:
        root = brentq(excess, 1e-300, min(p_hat, 1 - 1e-15), xtol=1e-15, rtol=1e-13)
        assert low <= root * (1 + 1e-12) and low == pytest.approx(root, rel=1e-9)
    else:
        assert low == 0.0
    if x < n:
        root = brentq(excess, max(p_hat, 1e-300), 1 - 1e-15, xtol=1e-15, rtol=1e-13)
        assert high >= root * (1 - 1e-12) and high == pytest.approx(root, rel=1e-9)
    else:
        assert high == 1.0


# -- the rank (shift) test -------------------------------------------------------------------------

_POOL = (0.0, 0.1, 0.1, 0.35, 0.5, 0.5, 0.8, 0.95, 1.0)  # one interval's scores, ties included
_LAMBDAS = (0.1, 0.4, 1.6, 6.4, 50.0)


def _bets(
    cand: tuple[float, ...], base: tuple[float, ...], lambdas: tuple[float, ...]
) -> tuple[list[float], float, float]:
    """``shift_bets`` on requests listed one by one: each score its own bucket."""
    scores = [*cand, *base]
    return shift_bets(scores, [1] * len(cand) + [0] * len(base), [0] * len(cand) + [1] * len(base), lambdas)


@pytest.mark.parametrize("n_c", [1, 2, 4, 8])
def test_the_shift_e_value_has_expectation_at_most_1_over_every_split(n_c: int) -> None:
    """Under exchangeability every split of the pooled scores into n_c candidate and N - n_c
    baseline ones is equally likely: the mean of exp(bet) over all of them is at most 1, for every
    bet, the ones beyond the cap included (computed exactly, by enumeration)."""
    splits = list(itertools.combinations(range(len(_POOL)), n_c))
    sums = np.zeros(len(_LAMBDAS))
    for chosen in splits:
        cand = [1 if i in chosen else 0 for i in range(len(_POOL))]
        sums += np.exp(shift_bets(_POOL, cand, [1 - c for c in cand], _LAMBDAS)[0])
    assert (sums / len(splits) <= 1 + 1e-12).all()


def test_the_shift_bet_is_the_with_replacement_bound_computed_independently() -> None:
    cand, base = (0.9, 0.8, 0.5), (0.1, 0.2, 0.5, 0.6, 0.3)
    pooled = np.array(cand + base)
    for lam in (0.1, 0.7):
        expected = lam * sum(cand) - len(cand) * math.log(np.mean(np.exp(lam * pooled)))
        assert _bets(cand, base, (lam,))[0] == [pytest.approx(expected, rel=1e-12)]
    # counts are repetitions: a count of 2 is two requests at that score
    assert shift_bets([0.9, 0.1], [2, 0], [0, 3], [0.5]) == _bets((0.9, 0.9), (0.1,) * 3, (0.5,))
    _, excess, variance = _bets(cand, base, (0.1,))
    assert excess == pytest.approx(sum(cand) - 3 * pooled.mean())
    # the variance of the candidate's sum over every split, by enumeration
    sums = [sum(c) for c in itertools.combinations(pooled, 3)]
    assert variance == pytest.approx(np.var(sums), rel=1e-12)


def test_the_shift_e_value_never_grows_when_a_candidate_score_falls() -> None:
    """The composite null: a candidate stochastically faster than the baseline can be coupled below
    an exchangeable one, and the e-value must be no larger then. It is non-decreasing in each
    candidate score up to the cap on the bet; past it, it is not (so the bet is capped)."""
    base = (0.0, 0.0, 0.0)
    for lam in _LAMBDAS:
        values = [_bets((s, 1.0, 1.0), base, (lam,))[0][0] for s in np.linspace(0, 1, 21)]
        assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))
    # candidates (s, 0, 0) and baseline (0, 0, 0): uncapped, log e(s) = lam s - 3 log((e^(lam s) + 5) / 6)
    # falls as s rises once e^(lam s) > 2.5; capped at log(5 / 2), it rises
    lam = 50.0
    uncapped = [lam * s - 3 * math.log((math.exp(lam * s) + 5) / 6) for s in (0.9, 1.0)]
    assert uncapped[1] < uncapped[0]
    capped = [_bets((s, 0.0, 0.0), base, (lam,))[0][0] for s in (0.9, 1.0)]
    assert capped[1] > capped[0]


def test_a_candidate_above_the_baseline_gains_and_one_alone_bets_nothing() -> None:
    bets, excess, _ = _bets((0.9, 0.8, 0.95), (0.1, 0.3, 0.2, 0.4), (0.4, 1.6))
    assert excess > 0 and all(b > 0 for b in bets)
    assert _bets((0.9,), (), (1.0,)) == ([0.0], 0.0, 0.0)
    assert _bets((), (0.9,), (1.0,)) == ([0.0], 0.0, 0.0)


def test_the_paired_bet_is_the_product_of_each_rows_factor_computed_one_by_one() -> None:
    rng = np.random.default_rng(5)
    for margin in (0.0, 0.02):
        d = rng.choice([1, -1, 0], p=[0.1, 0.05, 0.85], size=200)
        for stake in (0.0, 0.1, 0.5):
            by_row = float(np.sum(np.log1p(stake * (d - margin))))
            [counted] = paired_bets(int((d == 1).sum()), int((d == -1).sum()), len(d), margin, [stake])
            assert counted == pytest.approx(by_row, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("margin", [0.0, 0.03])
def test_the_paired_e_process_is_a_supermartingale_under_the_null(margin: float) -> None:
    """E[factor] <= 1 computed exactly over the multinomial law of a batch of rows, at the null's
    boundary (the candidate worse by exactly the margin) and inside it, for every stake allowed."""
    n = 12
    for q_worse, q_better in ((0.05 + margin, 0.05), (0.02, 0.08), (margin, 0.0)):
        for stake in (0.1, 0.5, 0.99 / (1 + margin)):
            expectation = sum(
                stats.multinomial.pmf([w, b, n - w - b], n, [q_worse, q_better, 1 - q_worse - q_better])
                * math.exp(paired_bets(w, b, n, margin, [stake])[0])
                for w in range(n + 1)
                for b in range(n + 1 - w)
            )
            assert expectation <= 1 + 1e-9


def _paired_rejections(q_worse: float, q_better: float, streams: int = 400, batches: int = 60) -> int:
    """Streams of labelled pairs, 20 a look, judged as the sequential judge does (half on the
    plug-in stake, half over the fixed ones); how many ever reach 1/alpha = 20."""
    from modelcanary.judges.sequential import PAIRED_STAKES

    rng = np.random.default_rng(11)
    rejected = 0
    for _ in range(streams):
        logs = [0.0] * (1 + len(PAIRED_STAKES))
        worse = better = pairs = 0
        for _ in range(batches):
            w, b, _same = rng.multinomial(20, [q_worse, q_better, 1 - q_worse - q_better])
            stakes = [paired_stake(worse, better, pairs, 0.0), *PAIRED_STAKES]
            logs = [log + bet for log, bet in zip(logs, paired_bets(int(w), int(b), 20, 0.0, stakes), strict=True)]
            worse, better, pairs = worse + w, better + b, pairs + 20
            e = 0.5 * math.exp(logs[0]) + 0.5 * sum(math.exp(g) for g in logs[1:]) / len(PAIRED_STAKES)
            if e >= 20:
                rejected += 1
                break
    return rejected


def test_the_paired_e_process_rejects_at_most_alpha_on_equal_models_and_catches_a_worse_one() -> None:
    """Equal models (as many rows right by the baseline alone as by the candidate alone): the
    Clopper-Pearson upper end of the rate stays at or below alpha; a candidate wrong on 5 more rows
    in 100 is caught in nearly every stream of 1,200 pairs (98 of 100 with this seed)."""
    rejected = _paired_rejections(0.06, 0.06)
    assert stats.beta.ppf(0.975, rejected + 1, 400 - rejected) <= 0.05
    assert _paired_rejections(0.10, 0.05, streams=100) >= 90
