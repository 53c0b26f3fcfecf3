"""A stream's evidence: its counts, the e-process that bets on them, and the verdict they read as.

A stream is a count of bad events against exposures, per variant (``Counts``), read at two looks
(``Stream``). Each look's interval adds its bets (``update``) to two e-processes: one against "the
candidate is within its margin" (the failing side), one against "it is beyond it" (the passing
side, where a verdict reads that). Each is an even mixture of a plug-in bet and fixed bets on a
grid; ``mixture`` reads its e-value. judges/sequential.py turns metrics into streams and weighs
their e-values; judges/latency.py sets latency's; ``metric_judgement`` words a metric's verdict.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from modelcanary.domain.judgement import MetricJudgement, Verdict
from modelcanary.domain.metrics import Metric
from modelcanary.stats.eprocess import bet_beside, paired_bets, paired_stake, plug_in_ratio, ratio_bets

# the fixed alternatives each e-process bets on, as multiples of its null ratio
GRID = (1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
SIDE = 1 + len(GRID)  # components per side: the plug-in, then the grid
# the paired test's fixed stakes, as shares of the largest it may make (as many as the grid's ratios)
PAIRED_STAKES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)


class Counts(NamedTuple):
    """One stream's cumulative bad events and exposures per variant. (Named tuples: a look makes a
    dozen of each of these, and a frozen dataclass took several times as long to make.)"""

    bad_c: int
    n_c: int
    bad_b: int
    n_b: int


NONE = Counts(0, 0, 0, 0)


class Stream(NamedTuple):
    key: str
    weight: float
    now: Counts
    prev: Counts
    r0: float  # the null ratio: bad-event rate of the candidate / the baseline's, at most
    additive: float | None = None  # set instead: the additive test's margin (``bet_beside``)
    paired: float | None = None  # set instead: the paired test's margin (bad_c, bad_b: the discordant pairs)
    # the counts of its passing side, where a verdict reads that (a latency metric's own quantile):
    # the candidate's threshold is rounded the other way, so each side errs on its own safe side
    pass_now: Counts | None = None
    pass_prev: Counts | None = None
    # false when the candidate's threshold could not be stretched by the margin (past the last
    # bucket edge): the failing side does not bet on the interval
    stretched: bool = True
    # a shadow lane's: both exposures are the baseline's requests (copies of them), whatever the
    # weight, so an interval in which the weight changed is bet on as any other
    lane: bool = False


def interval_counts(now: Counts, prev: Counts) -> Counts:
    return Counts(now.bad_c - prev.bad_c, now.n_c - prev.n_c, now.bad_b - prev.bad_b, now.n_b - prev.n_b)


def consistent(d: Counts) -> bool:
    """Whether an interval's counts can be counts: none went down, no more bad events than exposures
    (a counter reset, or two sources out of step, give others; betting on them bets on nothing real)."""
    return 0 <= d.bad_c <= d.n_c and 0 <= d.bad_b <= d.n_b


NO_EVIDENCE = [0.0] * SIDE


def update(stream: Stream, logs: list[float], settled: bool) -> list[float]:
    """Add one interval's bets to each component of the stream's e-process against "within the
    margin" (the failing side), and of its e-process against "beyond it" (the passing side) where
    a verdict reads that: rate metrics pass on confidence bounds instead, and a latency metric on
    its own quantile only.

    Each e-process is an even mixture of a plug-in bet (the ratio estimated from before the
    interval, so it is predictable, and it learns the effect's size) and fixed bets on a grid of
    ratios (which need no past, so a first look or a large batch is not wasted). A mixture of test
    supermartingales is one; it costs at most log 2 against the better half.

    No bet on an interval that was not ``settled`` at one weight (a lane's excepted) or whose counts
    are not ``consistent``: which intervals are skipped is fixed before their bad events are read,
    so the product of the others is still a test supermartingale.
    """
    fail = logs[:SIDE]
    passing = (logs[SIDE:] or NO_EVIDENCE) if stream.pass_now is not None else []
    x_c, n_c, x_b, n_b = delta = interval_counts(stream.now, stream.prev)
    if not (settled or stream.lane) or not consistent(delta):
        return fail + passing
    if stream.paired is not None:
        if x_c + x_b > n_c:  # more discordant pairs than pairs
            return fail
        # the paired test: the plug-in stakes what the pairs so far suggest, the rest fixed shares
        margin, prev = stream.paired, stream.prev
        top = 1 / (1 + margin)
        stakes = [paired_stake(prev.bad_c, prev.bad_b, prev.n_c, margin), *(top * s for s in PAIRED_STAKES)]
        return [log + bet for log, bet in zip(logs[:SIDE], paired_bets(x_c, x_b, n_c, margin, stakes), strict=True)]
    if stream.additive is not None:
        # the additive test: the candidate's rate against the margin over the baseline's, each of
        # the baseline's bad events in the interval paying for the candidate's (``bet_beside``); the
        # plug-in bets at the candidate's own smoothed rate so far, the grid at multiples of the margin
        margin = stream.additive
        a_hat = (stream.prev.bad_c + 0.5) / (stream.prev.n_c + 1.0)
        bets = [a_hat, *(margin * g for g in GRID)]
        return [log + bet_beside(x_c, n_c, x_b, n_b, margin, a) for log, a in zip(logs[:SIDE], bets, strict=True)]
    r0, prev = stream.r0, stream.prev
    if stream.stretched:
        r_hat = min(plug_in_ratio(prev.bad_c, prev.n_c, prev.bad_b, prev.n_b), 50.0)
        worse = ratio_bets(x_c, x_b, n_c, n_b, r0, [r_hat, *(r0 * g for g in GRID)], worse=True)
        fail = [log + bet for log, bet in zip(fail, worse, strict=True)]
    if stream.pass_now is None or stream.pass_prev is None:
        return fail
    # the passing side reads the candidate at its own threshold: its own counts, and its own plug-in
    x_pass = stream.pass_now.bad_c - stream.pass_prev.bad_c
    if not 0 <= x_pass <= n_c:
        return fail + passing
    r_pass = min(plug_in_ratio(stream.pass_prev.bad_c, prev.n_c, prev.bad_b, prev.n_b), 50.0)
    better = ratio_bets(x_pass, x_b, n_c, n_b, r0, [r_pass, *(r0 / g for g in GRID)], worse=False)
    return fail + [log + bet for log, bet in zip(passing, better, strict=True)]


def mixture(logs: list[float]) -> float:
    """The e-value of one side: half on the plug-in component, half spread over the grid."""
    plug_in, grid = logs[0], logs[1:]
    return 0.5 * math.exp(min(plug_in, 700.0)) + 0.5 * sum([math.exp(min(g, 700.0)) for g in grid]) / len(grid)


def metric_judgement(
    metric: Metric,
    *,
    failed: bool,
    passed: bool,
    no_data: bool,
    values: tuple[float | None, float | None],
    limit: float | None,
    bound: float | None,
    e_value: float,
    samples: tuple[int, int],
    unit: str,
    detail: str,
) -> MetricJudgement:
    base, cand = values
    estimates = f"candidate {_fmt(cand)} vs baseline {_fmt(base)} {unit}, e-value {e_value:.3g}"
    if failed:
        verdict, reason = Verdict.FAIL, f"evidence of a regression: {estimates}"
    elif no_data:
        verdict, reason = Verdict.NO_DATA, f"no data: {detail}"
    elif passed:
        verdict, reason = Verdict.PASS, f"within margin: {estimates}"
    else:
        verdict, reason = Verdict.INCONCLUSIVE, f"not yet shown within margin: {estimates}"
    return MetricJudgement(
        name=metric.name,
        kind=metric.kind,
        verdict=verdict,
        baseline=base,
        candidate=cand,
        limit=limit,
        baseline_samples=samples[0],
        candidate_samples=samples[1],
        reason=reason,
        unit=unit,
        e_value=e_value,
        bound=bound,
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
