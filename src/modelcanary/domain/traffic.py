"""The traffic part of a rollout spec: its steps (weights and approvals), who stays on which
variant (the sticky key) and who may see the candidate (segments), and how the gateway serves
each variant (circuit breaker, cache, batching, shadow lane). ``spec.py`` holds the rest."""

from __future__ import annotations

import collections
import itertools
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator

from modelcanary.domain.specbase import Seconds, SpecModel, problem_at


class StickyKey(SpecModel):
    """Where the key that keeps a user on one variant comes from: a header, or an input field."""

    header: str | None = Field(default=None, min_length=1)
    field: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> StickyKey:
        if (self.header is None) == (self.field is None):
            raise ValueError("give exactly one of header or field")
        return self


class Step(SpecModel):
    """A weight step: the candidate serves ``weight`` percent until the judge passes it."""

    weight: float = Field(gt=0, le=100, description="percent of eligible traffic sent to the candidate")
    min_requests: int = Field(default=100, ge=0, description="candidate requests needed in this step")
    min_duration: Seconds = 30.0
    max_duration: Seconds = 600.0

    @model_validator(mode="after")
    def _ordered(self) -> Step:
        if self.max_duration < self.min_duration:
            # at the one the spec gives: a minDuration past the default maxDuration is the mistake
            field, value = (
                ("maxDuration", self.max_duration)
                if "max_duration" in self.model_fields_set
                else ("minDuration", self.min_duration)
            )
            raise problem_at("Step", (field,), "maxDuration must be at least minDuration", value)
        return self


class CircuitBreaker(SpecModel):
    """Fault isolation for the candidate. A candidate call that raises, answers 5xx or misses its
    ``deadline`` is a failure: the baseline answers that request instead. After
    ``consecutive_failures`` failures in a row on one gateway, that gateway takes the candidate
    out at once and reports it, and the controller rolls the rollout back at its next tick."""

    consecutive_failures: int = Field(default=5, ge=1, le=1_000_000)
    deadline: Seconds | None = Field(
        default=None, gt=0, description="the candidate's time to answer; None: no deadline (it runs inline, cheapest)"
    )


def _repeated(names: list[str]) -> list[str]:
    """The names given more than once, in order.

    >>> _repeated(["eu", "us", "eu"])
    ['eu']
    """
    counts = collections.Counter(names)
    return [name for name in counts if counts[name] > 1]


def _no_repeats(names: list[str]) -> list[str]:
    if repeated := _repeated(names):
        raise ValueError(f"each name once; repeated: {', '.join(repeated)}")
    return names


Variants = Annotated[list[Literal["baseline", "candidate"]], Field(min_length=1), AfterValidator(_no_repeats)]


class Cache(SpecModel):
    """A prediction cache per variant: up to ``max_entries`` input rows and their outputs, each
    kept for ``ttl``; the least recently used goes first. For models whose inputs repeat."""

    max_entries: int = Field(default=10_000, ge=1, le=10_000_000)
    ttl: Seconds = Field(default=60.0, gt=0)
    variants: Variants = Field(default=["baseline", "candidate"])


class Batching(SpecModel):
    """Dynamic batching per variant, for models in the gateway's own process: concurrent requests
    to one variant are grouped into one predict call of at most ``max_batch_size`` rows, the first
    of them waiting at most ``max_wait_us`` microseconds for company (under load batches fill with
    no wait). A model the gateway already batches (``gateway --batch-max-size``) or awaits (a
    remote one) is left as it is. A batch's waits count in its requests' latency, and a failed
    batched request is tried once more alone: batch both variants (the default) when the rollout
    judges latency or errors, or the judge compares batching with none (docs/backends.md)."""

    max_batch_size: int = Field(default=64, ge=1, le=100_000)
    max_wait_us: int = Field(default=500, ge=0, le=1_000_000)
    variants: Variants = Field(default=["baseline", "candidate"])


class Shadow(SpecModel):
    """The shadow lane: the candidate also predicts a ``sample`` of the requests the baseline
    serves, off the response path, through a queue of at most ``queue`` requests (shed first,
    and counted, when full). Its predictions wait ``keep`` for a label, to compare the two models
    on the same labelled rows."""

    sample: float = Field(default=0.1, gt=0, le=1)
    duration: Seconds = Field(
        default=0.0, description="a shadow phase this long before the first step; 0: none, shadow beside the steps"
    )
    queue: int = Field(default=1000, ge=1, le=1_000_000)
    keep: Seconds = Field(default=600.0, gt=0)


OTHER_SEGMENT = "other"  # where a request that matches no segment rule belongs


class Segment(SpecModel):
    """Requests whose header (or input field) holds one of ``values`` belong to segment ``name``.

    The rules are tried in order and the first that matches wins; a request none matches is in
    segment ``other``. Telemetry is kept per segment, so a regression confined to one shows."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    header: str | None = Field(default=None, min_length=1)
    field: str | None = Field(default=None, min_length=1)
    values: list[str] = Field(alias="in", min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _one_source(self) -> Segment:
        if (self.header is None) == (self.field is None):
            raise ValueError("give exactly one of header or field")
        if self.name == OTHER_SEGMENT:
            why = f"{OTHER_SEGMENT!r} is the segment of requests no rule matches; name this one otherwise"
            raise problem_at("Segment", ("name",), why, self.name)
        return self


class Approval(SpecModel):
    """Wait, at the weight reached so far, until someone with ``role`` approves; the judge keeps
    watching, so a failing metric still rolls back. At ``timeout`` (none: wait for ever) do
    ``on_timeout``: roll back, pause for a human, or go on as if approved (``promote``)."""

    role: Literal["approver", "admin"] = "approver"
    timeout: Seconds | None = None
    on_timeout: Literal["rollback", "pause", "promote"] = "rollback"


class ApprovalStep(SpecModel):
    approval: Approval


def _step_kind(value: Any) -> str:
    """Which kind of step: a mapping being validated, or a model being serialised (an approval
    step read as a weight step there made pydantic warn at every save of such a spec)."""
    if isinstance(value, ApprovalStep) or (isinstance(value, dict) and "approval" in value):
        return STEP_KINDS[1]
    return STEP_KINDS[0]


# pydantic names the union member it tried in an error's location; ``_where`` skips these names
STEP_KINDS = ("weight step", "approval step")
AnyStep = Annotated[
    Annotated[Step, Tag(STEP_KINDS[0])] | Annotated[ApprovalStep, Tag(STEP_KINDS[1])], Discriminator(_step_kind)
]


class Traffic(SpecModel):
    steps: list[AnyStep] = Field(min_length=1)
    sticky_key: StickyKey | None = None
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    segments: list[Segment] = Field(default_factory=list, max_length=50)
    candidate_segments: list[str] | None = Field(
        default=None, description="the only segments that may see the candidate (``other`` included); None: all"
    )
    cache: Cache | None = None
    batching: Batching | None = None
    shadow: Shadow | None = None

    @field_validator("segments")
    @classmethod
    def _unique_segments(cls, segments: list[Segment]) -> list[Segment]:
        if repeated := _repeated([segment.name for segment in segments]):
            raise ValueError(f"segment names must be unique; repeated: {', '.join(repeated)}")
        return segments

    @field_validator("candidate_segments")
    @classmethod
    def _known_segments(cls, names: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if names is None:
            return None
        if not names:  # not the same as leaving it out: no request could ever reach the candidate
            raise ValueError(f"name at least one segment ({OTHER_SEGMENT!r} included), or leave it out for all")
        _no_repeats(names)
        if "segments" not in info.data:
            return names  # the segments themselves are wrong; that error is reported
        known = [segment.name for segment in info.data["segments"]] + [OTHER_SEGMENT]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"unknown segment(s) {', '.join(unknown)}; defined: {', '.join(known)}")
        return names

    on_timeout: Literal["rollback", "pause", "hold"] = Field(
        default="rollback", description="what a step's maxDuration without a pass or a failure leads to"
    )

    @model_validator(mode="after")
    def _increasing(self) -> Traffic:
        first = self.steps[0]
        if not isinstance(first, Step):
            why = "the first step must be a weight step (an approval waits at the weight reached)"
            raise problem_at("Traffic", ("steps", 0), why, first)
        weights = [(index, step.weight) for index, step in enumerate(self.steps) if isinstance(step, Step)]
        for (_, earlier), (index, later) in itertools.pairwise(weights):
            if later <= earlier:
                why = f"step weights must increase: {later:g} follows {earlier:g}"
                raise problem_at("Traffic", ("steps", index, "weight"), why, later)
        return self
