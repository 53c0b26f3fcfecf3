"""The rollout spec: what a user writes, validated with errors that name the field and the YAML line.

>>> spec = load_spec('''
... apiVersion: modelcanary/v1
... kind: Rollout
... metadata: {name: fraud-v2}
... spec:
...   endpoint: fraud
...   baseline: models:/fraud@champion
...   candidate: models:/fraud/2
...   traffic:
...     steps: [{weight: 5}, {weight: 50}]
...   analysis:
...     metrics: [{kind: error_rate}]
... ''')
>>> [step.weight for step in spec.spec.traffic.steps]
[5.0, 50.0]
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator, model_validator

from modelcanary.domain.errors import SpecError
from modelcanary.domain.metrics import Analysis
from modelcanary.domain.specbase import EndpointName, HttpUrl, ModelUri, Seconds, SpecModel, problem_at
from modelcanary.domain.specyaml import Unsavable, plain, read_yaml, where
from modelcanary.domain.traffic import STEP_KINDS, Traffic

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"  # an environment variable's name


class OnSuccess(SpecModel):
    # MLflow's alias rules, checked here so that a promotion cannot end in an alias move the
    # registry refuses, retried for ever; 200 characters keeps the action's key within its column
    set_alias: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+$",
        max_length=200,
        description="registry alias moved to the candidate on promotion",
    )

    @field_validator("set_alias")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value is not None and (value.lower() == "latest" or re.fullmatch(r"[vV][0-9]+", value)):
            raise ValueError(f"{value!r} is reserved by MLflow for a version; name the alias otherwise")
        return value


class OnFailure(SpecModel):
    tag_version: bool = Field(default=True, description="tag the candidate's registry version with the reason")


def _policy_ref(value: object) -> object:
    return {"policy": value} if isinstance(value, str) else value


class PolicyRef(SpecModel):
    """A Rego policy: a ``.rego`` file (relative to the spec's file) or a built-in's name, and the
    parameters it reads as ``input.params``."""

    policy: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _finite(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Any value goes, but ``allow_inf_nan`` checks only typed floats: these are saved as JSON too."""
        if not _all_finite(params):
            raise ValueError("infinity and NaN have no JSON form; give a finite number")
        return params


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(item) for item in value.values())
    if isinstance(value, list):
        return all(_all_finite(item) for item in value)
    return True


Policies = list[Annotated[PolicyRef, BeforeValidator(_policy_ref)]]


class Gates(SpecModel):
    """Policies asked before the rollout starts, before each weight step, and before promotion."""

    start: Policies = Field(default_factory=list)
    step: Policies = Field(default_factory=list)
    promote: Policies = Field(default_factory=list)
    on_deny: Literal["hold", "rollback"] = Field(
        default="hold", description="what a denial at the step or promote gate leads to"
    )
    require_approver: bool = Field(
        default=False, description="never promote unless someone approved (an approval step or a promote command)"
    )

    def policies(self, gate: str) -> list[PolicyRef]:
        refs: list[PolicyRef] = getattr(self, gate)
        return refs


class Notify(SpecModel):
    """A webhook told of every phase or step change: JSON (with an idempotency key, signed with
    HMAC-SHA256 when ``secret_env`` names an environment variable holding the secret) or a
    Slack-compatible ``{"text": ...}``. Its URL is ``url``, which anyone who may read the rollout
    sees (its spec is shown to viewers), or ``url_env``, an environment variable of the controller
    holding it: for a URL that is itself the credential, as a Slack incoming webhook's is."""

    url: HttpUrl | None = None
    url_env: str | None = Field(default=None, pattern=ENV_NAME)
    secret_env: str | None = Field(default=None, pattern=ENV_NAME)
    format: Literal["json", "slack"] = "json"

    @model_validator(mode="after")
    def _one_url(self) -> Notify:
        if (self.url is None) == (self.url_env is None):
            why = "give the webhook's url, or urlEnv: the environment variable holding it (one of them)"
            raise problem_at("Notify", ("urlEnv" if self.url_env else "url",), why, self.url or self.url_env)
        return self


class VariantQueries(SpecModel):
    """PromQL for one variant. Each is read as a cumulative counter: the judge sees its growth since
    the rollout started (its value now minus its value at the start), so write the counter itself
    (``sum(model_requests_total{version="2"})``), not a ``rate()``. A query holding ``$window`` is read
    once instead, with the rollout's age in its place: ``sum(increase(model_requests_total[$window]))``
    reads through counter resets, with extrapolated counts."""

    requests: str = Field(min_length=1, description="one series: the variant's request count")
    errors: str = Field(min_length=1, description="one series: the variant's failed-request count")
    latency_buckets: str | None = Field(
        default=None, description="a histogram's cumulative buckets, one series per le: 'sum(...) by (le)'"
    )


class PrometheusSource(SpecModel):
    """Telemetry for models served outside the gateway (Triton, KServe, Seldon), from PromQL."""

    url: HttpUrl = Field(description="the Prometheus server, e.g. http://prometheus:9090")
    baseline: VariantQueries
    candidate: VariantQueries
    interval: Seconds = Field(default=10.0, description="between reads; no shorter than the scrape interval")
    timeout: Seconds = Field(default=5.0, gt=0, description="per query")
    latency_unit: Literal["s", "ms"] = Field(default="s", description="the unit of the histogram's le bounds")

    @model_validator(mode="after")
    def _both_or_neither_histogram(self) -> PrometheusSource:
        if (self.baseline.latency_buckets is None) != (self.candidate.latency_buckets is None):
            lacking = "baseline" if self.baseline.latency_buckets is None else "candidate"
            why = "give latencyBuckets for both variants or for neither"
            raise problem_at("PrometheusSource", (lacking,), why, getattr(self, lacking))
        return self


class Source(SpecModel):
    """Where the judge's telemetry comes from when the gateway does not serve the models."""

    prometheus: PrometheusSource

    @property
    def name(self) -> str:
        return "prometheus"


# what a Prometheus source can measure: request and error counts, and latency if it has buckets
_PROMETHEUS_KINDS = ("error_rate", "latency")


class Body(SpecModel):
    endpoint: EndpointName
    baseline: ModelUri
    candidate: ModelUri
    traffic: Traffic
    analysis: Analysis
    on_success: OnSuccess = OnSuccess()
    on_failure: OnFailure = OnFailure()
    gates: Gates = Gates()
    notify: list[Notify] = Field(default_factory=list)

    @field_validator("on_success")
    @classmethod
    def _alias_needs_a_registry_candidate(cls, value: OnSuccess, info: ValidationInfo) -> OnSuccess:
        candidate = info.data.get("candidate")
        if value.set_alias and candidate is not None and not candidate.startswith("models:/"):
            why = f"setAlias moves a registry alias, but the candidate {candidate!r} is not in the registry"
            raise problem_at("OnSuccess", ("setAlias",), why, value.set_alias)
        return value

    source: Source | None = Field(default=None, description="the gateway's own telemetry when none is named")

    @model_validator(mode="after")
    def _source_measures_metrics(self) -> Body:
        if self.source is None:
            return self
        for index, metric in enumerate(self.analysis.metrics):
            at = ("analysis", "metrics", index, "kind")
            if metric.kind not in _PROMETHEUS_KINDS:
                why = (
                    f"metric {metric.name!r} ({metric.kind}) needs the gateway's telemetry; a prometheus source "
                    f"measures only {' and '.join(_PROMETHEUS_KINDS)}"
                )
                raise problem_at("Body", at, why, metric.kind)
            if metric.kind == "latency" and self.source.prometheus.baseline.latency_buckets is None:
                why = f"metric {metric.name!r} (latency) needs latencyBuckets queries in the source"
                raise problem_at("Body", at, why, metric.kind)
        return self


class Metadata(SpecModel):
    name: str | None = None


class RolloutSpec(SpecModel):
    api_version: Literal["modelcanary/v1"]
    kind: Literal["Rollout"]
    metadata: Metadata = Metadata()
    spec: Body

    @property
    def name(self) -> str:
        return self.metadata.name or self.spec.endpoint


def load_spec(text: str, *, source: str = "<spec>") -> RolloutSpec:
    """Parse and validate a YAML spec; raise ``SpecError`` naming each bad field and its line."""
    document = read_yaml(text, source=source)
    if not isinstance(document, dict):
        raise SpecError([("line 1", "a rollout spec is a YAML mapping with apiVersion, kind and spec")], source=source)
    try:
        return RolloutSpec.model_validate(plain(document))
    except Unsavable as exc:
        raise SpecError([(where(document, exc.loc, unions=STEP_KINDS), exc.problem)], source=source) from exc
    except ValidationError as exc:
        problems = [(where(document, error["loc"], unions=STEP_KINDS), error["msg"]) for error in exc.errors()]
        raise SpecError(problems, source=source) from exc


def saved_spec(text: str, as_json: str | None, *, source: str) -> RolloutSpec:
    """A started rollout's spec as its store holds it: the validated JSON saved with it, where
    there is one (what the controller decides on, and 0.05 ms to read), the YAML otherwise (saved
    before the JSON was, 10-25 ms). ``SpecError`` if this version reads neither (a spec saved by a
    version that read it differently)."""
    if as_json is None:
        return load_spec(text, source=source)
    try:
        return RolloutSpec.model_validate_json(as_json)
    except ValidationError as exc:
        problems = [(".".join(map(str, error["loc"])) or "spec", error["msg"]) for error in exc.errors()]
        raise SpecError(problems, source=source) from exc


def locate(text: str, loc: tuple[int | str, ...]) -> str:
    """Where a field of a spec's YAML is, as ``SpecError`` names it, for problems found after
    validation (a policy file that does not compile, say).

    >>> locate("spec:\\n  gates:\\n    start: [a, b]\\n", ("spec", "gates", "start", 1))
    'spec.gates.start[1] (line 3)'
    """
    return where(read_yaml(text, source="<spec>"), loc, unions=STEP_KINDS)
