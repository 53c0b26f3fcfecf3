"""Pair a rollout's telemetry and run its judge: the fetch-pair-judge seam between store and decision."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from modelcanary.domain.judgement import Judgement, Look, Memory, MetricJudgement, phase_of
from modelcanary.domain.spec import RolloutSpec
from modelcanary.domain.state import RolloutState
from modelcanary.domain.telemetry import RolloutTelemetry, Variant, VariantTelemetry
from modelcanary.judges import get_judge
from modelcanary.judges.guardrails import circuit_breaker

CANDIDATE_SEGMENTS = "candidate-segments"  # the check saying a candidate limited to segments was judged on all
_SEGMENTS = "segments"  # in a judge's memory: the segments whose requests alone it judged, if any


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


def look_at(state: RolloutState, spec: RolloutSpec, telemetry: RolloutTelemetry, *, now: float) -> Look:
    """What the judge sees of a rollout at ``now``."""
    traffic = spec.spec.traffic
    return Look(
        now - state.created_at,
        state.weight,
        telemetry,
        phase_of(state.id),
        shadow=traffic.shadow is not None,
        sticky=traffic.sticky_key is not None,
    )


def analyse(spec: RolloutSpec, look: Look, memory: Memory) -> tuple[Judgement, Memory]:
    """Run the spec's judge on one look; the judgement, and the judge's memory for the next look.

    With ``candidateSegments`` the judge sees both variants' counts in those segments alone, like
    with like: the candidate serves no other segment, and against the baseline's requests in all
    of them an identical candidate confined to a segment that fails more often than the rest would
    look worse, and be rolled back. The weight is the candidate's share of those segments' requests
    too, so the sample-ratio check tests the split the weight set. Telemetry that does not count
    every request in a segment (a metric source's) is judged on its totals, and the judgement says so.

    A tripped circuit breaker (a gateway took the candidate out) joins the judgement as a failed
    check, whatever the judge, so the rollout rolls back with the breaker's reason."""
    segments = spec.spec.traffic.candidate_segments
    eligible = _eligible(look.telemetry, segments) if segments is not None else None
    basis = sorted(segments) if segments is not None and eligible is not None else None
    if memory.get(_SEGMENTS) != basis:
        # the judge counted other requests until now (all of them, before it judged the eligible
        # alone, or until the per-segment counts stopped adding up): its cumulative counts cannot
        # be carried over to these, so it starts again, as at a first look
        memory = {}
    judged = look if eligible is None else replace(look, telemetry=eligible)
    judgement, memory = get_judge(spec.spec.analysis.judge)(spec.spec.analysis, judged, memory)
    if basis is not None and memory:  # (a look that left nothing to remember still changes nothing)
        memory = {**memory, _SEGMENTS: basis}
    if segments is not None and eligible is None:
        # a judge's hold is its sample-ratio check's, false here: the candidate's share of all
        # requests is below its weight by design
        metrics = (*judgement.metrics, _on_totals(look.telemetry, segments))
        judgement = judgement.model_copy(update={"hold": None, "metrics": metrics})
    tripped = circuit_breaker(look.telemetry)
    if tripped is not None:
        judgement = judgement.model_copy(update={"metrics": (*judgement.metrics, tripped)})
    return judgement, memory


def _eligible(telemetry: RolloutTelemetry, segments: list[str]) -> RolloutTelemetry | None:
    """Both variants' counts in ``segments``; None if either's segments do not hold all its requests."""
    baseline, candidate = telemetry.baseline.within(segments), telemetry.candidate.within(segments)
    return None if baseline is None or candidate is None else RolloutTelemetry(baseline, candidate)


def _on_totals(telemetry: RolloutTelemetry, segments: list[str]) -> MetricJudgement:
    """Why every segment's requests were judged: a check that holds nothing back, but says so."""
    return MetricJudgement.note(
        CANDIDATE_SEGMENTS,
        telemetry,
        f"judged on all requests: the candidate may see segments {', '.join(segments)} alone, but the "
        "telemetry does not count every request in a segment (a metric source's has no segments), so it is "
        "compared with the baseline's requests in every segment, and the sample-ratio check is not applied; "
        "to compare like with like, have the source count those segments' requests alone",
    )
