"""E-processes and confidence sequences for rates of bad events, from counts.

The two-sample test conditions on where bad events happened. In an interval where the candidate
served ``n_c`` requests and the baseline ``n_b``, and ``X`` bad events happened in all, the number
from the candidate is (at most as spread as) Binomial(X, theta) with

    theta = n_c r / (n_c r + n_b),   r = candidate's bad-event rate / the baseline's.

Conditioning on the exposures makes the test indifferent to how traffic is split or how it ramps,
and to any factor both variants share (load, input mix, time of day). Under H0: r <= r0, the
likelihood ratio of a predictable alternative theta_hat >= theta0 against theta0 has expectation
at most 1, so the running product is a test supermartingale: by Ville's inequality it crosses 1/alpha
with probability at most alpha, however often it is looked at. (Given the exposures, the exact law
is hypergeometric, which is smaller in convex order than the binomial, so the bound holds.)

Conditioning cannot test an absolute margin over a baseline whose rate is 0: every bad event may
then come from the candidate under the null. ``bet_beside`` is the test the judge uses there: the
candidate's rate against the margin, each of the baseline's bad events of the same interval paying
for the candidate's, so that a rate both share may move freely.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def theta(n_c: float, n_b: float, ratio: float) -> float:
    """P(a bad event came from the candidate) given the exposures and the rate ratio.

    >>> theta(10, 90, 1.0), round(theta(10, 90, 2.0), 4)
    (0.1, 0.1818)
    """
    return n_c * ratio / (n_c * ratio + n_b)


def log_lr(x: int, total: int, alt: float, null: float) -> float:
    """log of the binomial likelihood ratio of ``x`` candidate events out of ``total``.

    >>> round(log_lr(3, 4, 0.5, 0.5), 12), round(log_lr(4, 4, 0.5, 0.25), 4)
    (0.0, 2.7726)
    """
    if total == 0 or alt == null:
        return 0.0
    return x * math.log(alt / null) + (total - x) * math.log((1 - alt) / (1 - null))


def plug_in_ratio(x_c: float, n_c: float, x_b: float, n_b: float) -> float:
    """The candidate/baseline rate ratio estimated from past counts, smoothed so that no events
    on either side reads as 1 rather than 0 or infinity.

    >>> plug_in_ratio(0, 0, 0, 0), round(plug_in_ratio(20, 1000, 10, 1000), 3)
    (1.0, 1.952)
    """
    return ((x_c + 0.5) / (n_c + 1.0)) / ((x_b + 0.5) / (n_b + 1.0))


def bet_worse(x_c: int, x_b: int, n_c: float, n_b: float, r0: float, r_hat: float) -> float:
    """One interval's factor (log) of the e-process against H0: r <= r0, betting at ``r_hat``.

    >>> bet_worse(5, 5, 10, 90, 1.0, 1.0)  # no bet when the estimate is not worse than the null
    0.0
    >>> bet_worse(5, 5, 10, 90, 1.0, 3.0) > 0  # half the bad events from a tenth of the traffic
    True
    """
    if n_c <= 0 or n_b <= 0 or r_hat <= r0:
        return 0.0
    return log_lr(x_c, x_c + x_b, theta(n_c, n_b, r_hat), theta(n_c, n_b, r0))


def bet_above(x: int, n: float, bound: float, alt: float) -> float:
    """One interval's factor (log) of the one-sample e-process against H0: rate <= ``bound``,
    betting at ``alt``: ``x`` bad events out of ``n``.

    ``bet_beside`` builds on it. For alt >= bound the likelihood ratio has expectation at most 1
    under every rate <= bound (the binomial has a monotone likelihood ratio), so the running
    product is a test supermartingale. A bound at or above 1 can never be rejected: no bet.

    >>> bet_above(3, 10, 0.01, 0.3) > 0, bet_above(3, 10, 0.3, 0.2), bet_above(3, 10, 1.0, 0.5)
    (True, 0.0, 0.0)
    """
    if n <= 0 or not 0 < bound < 1 or alt <= bound or alt >= 1:
        return 0.0
    return log_lr(x, int(n), alt, bound)


MOST_BASELINE_STAKE = 0.5  # ``bet_beside``: at most this share of the factor staked on each baseline bad event


def bet_beside(x_c: int, n_c: float, x_b: int, n_b: float, margin: float, alt: float) -> float:
    """One interval's factor (log) of an e-process against H0: rate_c <= rate_b + ``margin`` in the
    interval, whatever rate_b is: ``x_c`` of ``n_c`` candidate bad events, ``x_b`` of ``n_b`` of
    the baseline's, betting that the candidate's rate is ``alt`` where the baseline's is 0.

    The factor is exp(lam x_c - mu x_b) / (1 + margin A)^n_c with A = e^lam - 1, lam the binomial
    likelihood ratio's of ``alt`` against ``margin`` (``bet_above``), and 1 - e^-mu = B. Under H0
    its expectation is at most exp(f(p)) / (1 + margin A)^n_c with p the baseline's rate and
    f(p) = n_c log(1 + (p + margin) A) + n_b log(1 - p B), which is concave in p; with
    B = (n_c / n_b) A / (1 + margin A) its slope at p = 0 is 0, so its largest value is f(0) and the
    expectation is at most 1. The baseline's bad events in the same interval pay for the
    candidate's, so a rate both variants share may move as it likes (a burst of errors from a
    dependency) where ``bet_above`` against a bound from past data counted such a burst against
    the candidate. B may not pass ``MOST_BASELINE_STAKE``: ``alt`` is lowered to fit, which at a
    high candidate share limits the bet (at 50%, to 1.5 times the margin).

    >>> bet_beside(3, 10, 0, 90, 0.01, 0.3) > 0, bet_beside(3, 10, 27, 90, 0.01, 0.3) < 0
    (True, True)
    >>> bet_beside(3, 10, 0, 90, 0.01, 0.3) == bet_above(3, 10, 0.01, 0.01 + 0.5 * 0.01 * 0.99 * 9)
    True
    """
    if n_c <= 0 or n_b <= 0 or not 0 < margin < 1 or alt <= margin or alt >= 1:
        return 0.0
    ratio = n_c / n_b
    alt = min(alt, margin + MOST_BASELINE_STAKE * margin * (1 - margin) / ratio)
    share = ratio * (alt - margin) / (margin * (1 - margin))  # B = (n_c / n_b) A / (1 + margin A)
    return bet_above(x_c, n_c, margin, alt) + x_b * math.log1p(-share)


def bet_better(x_c: int, x_b: int, n_c: float, n_b: float, r0: float, r_hat: float) -> float:
    """One interval's factor (log) of the e-process against H0: r >= r0, betting at ``r_hat``."""
    if n_c <= 0 or n_b <= 0 or r_hat >= r0:
        return 0.0
    return log_lr(x_c, x_c + x_b, theta(n_c, n_b, r_hat), theta(n_c, n_b, r0))


def ratio_bets(
    x_c: int, x_b: int, n_c: float, n_b: float, r0: float, ratios: Sequence[float], *, worse: bool
) -> list[float]:
    """``bet_worse`` (or with ``worse`` false, ``bet_better``) at each of ``ratios``: the same
    numbers, with the null's share worked out once, since the judge bets at sixteen ratios per
    stream at every look, for every rollout.

    >>> ratio_bets(5, 5, 10, 90, 1.0, [3.0, 1.0, 0.5], worse=True) == [bet_worse(5, 5, 10, 90, 1.0, 3.0), 0.0, 0.0]
    True
    """
    total = x_c + x_b
    if n_c <= 0 or n_b <= 0 or total == 0:
        return [0.0] * len(ratios)
    null = theta(n_c, n_b, r0)
    rest, log, bets = total - x_c, math.log, []
    for ratio in ratios:
        if ratio <= r0 if worse else ratio >= r0:  # no bet against the direction tested
            bets.append(0.0)
            continue
        alt = n_c * ratio / (n_c * ratio + n_b)  # theta(n_c, n_b, ratio), written out
        bets.append(0.0 if alt == null else x_c * log(alt / null) + rest * log((1 - alt) / (1 - null)))
    return bets


def paired_bets(worse: int, better: int, pairs: int, margin: float, stakes: Sequence[float]) -> list[float]:
    """One interval's factor (log) of the paired e-process at each stake, against H0: on rows both
    models scored, the candidate's share of wrong decisions exceeds the baseline's by at most
    ``margin``. Of ``pairs`` labelled rows, ``worse`` were right by the baseline alone and
    ``better`` by the candidate alone (the discordant pairs; the concordant tell nothing about
    the difference, but pay the margin).

    Each row's difference D (+1 worse, -1 better, 0 concordant) lies in [-1, 1] with mean at most
    ``margin`` under H0, so a factor 1 + s (D - margin), with the stake s in [0, 1 / (1 + margin))
    fixed before the interval, has expectation at most 1 and stays positive: the running product is
    a test supermartingale whatever the rows' law. Within an interval the product does not depend
    on the rows' order, so counts suffice.

    >>> [round(b, 4) for b in paired_bets(6, 1, 10, 0.0, [0.0, 0.5])]
    [0.0, 1.7396]
    >>> paired_bets(0, 3, 3, 0.0, [0.5])[0] < 0  # the candidate right where the baseline was wrong
    True
    """
    same = pairs - worse - better
    top = 1 / (1 + margin)
    bets = []
    for stake in stakes:
        s = min(max(stake, 0.0), 0.99 * top)
        bets.append(
            worse * math.log1p(s * (1 - margin))
            + better * math.log1p(-s * (1 + margin))
            + same * math.log1p(-s * margin)
        )
    return bets


def paired_stake(worse: int, better: int, pairs: int, margin: float) -> float:
    """The stake a plug-in bet on the paired e-process makes from the rows so far: the growth-rate
    maximiser's approximation (mean excess over its second moment), smoothed, so that no rows
    yet stake nothing, and capped at half the largest stake allowed.

    >>> paired_stake(0, 0, 0, 0.0), round(paired_stake(30, 10, 100, 0.0), 4)
    (0.0, 0.455)
    """
    excess = (worse - better) / (pairs + 1) - margin
    if excess <= 0:
        return 0.0
    second = (worse + better) / (pairs + 1) - 2 * margin * (worse - better) / (pairs + 1) + margin**2
    return min(excess / (second + excess**2), 0.5 / (1 + margin))


_NEWTON_STEPS = 60  # an upper limit only: from a start outside, Newton takes 4-10 steps here
_TOLERANCE = 1e-12  # on the log scale the iterations run on


def _log_mixture_constant(x: int, n: int, a: float = 0.5, b: float = 0.5) -> float:
    """The part of the beta-binomial mixture's log that does not depend on p0 (Robbins' method
    of mixtures, Beta(a, b) prior): log B(a + x, b + n - x) - log B(a, b)."""
    log_beta = math.lgamma(a + x) + math.lgamma(b + n - x) - math.lgamma(a + b + n)
    return log_beta - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


def rate_bounds(x: int, n: int, alpha: float) -> tuple[float, float]:
    """A time-uniform confidence sequence for a Bernoulli rate: holds at every n at once with
    probability at least 1 - alpha, so it may be read after every look.

    >>> low, high = rate_bounds(10, 1000, 0.05)
    >>> 0.002 < low < 0.01 < high < 0.03
    True
    >>> rate_bounds(0, 0, 0.05)
    (0.0, 1.0)
    """
    return rate_lower(x, n, alpha), rate_upper(x, n, alpha)


# Outside the set the mixture exceeds 1/alpha: its log, constant - x log p0 - (n - x) log(1 - p0), is
# at least log(1/alpha), i.e. x log p0 + (n - x) log(1 - p0) <= target. On each side of p_hat, in the
# log of p (below) or of 1 - p (above), the condition is g(u) = x u + (n - x) log(1 - e^u) <= target
# (or the same with x and n - x swapped), and g is concave. Newton's method started outside the set
# then climbs monotonically to the boundary, never crossing it, and converges quadratically: each
# bound it returns is outside the set by at most the tolerance, so the interval is never narrower
# than the exact one. Each end is a Newton solve of its own: a caller needing one end pays for one.


def _target(x: int, n: int, alpha: float) -> float:
    return _log_mixture_constant(x, n) - math.log(1 / alpha)


def rate_lower(x: int, n: int, alpha: float) -> float:
    """The lower end of ``rate_bounds``.

    >>> rate_lower(10, 1000, 0.05) == rate_bounds(10, 1000, 0.05)[0]
    True
    """
    if n == 0 or x == 0:
        return 0.0
    return max(0.0, math.exp(_boundary(x, n - x, _target(x, n, alpha), math.log(max(x / n / 2, _TINY)))))


def rate_upper(x: int, n: int, alpha: float) -> float:
    """The upper end of ``rate_bounds``.

    >>> rate_upper(10, 1000, 0.05) == rate_bounds(10, 1000, 0.05)[1]
    True
    """
    if n == 0 or x == n:
        return 1.0
    return min(1.0, -math.expm1(_boundary(n - x, x, _target(x, n, alpha), math.log(max((1 - x / n) / 2, _TINY)))))


_TINY = 1e-300


def _boundary(a: int, b: int, target: float, start: float) -> float:
    """The u < log(a / (a + b)) where a u + b log(1 - e^u) = target, by Newton from ``start`` moved
    outside first (where the left side is at most ``target``). g is written out rather than
    called: this runs four times per rate metric per look, for every rollout."""
    log, exp, expm1 = math.log, math.exp, math.expm1
    u = start
    m = -expm1(u)  # 1 - e^u
    g = a * u + b * log(m) - target
    while g > 0:  # inside: step out, away from the maximum, until outside
        u = 2 * u - 1
        m = -expm1(u)
        g = a * u + b * log(m) - target
    for _ in range(_NEWTON_STEPS):
        step = -g / (a - b * exp(u) / m)  # the slope is > 0 left of the maximum
        u += step
        if step < _TOLERANCE * max(1.0, abs(u)):
            break
        m = -expm1(u)
        g = a * u + b * log(m) - target
    return u


def shift_bets(
    scores: Sequence[float], candidate: Sequence[float], baseline: Sequence[float], lambdas: Sequence[float]
) -> tuple[list[float], float, float]:
    """One interval's factors (log) of e-processes against H0: "the candidate's scores are
    stochastically no larger than the baseline's", one per bet ``lambda`` >= 0; and the interval's
    excess (the candidate's score sum less its share of the pooled sum) and that excess's variance
    under H0, from which a caller estimates its next bet. ``candidate[k]`` and ``baseline[k]`` are
    how many of each variant's requests had score ``scores[k]``, every score in [0, 1].

    The test conditions on the interval's exposures and on its pooled scores. Given them, under
    exchangeability the candidate's ``n_c`` scores are a sample without replacement from the ``N``
    pooled ones, and by Hoeffding (1963, theorem 4) the moment generating function of their sum
    ``S`` is at most that of a sample with replacement: E exp(lambda S) <= M(lambda)^n_c, with
    M the mean of exp(lambda s) over the pool. So exp(lambda S) / M(lambda)^n_c has expectation at
    most 1. It is non-decreasing in each candidate score while (n_c - 1) e^lambda <= N - 1 (its
    derivative in s_i is lambda (1 - n_c e^(lambda s_i) / sum_j e^(lambda s_j)) and the other N - 1
    terms are at least 1), so lambda is capped there, and a candidate stochastically below the
    baseline (coupled below an exchangeable one) makes it no larger: the whole null holds.

    >>> bets, excess, var = shift_bets([0.0, 1.0], [0, 5], [5, 0], [0.5])
    >>> round(bets[0], 4), excess, round(var, 4)  # every candidate score above every baseline one
    (1.0954, 2.5, 0.6944)
    >>> shift_bets([0.5], [3], [0], [0.5])  # nothing to compare with: no bet
    ([0.0], 0.0, 0.0)
    """
    import numpy as np  # here, not at the top: the CLI imports this module and needs no numpy

    values = np.asarray(scores, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    pooled = cand + baseline
    n_c, total = float(cand.sum()), float(pooled.sum())
    if n_c == 0 or total == n_c:
        return [0.0] * len(lambdas), 0.0, 0.0
    s_c = float(values @ cand)
    mean = float(values @ pooled) / total
    spread = float((values * values) @ pooled) / total - mean * mean
    cap = math.log((total - 1) / (n_c - 1)) if n_c > 1 else math.inf
    bets = np.minimum(lambdas, cap)  # a bet of 0 comes out 0: exp(0) sums to the total
    logs = bets * s_c - n_c * np.log(np.exp(np.multiply.outer(bets, values)) @ pooled / total)
    return logs.tolist(), s_c - n_c * mean, n_c * (total - n_c) / (total - 1) * max(spread, 0.0)
