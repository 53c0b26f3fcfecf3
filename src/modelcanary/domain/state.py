"""A rollout's durable state, the transitions it went through, the routing it implies and the side
effects it asks for. All plain values: the engine computes them, the store saves them."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict

from modelcanary.domain.gates import Gate
from modelcanary.domain.phases import Phase
from modelcanary.domain.refs import parse_model_ref
from modelcanary.domain.traffic import Batching, Cache, CircuitBreaker, Segment, Shadow, StickyKey


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True)


class ModelVersion(_Value):
    """A concrete registry version (aliases are resolved when a rollout starts, so the alias moving
    mid-rollout does not change what is served), or a model served elsewhere, named by its ``ref``
    (a remote V2 server or a Ray Serve deployment: the registry neither resolves nor tags those).

    >>> ModelVersion(name="fraud", version="7").uri
    'models:/fraud/7'
    >>> remote_version("v2+http://10.0.0.7:8000/models/fraud").uri
    'v2+http://10.0.0.7:8000/models/fraud'
    """

    name: str
    version: str
    run_id: str | None = None
    source: str | None = None
    ref: str | None = None

    @property
    def uri(self) -> str:
        return self.ref if self.ref is not None else f"models:/{self.name}/{self.version}"

    @property
    def in_registry(self) -> bool:
        return self.ref is None


def remote_version(ref: str) -> ModelVersion | None:
    """The version of a model served elsewhere (``v2+http://…``, ``ray://…``); None for a registry
    URI, which the registry resolves. Raises ``ValueError`` for something that is neither."""
    kind, parts = parse_model_ref(ref)
    if kind == "registry":
        return None
    return ModelVersion(name=parts.get("name") or parts["deployment"], version=parts.get("version", ""), ref=ref)


class ModelInfo(_Value):
    """What the registry knows of a model version when its rollout starts: its lineage (run, source,
    git commit, data version tags and datasets) and what policies judge it by (the run's offline
    metrics, tags, signature and the age of its training data). Saved with the rollout and in the
    audit log, so both are answerable later from the store alone."""

    run_id: str | None = None
    source: str | None = None
    git_commit: str | None = None  # the run's mlflow.source.git.commit tag
    data_tags: dict[str, str] = {}  # tags about the training data: keys starting with data or dataset
    datasets: tuple[dict[str, str], ...] = ()  # the run's logged dataset inputs: name, digest, source
    metrics: dict[str, float] = {}  # the run's logged metrics (latest value of each)
    tags: dict[str, str] = {}  # the run's tags, overlaid by the model version's
    signature: dict[str, Any] | None = None  # {"inputs": [...], "outputs": [...]} as MLflow stores them
    run_started_at: float | None = None  # epoch seconds
    data_as_of: float | None = None  # epoch seconds: the newest training data (a data tag, else the run's start)

    def lineage(self) -> dict[str, Any]:
        """Where the model came from, as the audit log keeps it (metrics and tags stay in the state).

        >>> ModelInfo(run_id="r1", git_commit="abc", data_tags={"data.version": "d7"}).lineage()["data_tags"]
        {'data.version': 'd7'}
        """
        return self.model_dump(
            mode="json", include={"run_id", "source", "git_commit", "data_tags", "datasets", "data_as_of"}
        )


class ApprovalRecord(_Value):
    """Someone let a rollout go on: at an approval step, or by promoting it."""

    actor: str
    at: float
    step: int


class RolloutState(_Value):
    id: str
    name: str
    endpoint: str
    phase: Phase
    paused: bool = False
    step: int = -1  # index into the spec's steps; -1 before the first
    weight: float = 0.0  # percent of eligible traffic on the candidate now
    step_started_at: float | None = None
    step_start_candidate_requests: int = 0  # candidate request count when the step began
    baseline: ModelVersion
    candidate: ModelVersion
    reason: str = ""
    judge_memory: dict[str, Any] = {}  # what the judge carries between looks (see domain.judgement.Memory)
    baseline_info: ModelInfo | None = None  # lineage and metadata, read from the registry at start
    candidate_info: ModelInfo | None = None
    policies: dict[str, str] = {}  # each gate policy's Rego source, by its ref, read once at start
    approvals: tuple[ApprovalRecord, ...] = ()
    gate_hold: str = ""  # the denial now holding the rollout at a gate; recorded once, not every tick
    timeout_hold: bool = False  # held at its step's maxDuration (onTimeout: hold); recorded once, not every tick
    error_hold: str = ""  # the failure now holding it: deciding it raised (its type and where); recorded once
    version: int = 0  # bumped by every save; the compare-and-set token
    created_at: float
    updated_at: float


class Transition(_Value):
    """One entry of a rollout's history: what changed, why, and who or what decided it."""

    at: float
    source: Phase
    target: Phase
    step: int
    weight: float
    paused: bool
    reason: str
    actor: str
    judgement: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None  # the GateDecision this transition crossed or was held at


class ActionKind(enum.StrEnum):
    SET_ALIAS = "set_alias"
    TAG_VERSION = "tag_version"
    NOTIFY = "notify"


class Action(_Value):
    """A side effect outside the store, saved with the state and run after commit. ``key`` makes
    running it twice harmless to the caller's bookkeeping."""

    kind: ActionKind
    payload: dict[str, str]
    key: str


class Route(_Value):
    """What the gateway serves on one endpoint."""

    endpoint: str
    baseline: ModelVersion
    candidate: ModelVersion | None = None
    weight: float = 0.0
    rollout_id: str | None = None
    sticky: StickyKey | None = None
    breaker: CircuitBreaker | None = None  # the candidate's fault isolation; None: no breaker, no deadline
    segments: tuple[Segment, ...] = ()  # rules that put each request in a segment (telemetry per segment)
    candidate_segments: tuple[str, ...] | None = None  # the only segments that may see the candidate; None: all
    cache: Cache | None = None  # prediction caches per variant; None: none
    batching: Batching | None = None  # dynamic batching per variant; None: as the gateway was started
    shadow: Shadow | None = None  # the candidate's shadow lane; None: none
    label_maturity_s: float = 0.0  # a label counts once its prediction is this old (the quality metrics' matureAfter)


class Outcome(_Value):
    """What one decision produces: the new state, and if anything changed, the history entry,
    the route to publish and the side effects to run, all saved together."""

    state: RolloutState
    transition: Transition | None = None
    route: Route | None = None
    actions: tuple[Action, ...] = ()
    asks: Gate | None = None  # set (and nothing else changed) when the decision needs this gate's answer first
