"""Judges: pure functions from an analysis spec, one look at a rollout's telemetry and what the
judge remembered from the previous look, to a judgement and what to remember for the next.

A judge is a fold over looks, so the controller and the benchmark drive every judge the same way,
and any verdict can be replayed from the stored looks or memory. The factory is one dict; an
unknown name raises with the known ones.
"""

from __future__ import annotations

from collections.abc import Callable

from modelcanary.domain.errors import SpecError
from modelcanary.domain.judgement import Judgement, Look, Memory
from modelcanary.domain.metrics import Analysis
from modelcanary.judges import mann_whitney, rank, sequential, threshold

Judge = Callable[[Analysis, Look, Memory], tuple[Judgement, Memory]]

JUDGES: dict[str, Judge] = {
    sequential.NAME: sequential.judge,
    threshold.NAME: threshold.judge,
    mann_whitney.NAME: mann_whitney.judge,
}


def prepare() -> None:
    """Load what the judges' numerics need (numpy, the rank test's table) now, not at the first look
    that needs it: a controller process calls this as it starts, so that no tick of a thousand
    rollouts pays for an import (about 0.15 s) halfway through."""
    rank.prepare()


def get_judge(name: str) -> Judge:
    try:
        return JUDGES[name]
    except KeyError:
        known = ", ".join(sorted(JUDGES))
        raise SpecError([("spec.analysis.judge", f"unknown judge {name!r}; known: {known}")]) from None
