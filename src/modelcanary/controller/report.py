"""One rollout's story as the operator surfaces show it: state, history, telemetry, judgement.

Shared by the CLI, the control API and the HTML report, so all three tell the same story.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from modelcanary.domain.errors import SpecError
from modelcanary.domain.judgement import Judgement
from modelcanary.domain.shadow import ShadowTelemetry
from modelcanary.domain.spec import saved_spec
from modelcanary.domain.state import RolloutState, Transition
from modelcanary.domain.telemetry import LATENCY_EDGES_MS, RolloutTelemetry, Variant, VariantTelemetry
from modelcanary.engine.analysis import analyse, look_at, pair
from modelcanary.ports import History, RolloutStore, TelemetryStore
from modelcanary.stats.histogram import quantile

LATENCY_QUANTILES = (0.5, 0.9, 0.95, 0.99)


class ReportStore(RolloutStore, TelemetryStore, History, Protocol):
    pass


@dataclass(frozen=True)
class Report:
    state: RolloutState
    history: list[Transition]
    telemetry: RolloutTelemetry
    judgement: Judgement  # as decided, for an ended rollout; the judge's view now, for a live one

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout": self.state.model_dump(mode="json", exclude={"judge_memory"}),
            "judgement": {**self.judgement.model_dump(mode="json"), "verdict": self.judgement.verdict.value},
            "requests": {"baseline": self.telemetry.baseline.requests, "candidate": self.telemetry.candidate.requests},
            "labels": {"baseline": self.telemetry.baseline.labels, "candidate": self.telemetry.candidate.labels},
            # per segment of the traffic (the spec's segment rules): a regression confined to one shows here
            "segments": {
                name: {"baseline": counts.baseline.summary(), "candidate": counts.candidate.summary()}
                for name, counts in self.telemetry.by_segment().items()
            },
            # the candidate's shadow lane: agreement with the baseline on the same rows, and the paired
            # comparison on labelled ones, in all and per segment; None without a shadow lane
            "shadow": _shadow(self.telemetry.candidate.shadow),
            "history": [transition.model_dump(mode="json") for transition in self.history],
            "variants": {variant.value: variant_summary(self.telemetry.of(variant)) for variant in Variant},
        }


def variant_summary(telemetry: VariantTelemetry) -> dict[str, Any]:
    """What a person reads off one variant's counts: its error rate, latency quantiles (ms, from the
    buckets, so within 10% of the exact ones) and labels (how many, how many positive). None where
    there is no data yet.

    >>> t = VariantTelemetry()
    >>> for ms in (1.0, 2.0, 3.0, 50.0): t.observe(latency_ms=ms, error=ms > 10)
    >>> summary = variant_summary(t)
    >>> summary["error_rate"], summary["labels"], round(summary["latency_ms"]["p50"], 1)
    (0.25, 0, 2.1)
    >>> variant_summary(VariantTelemetry())["latency_ms"]["p99"] is None
    True
    """
    positives = sum(telemetry.positive_label_scores)
    return {
        "requests": telemetry.requests,
        "errors": telemetry.errors,
        "error_rate": telemetry.errors / telemetry.requests if telemetry.requests else None,
        "latency_ms": {
            f"p{round(q * 100):d}": quantile(LATENCY_EDGES_MS, telemetry.latency_counts, q) for q in LATENCY_QUANTILES
        },
        "labels": telemetry.labels,
        "positive_labels": positives,
        # over the requests whose CPU time was measured (none for a remote model)
        "cpu_ms_per_request": telemetry.cpu_ms / telemetry.cpu_requests if telemetry.cpu_requests else None,
    }


def _shadow(shadow: ShadowTelemetry | None) -> dict[str, Any] | None:
    if shadow is None:
        return None
    return {**shadow.summary(), "segments": {name: s.summary() for name, s in sorted(shadow.segments.items())}}


def rollout_report(store: ReportStore, rollout_id: str) -> Report:
    """A rollout's state, history, summed telemetry and judgement, read from the store."""
    state, text = store.get(rollout_id)
    telemetry = pair(store.read_telemetry(rollout_id))
    history = store.history(rollout_id)
    decided = [t.judgement for t in history if t.judgement is not None]
    if state.phase.is_terminal() and decided:
        # an ended rollout shows the evidence it was decided on, as saved with the decision
        judgement = Judgement.model_validate(decided[-1])
    else:  # a live one, the judge's view of the telemetry now (judges are pure: nothing is saved)
        try:
            spec = saved_spec(text, store.specs([rollout_id])[rollout_id][1], source=f"rollout {rollout_id}")
        except SpecError as exc:  # the controller holds it: say so, and show the rest
            hold = f"held: this version cannot read the spec the rollout was saved with ({exc})"
            return Report(
                state=state,
                history=history,
                telemetry=telemetry,
                judgement=Judgement(judge="none", metrics=(), hold=hold),
            )
        judgement, _ = analyse(spec, look_at(state, spec, telemetry, now=state.updated_at), state.judge_memory)
    return Report(state=state, history=history, telemetry=telemetry, judgement=judgement)
