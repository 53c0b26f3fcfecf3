"""The API's request and response bodies. Responses are declared so that the OpenAPI schema says
exactly what a client gets, and a schema check of real responses means something. Shapes that
mirror a domain model are derived from it, so the two cannot drift apart."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from modelcanary.domain.access import MAX_REASON_CHARS, TOKEN_NAME, Role
from modelcanary.domain.judgement import Judgement, Verdict
from modelcanary.domain.specbase import EndpointName
from modelcanary.domain.specyaml import MAX_SPEC_CHARS
from modelcanary.domain.state import RolloutState, Transition


def _without(model: type[BaseModel], name: str, *, drop: set[str], add: dict[str, Any] | None = None) -> Any:
    fields: dict[str, Any] = {
        field: (info.annotation, info) for field, info in model.model_fields.items() if field not in drop
    }
    return create_model(name, **fields, **(add or {}))


if TYPE_CHECKING:  # to mypy, the models they are derived from
    Rollout = RolloutState
    JudgementView = Judgement
else:
    # the rollout as the API shows it: its state without the judge's private memory
    Rollout = _without(RolloutState, "Rollout", drop={"judge_memory"})
    # with the verdict, a property of the domain model, as a field
    JudgementView = _without(Judgement, "Judgement", drop=set(), add={"verdict": (Verdict, ...)})


class Health(BaseModel):
    ok: bool


class Request(BaseModel):
    """A request body: a field it does not know is refused (422 naming it), not ignored: a
    misspelt ``endpoints`` would otherwise make a token for every endpoint."""

    model_config = ConfigDict(extra="forbid")


class StartRequest(Request):
    spec: str = Field(max_length=MAX_SPEC_CHARS, description="the rollout spec's YAML text, at most 64 KiB")
    source: str | None = Field(None, max_length=200, description="a name for the spec in error messages")


class CommandRequest(Request):
    reason: str | None = Field(
        None, max_length=MAX_REASON_CHARS, description="why; recorded in the history and audit log"
    )


class RolloutDetail(BaseModel):
    rollout: Rollout
    spec: str


class PerVariant(BaseModel):
    baseline: int
    candidate: int


class VariantSummary(BaseModel):
    """One variant's numbers as a person reads them (controller.report.variant_summary)."""

    requests: int
    errors: int
    error_rate: float | None
    latency_ms: dict[str, float | None] = Field(description="quantiles from the latency buckets: p50, p90, p95, p99")
    labels: int
    positive_labels: int
    cpu_ms_per_request: float | None


class PerVariantSummary(BaseModel):
    baseline: VariantSummary
    candidate: VariantSummary


class Report(BaseModel):
    rollout: Rollout
    judgement: JudgementView
    requests: PerVariant
    labels: PerVariant
    history: list[Transition]
    variants: PerVariantSummary
    # per-segment counts and the shadow lane's agreement (the gateway's segments and shadow lane)
    segments: dict[str, dict[str, dict[str, Any]]] = {}
    shadow: dict[str, Any] | None = None


class VariantCounts(BaseModel):
    requests: int
    errors: int
    cached: int = 0  # requests answered wholly from the prediction cache (no model called)
    cpu_ms: float
    cpu_requests: int = 0  # requests whose model CPU time is in cpu_ms (models in the gateway's process)
    latency_counts: list[int]
    score_counts: list[int]
    positive_label_scores: list[int]
    negative_label_scores: list[int]
    unscored_labels: int = 0  # labels of predictions without a score, which no quality measure reads
    breaker_trips: int = 0
    breaker_reason: str | None = None
    cache_hits: int = 0
    cache_misses: int = 0
    segments: dict[str, VariantCounts] | None = None  # present when the spec has segments
    shadow: dict[str, Any] | None = None  # the candidate's shadow lane, when it has one


class Telemetry(BaseModel):
    baseline: VariantCounts
    candidate: VariantCounts


class AuditEvent(BaseModel):
    id: int
    at: float
    actor: str
    action: str
    rollout_id: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class BrokenLink(BaseModel):
    id: int
    position: int
    reason: str


class AuditVerify(BaseModel):
    ok: bool
    # null for a token limited to endpoints: the chain's length and its event ids are the whole log's
    count: int | None = Field(description="events in the chain; null for a token limited to endpoints")
    broken: BrokenLink | None = Field(
        description="the first broken link; null if none, and always for a token limited to endpoints"
    )


class Order(StrEnum):
    """Which end of the audit log a page starts from."""

    OLDEST = "oldest"
    NEWEST = "newest"


class TokenRequest(Request):
    name: str = Field(
        pattern=f"^{TOKEN_NAME.pattern}$",
        description="unique, shown as the actor token:NAME; 1-64 letters, digits, _ . @ -",
    )
    role: Role
    endpoints: list[EndpointName] | None = Field(
        None, min_length=1, description="the endpoints this token may see and act on; null: all"
    )


class Token(BaseModel):
    id: str
    name: str
    role: Role
    endpoints: list[str] | None
    created_at: float
    revoked_at: float | None


class NewToken(BaseModel):
    id: str
    name: str
    role: Role
    endpoints: list[str] | None
    token: str = Field(description="the secret, shown this once: the store keeps only its hash")
