"""Rollout phases and the one table of transitions between them.

``paused`` is not a phase: it is an overlay an operator sets and clears on an active rollout,
kept in the rollout state, so that resuming returns to exactly where the rollout was.
"""

from __future__ import annotations

import enum

from modelcanary.domain.errors import Conflict


class Phase(enum.StrEnum):
    PENDING = "pending"  # saved, not yet picked up by a controller
    SHADOW = "shadow"  # the candidate predicts copies of live requests off the response path; serves no one
    CANARY = "canary"  # serving the candidate to a share of live traffic, step by step
    AWAITING_APPROVAL = "awaiting_approval"  # holding its weight until an approver lets it go on
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    def is_terminal(self) -> bool:
        """
        >>> Phase.PROMOTED.is_terminal(), Phase.CANARY.is_terminal()
        (True, False)
        """
        return not TRANSITIONS[self]


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.SHADOW, Phase.CANARY, Phase.ABORTED}),
    # shadow -> canary when its duration is up; an operator may promote or abort it
    Phase.SHADOW: frozenset({Phase.CANARY, Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED}),
    # canary -> canary is the advance to the next step
    Phase.CANARY: frozenset({Phase.CANARY, Phase.AWAITING_APPROVAL, Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED}),
    Phase.AWAITING_APPROVAL: frozenset({Phase.CANARY, Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED}),
    Phase.PROMOTED: frozenset(),
    Phase.ROLLED_BACK: frozenset(),
    Phase.ABORTED: frozenset(),
}


def check_transition(source: Phase, target: Phase) -> None:
    """Raise ``Conflict`` unless the table allows ``source -> target``.

    >>> check_transition(Phase.PENDING, Phase.CANARY)
    >>> check_transition(Phase.PROMOTED, Phase.CANARY)
    Traceback (most recent call last):
    ...
    modelcanary.domain.errors.Conflict: a promoted rollout cannot become canary
    """
    if target not in TRANSITIONS[source]:
        raise Conflict(f"a {source.value} rollout cannot become {target.value}")
