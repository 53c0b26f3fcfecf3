"""The one transition table: every pair of phases is either in it (allowed) or refused with Conflict."""

from __future__ import annotations

import itertools

import pytest

from modelcanary.domain.errors import Conflict
from modelcanary.domain.phases import TRANSITIONS, Phase, check_transition

ALLOWED = {
    (Phase.PENDING, Phase.CANARY),
    (Phase.PENDING, Phase.SHADOW),
    (Phase.SHADOW, Phase.CANARY),
    (Phase.SHADOW, Phase.PROMOTED),
    (Phase.SHADOW, Phase.ROLLED_BACK),
    (Phase.SHADOW, Phase.ABORTED),
    (Phase.PENDING, Phase.ABORTED),
    (Phase.CANARY, Phase.CANARY),
    (Phase.CANARY, Phase.PROMOTED),
    (Phase.CANARY, Phase.ROLLED_BACK),
    (Phase.CANARY, Phase.ABORTED),
    (Phase.CANARY, Phase.AWAITING_APPROVAL),
    (Phase.AWAITING_APPROVAL, Phase.CANARY),
    (Phase.AWAITING_APPROVAL, Phase.PROMOTED),
    (Phase.AWAITING_APPROVAL, Phase.ROLLED_BACK),
    (Phase.AWAITING_APPROVAL, Phase.ABORTED),
}
PAIRS = list(itertools.product(Phase, Phase))


def test_table_covers_every_phase() -> None:
    assert set(TRANSITIONS) == set(Phase)


def test_table_is_the_documented_one() -> None:
    assert {(source, target) for source, targets in TRANSITIONS.items() for target in targets} == ALLOWED


@pytest.mark.parametrize("phase", list(Phase))
def test_terminal_phases_have_no_exits(phase: Phase) -> None:
    terminal = {Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED}
    assert phase.is_terminal() is (phase in terminal)
    assert (TRANSITIONS[phase] == frozenset()) is (phase in terminal)


@pytest.mark.parametrize(("source", "target"), sorted(ALLOWED))
def test_allowed_pairs_pass(source: Phase, target: Phase) -> None:
    check_transition(source, target)  # returns None; raises Conflict for a pair the table refuses


@pytest.mark.parametrize(("source", "target"), [pair for pair in PAIRS if pair not in ALLOWED])
def test_other_pairs_conflict(source: Phase, target: Phase) -> None:
    with pytest.raises(Conflict) as caught:
        check_transition(source, target)
    assert str(caught.value) == f"a {source.value} rollout cannot become {target.value}"


def test_phases_are_their_stored_strings() -> None:
    assert [phase.value for phase in Phase] == [
        "pending",
        "shadow",
        "canary",
        "awaiting_approval",
        "promoted",
        "rolled_back",
        "aborted",
    ]
    assert Phase("rolled_back") is Phase.ROLLED_BACK
