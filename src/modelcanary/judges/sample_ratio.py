"""The sample-ratio check of the sequential judge: is the candidate's share of requests the weight
set? A mismatch holds the rollout (no step advances on data whose split cannot be trusted); it
never rolls back.

It also says which looks were served at one settled weight (``settle``): the sequential judge's
streams bet on those intervals alone.

With sticky routing (``Look.sticky``) the router splits keys (users), not requests: one heavy user
moves many requests to one side at once, so the request share scatters far more than a binomial
at the weight, and a request-level check held correct splits. The check then tests the split of
keys instead: each gateway counts a key once at each weight, on the variant the router sent it to
(``VariantTelemetry.keys``), and the keys it counts go to the candidate at the weight, each on its
own bucket. A key that reaches several gateways is counted by each; with ``gateways`` of them
counting keys, each look's bet is tempered to its ``gateways``-th root, so a key counted up to that
many times bets at most once (a power at most 1 of a likelihood ratio has mean at most 1, Jensen).
That holds while the gateways that count keys at a weight have all reported by its first counted
look (each flushes every second; the first ``SRM_SETTLE_S`` of a weight are not counted); a gateway
that joins later makes that look's root too small for keys it counts again."""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelcanary.domain.judgement import Look, MetricJudgement, Verdict

SRM_ALPHA = 0.001  # a mismatch only holds the rollout, so it may demand strong evidence
SRM_SETTLE_S = 5.0  # after the weight changes, seconds of requests the check leaves out
NO_KEYS = (
    "sample-ratio check off: the router splits sticky keys, not requests, and the telemetry counts no keys "
    "(a metric source's counts none)"
)


@dataclass
class SampleRatio:
    """A plug-in e-process against "requests split at the weight set"; past 1/SRM_ALPHA it holds.

    Requests served in the first ``SRM_SETTLE_S`` after the weight changes are left out, from both
    sides of the count: gateways apply a new weight a poll after the controller sets it, and their
    telemetry comes a flush later, so those requests were split at the old weight. Counted, about a
    second of them at each step made the demo's good candidate hold at 50% (realised 8,895 candidate
    requests against 9,212 expected, e-value 15,800) and roll back at the step's maxDuration. Which
    looks are left out is fixed by the looks' times and weights alone, so the product of the others
    is still a test supermartingale."""

    log_e: float = 0.0
    expected_c: float = 0.0  # candidate requests expected at the weights set, over the counted looks
    realised_c: float = 0.0  # candidate requests served, over the same looks
    weight: float | None = None  # the weight at the last look
    settle_until: float = 0.0  # look time (seconds into the rollout) before which requests are not counted
    step_c: float = 0.0  # candidate requests served over the counted looks at the current weight
    step_n: float = 0.0  # all requests over the same looks

    @classmethod
    def read(cls, saved: list[float] | None, look: Look, requests: list[int]) -> SampleRatio:
        """From the memory: ``saved`` as ``saved()`` wrote it, or, saved before the settling window
        (two numbers), as then, when every request counted (``requests``: those so far). A check
        with no memory settles first, as after a weight change: the requests before its first look
        were split at weights it did not see (the gateways' lag behind the first step, a restart of
        the judge's memory, counts it judged on another basis), so they are left out."""
        if not saved:
            return cls(weight=look.weight, settle_until=look.at + SRM_SETTLE_S)
        if len(saved) == 2:
            return cls(saved[0], saved[1], requests[1], look.weight)
        log_e, expected_c, realised_c, weight, settle_until, *step = saved
        return cls(log_e, expected_c, realised_c, weight, settle_until, *step)

    def saved(self) -> list[float | None]:
        return [self.log_e, self.expected_c, self.realised_c, self.weight, self.settle_until, self.step_c, self.step_n]

    def settle(self, look: Look) -> bool:
        """Note this look's weight; whether the interval it ends was served at one weight, settled:
        not the look at which the weight changed, nor those in the ``SRM_SETTLE_S`` after it (nor,
        with no memory, those in the ``SRM_SETTLE_S`` after the first look). Fixed by the looks'
        times and weights alone, so a product that skips the other intervals stays a test
        supermartingale."""
        if look.weight != self.weight:
            self.weight, self.settle_until = look.weight, look.at + SRM_SETTLE_S
            self.step_c = self.step_n = 0.0
        return look.at >= self.settle_until

    def update(
        self, prev: list[int], now: list[int], look: Look, *, unit: str = "requests", gateways: int = 1
    ) -> str | None:
        """Count this look's ``unit`` (``prev`` and ``now``: baseline's then candidate's, so far),
        each counted by up to ``gateways`` gateways; the hold, if the evidence of a mismatch is
        strong enough."""
        settled = self.settle(look)
        (prev_b, prev_c), (now_b, now_c) = prev, now
        d_c, d_b = now_c - prev_c, now_b - prev_b
        d_n = d_c + d_b
        share = look.weight / 100
        # counts that went down (a counter reset) are no interval of requests: not counted
        if settled and d_c >= 0 and d_b >= 0 and d_n > 0 and 0 < share < 1:
            # the realised/expected ratio so far, as the alternative's odds multiplier
            r_hat = (self.realised_c + 0.5) / (self.expected_c + 0.5)
            alt = share * r_hat / (share * r_hat + 1 - share)
            self.log_e += (d_c * math.log(alt / share) + d_b * math.log((1 - alt) / (1 - share))) / gateways
            self.expected_c += d_n * share
            self.realised_c += d_c
            self.step_c += d_c
            self.step_n += d_n
        if self.log_e < math.log(1 / SRM_ALPHA):
            return None
        # the share this step's counted requests show (the hold is about the split now); before any
        # is counted at this weight, the share of every request so far
        if self.step_n > 0:
            return (
                f"sample-ratio mismatch: the candidate served {100 * self.step_c / self.step_n:.2f}% of this "
                f"step's {unit} with its weight at {look.weight:g}%"
            )
        realised = 100 * now_c / max(now_c + now_b, 1)
        return (
            f"sample-ratio mismatch: the candidate served {realised:.2f}% of {unit} so far "
            f"with its weight at {look.weight:g}%"
        )

    def of_keys(self, look: Look, gateways: int, *, held: bool) -> MetricJudgement:
        """The check of the keys' split, as a line of the judgement: the candidate's share of this
        step's counted keys against the weight, those keys (its samples), and in its reason the e-value
        against 1/SRM_ALPHA. Not as its ``e_value``: that is evidence against the candidate, charted
        against the rollback's threshold; this is evidence against the router, and only holds."""
        share = 100 * self.step_c / self.step_n if self.step_n else None
        counted = f"{self.step_n:,.0f} users (sticky keys) counted at this weight"
        by = f" by {gateways} gateways (a user once by each it reached)" if gateways > 1 else ""
        return MetricJudgement(
            name="sample-ratio",
            kind="sample-ratio",
            verdict=Verdict.INCONCLUSIVE if held else Verdict.PASS,
            baseline=None,
            candidate=share,
            limit=look.weight,
            baseline_samples=round(self.step_n - self.step_c),
            candidate_samples=round(self.step_c),
            reason=(
                f"the candidate has {share:.2f}% of {counted}{by}, its weight {look.weight:g}%"
                if share is not None
                else f"no users (sticky keys) counted yet at the weight {look.weight:g}%"
            )
            + f"; e-value {math.exp(min(self.log_e, 700.0)):.3g} against {1 / SRM_ALPHA:g}",
            unit="%",
        )
