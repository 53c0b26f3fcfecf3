"""Pair a rollout's telemetry and run its judge: the fetch-pair-judge seam between store and decision."""

from __future__ import annotations

from collections.abc import Iterable

from modelcanary.domain.judgement import Judgement, Look, Memory
from modelcanary.domain.spec import RolloutSpec
from modelcanary.domain.telemetry import RolloutTelemetry, Variant, VariantTelemetry
from modelcanary.judges import get_judge
from modelcanary.judges.guardrails import circuit_breaker


def pair(rows: Iterable[tuple[Variant, VariantTelemetry]]) -> RolloutTelemetry:
    """Sum every source's cumulative counts per variant (one row per gateway replica and variant).

    The rows are the caller's to give away, as a store's reads are: a variant with one source (the
    usual case) is that row itself rather than a copy summed with zeros, which a tick would make
    for every rollout."""
    baseline: VariantTelemetry | None = None
    candidate: VariantTelemetry | None = None
    for variant, counts in rows:
        if variant is Variant.BASELINE:
            baseline = counts.checked() if baseline is None else baseline.merged(counts)
        else:
            candidate = counts.checked() if candidate is None else candidate.merged(counts)
    return RolloutTelemetry(
        baseline=VariantTelemetry() if baseline is None else baseline,
        candidate=VariantTelemetry() if candidate is None else candidate,
    )


def analyse(spec: RolloutSpec, look: Look, memory: Memory) -> tuple[Judgement, Memory]:
    """Run the spec's judge on one look; the judgement, and the judge's memory for the next look.

    A tripped circuit breaker (a gateway took the candidate out) joins the judgement as a failed
    check, whatever the judge, so the rollout rolls back with the breaker's reason."""
    judgement, memory = get_judge(spec.spec.analysis.judge)(spec.spec.analysis, look, memory)
    tripped = circuit_breaker(look.telemetry)
    if tripped is not None:
        judgement = judgement.model_copy(update={"metrics": (*judgement.metrics, tripped)})
    return judgement, memory
