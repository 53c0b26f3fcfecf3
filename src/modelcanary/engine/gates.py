"""The document a gate's policies judge (their ``input``): pure, built from what the store holds, so a
gate's answer can be reproduced. Its shape is the policies' contract, documented in docs/gates.md.

>>> from modelcanary.domain.gates import Gate
>>> from modelcanary.domain.state import ModelInfo, ModelVersion
>>> document = gate_input(Gate.START, spec_json={"endpoint": "fraud"}, state=None,
...     models={"baseline": (ModelVersion(name="fraud", version="1"), ModelInfo(data_as_of=0.0)),
...             "candidate": (ModelVersion(name="fraud", version="2"), None)},
...     judgement=None, actor="cli:ana", now=86_400.0 * 3)
>>> document["baseline"]["data_age_days"], document["candidate"]["metrics"], document["now_iso"]
(3.0, {}, '1970-01-04T00:00:00Z')

Data dated after ``now`` has a negative age, which data-freshness denies beyond a day of clock skew:

>>> future = ModelInfo(data_as_of=86_400.0 * 5)
>>> document = gate_input(Gate.START, spec_json={}, state=None, judgement=None, actor="t", now=86_400.0 * 3,
...     models={"candidate": (ModelVersion(name="fraud", version="2"), future)})
>>> document["candidate"]["data_age_days"], document["candidate"]["data_as_of_iso"]
(-2.0, '1970-01-06T00:00:00Z')
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modelcanary.domain.gates import Gate
from modelcanary.domain.judgement import Judgement
from modelcanary.domain.state import ModelInfo, ModelVersion, RolloutState

DAY = 86_400.0


def gate_input(
    gate: Gate,
    *,
    spec_json: dict[str, Any],
    state: RolloutState | None,
    models: dict[str, tuple[ModelVersion, ModelInfo | None]],
    judgement: Judgement | None,
    actor: str,
    now: float,
) -> dict[str, Any]:
    """``gate``, ``spec``, ``baseline``/``candidate`` (version, run id, metrics, tags, signature,
    lineage, ``data_age_days``: negative when the data is dated after ``now``, and
    ``data_as_of_iso``), ``rollout`` (None at the start gate), ``judgement``, ``actor``, ``now``
    (epoch seconds) and ``now_iso``. The clock is an input, never read by a policy, so a freeze
    window replays."""
    rollout = None
    if state is not None:
        rollout = {
            "id": state.id,
            "phase": state.phase.value,
            "step": state.step,
            "weight": state.weight,
            "paused": state.paused,
            "created_at": state.created_at,
            "approvals": [approval.model_dump(mode="json") for approval in state.approvals],
        }
    return {
        "gate": gate.value,
        "spec": spec_json,
        "rollout": rollout,
        **{role: _model(version, info, now) for role, (version, info) in models.items()},
        "judgement": ({**judgement.model_dump(mode="json"), "verdict": judgement.verdict.value} if judgement else None),
        "actor": actor,
        "now": now,
        "now_iso": _iso(now),
    }


def _model(version: ModelVersion, info: ModelInfo | None, now: float) -> dict[str, Any]:
    known = info or ModelInfo(run_id=version.run_id, source=version.source)
    age = None if known.data_as_of is None else (now - known.data_as_of) / DAY
    return {
        "name": version.name,
        "version": version.version,
        **known.model_dump(mode="json"),
        "data_age_days": age,
        "data_as_of_iso": _iso(known.data_as_of),
    }


def _iso(epoch: float | None) -> str | None:
    """``epoch`` in UTC as ``YYYY-MM-DDTHH:MM:SSZ``; None if unknown or past what a date can
    hold (year 9999), as a tag typed wrong may be.

    >>> _iso(0.0), _iso(1e15), _iso(None)
    ('1970-01-01T00:00:00Z', None, None)
    """
    if epoch is None:
        return None
    try:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None
