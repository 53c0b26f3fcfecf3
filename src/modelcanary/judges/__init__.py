"""Judges: pure functions from an analysis spec and a rollout's telemetry to a judgement.

The factory is one dict; an unknown name raises with the known ones.
"""

from __future__ import annotations

from collections.abc import Callable

from modelcanary.domain.errors import SpecError
from modelcanary.domain.judgement import Judgement
from modelcanary.domain.spec import Analysis
from modelcanary.domain.telemetry import RolloutTelemetry
from modelcanary.judges import threshold

Judge = Callable[[Analysis, RolloutTelemetry], Judgement]

JUDGES: dict[str, Judge] = {threshold.NAME: threshold.judge}


def get_judge(name: str) -> Judge:
    try:
        return JUDGES[name]
    except KeyError:
        known = ", ".join(sorted(JUDGES))
        raise SpecError([("spec.analysis.judge", f"unknown judge {name!r}; known: {known}")]) from None
