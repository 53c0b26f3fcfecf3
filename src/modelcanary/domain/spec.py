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

import itertools
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from modelcanary.domain.errors import SpecError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w.-]+))$")
# a model on a remote Open Inference Protocol server, optionally under a path prefix
_V2_REF = re.compile(
    r"^v2\+(?P<scheme>https?)://(?P<host>[^/?#]+)(?P<prefix>(?:/[^/?#]+)*?)"
    r"/models/(?P<name>[^/?#]+)(?:/versions/(?P<version>[^/?#]+))?(?:\?columns=(?P<columns>[\w.-]+(?:,[\w.-]+)*))?$"
)
_RAY_REF = re.compile(r"^ray://(?P<app>[^/?#]+)/(?P<deployment>[^/?#]+)$")
MODEL_REF_FORMS = (
    "models:/NAME@ALIAS, models:/NAME/VERSION, v2+http://HOST:PORT/models/NAME[/versions/V][?columns=A,B] "
    "or ray://APP/DEPLOYMENT"
)


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``90s``, ``2m``, ``1.5h``, ``250ms``.

    >>> parse_duration("2m"), parse_duration(5), parse_duration("250ms")
    (120.0, 5.0, 0.25)
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30s, 5m, 1h")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 1h or 250ms")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``(name, version, alias)`` of a registry URI, exactly one of version and alias set.

    >>> parse_model_uri("models:/fraud@champion"), parse_model_uri("models:/fraud/7")
    (('fraud', None, 'champion'), ('fraud', '7', None))
    """
    match = _MODEL_URI.match(uri)
    if not match:
        raise ValueError(f"{uri!r} is not a registry model URI; write models:/NAME@ALIAS or models:/NAME/VERSION")
    return match.group("name"), match.group("version"), match.group("alias")


def parse_model_ref(ref: str) -> tuple[str, dict[str, str]]:
    """Which kind of model a ref names (``registry``, ``v2`` or ``ray``) and its parts.

    >>> parse_model_ref("v2+http://10.0.0.7:8000/models/fraud/versions/3")
    ('v2', {'base': 'http://10.0.0.7:8000', 'name': 'fraud', 'version': '3', 'columns': ''})
    >>> parse_model_ref("ray://fraud-app/FraudModel")
    ('ray', {'app': 'fraud-app', 'deployment': 'FraudModel'})
    """
    if ref.startswith("models:/"):
        name, version, alias = parse_model_uri(ref)
        return "registry", {"name": name, "version": version or "", "alias": alias or ""}
    if match := _V2_REF.match(ref):
        base = f"{match['scheme']}://{match['host']}{match['prefix']}"
        parts = {
            "base": base,
            "name": match["name"],
            "version": match["version"] or "",
            "columns": match["columns"] or "",
        }
        return "v2", parts
    if match := _RAY_REF.match(ref):
        return "ray", {"app": match["app"], "deployment": match["deployment"]}
    raise ValueError(f"{ref!r} is not a model ref; write {MODEL_REF_FORMS}")


def _model_ref(value: object) -> str:
    parse_model_ref(str(value))
    return str(value)


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
ModelUri = Annotated[str, BeforeValidator(_model_ref)]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class StickyKey(_Model):
    """Where the key that keeps a user on one variant comes from: a header, or an input field."""

    header: str | None = None
    field: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StickyKey:
        if (self.header is None) == (self.field is None):
            raise ValueError("give exactly one of header or field")
        return self


class Step(_Model):
    weight: float = Field(gt=0, le=100, description="percent of eligible traffic sent to the candidate")
    min_requests: int = Field(default=100, ge=0, description="candidate requests needed in this step")
    min_duration: Seconds = 30.0
    max_duration: Seconds = 600.0

    @model_validator(mode="after")
    def _ordered(self) -> Step:
        if self.max_duration < self.min_duration:
            raise ValueError("maxDuration must be at least minDuration")
        return self


class Traffic(_Model):
    steps: list[Step] = Field(min_length=1)
    sticky_key: StickyKey | None = None
    on_timeout: Literal["rollback", "pause", "hold"] = Field(
        default="rollback", description="what a step's maxDuration without a pass or a failure leads to"
    )

    @model_validator(mode="after")
    def _increasing(self) -> Traffic:
        weights = [step.weight for step in self.steps]
        if any(later <= earlier for earlier, later in itertools.pairwise(weights)):
            raise ValueError(f"step weights must increase, got {weights}")
        return self


class _Metric(_Model):
    weight: float = Field(
        default=1.0, gt=0, description="share of alpha this metric's evidence gets, relative to the others"
    )


class ErrorRateMetric(_Metric):
    """Candidate error rate may exceed the baseline's by at most ``margin`` (absolute, 0.01 = 1 point)."""

    kind: Literal["error_rate"]
    name: str = "error-rate"
    margin: float = Field(default=0.01, ge=0, le=1)
    min_requests: int = Field(default=100, ge=1)


class LatencyMetric(_Metric):
    """Candidate latency at ``quantile`` may exceed the baseline's by at most ``margin`` (relative, 0.2 = +20%).

    With ``distribution`` (the default) the sequential judge also tests the whole distribution (its
    p50, p90, p99 and p99.9), so a regression confined to the tail is caught whatever the quantile.
    """

    kind: Literal["latency"]
    name: str = "latency"
    quantile: float = Field(default=0.95, gt=0, lt=1)
    margin: float = Field(default=0.2, ge=0)
    min_requests: int = Field(default=50, ge=1)
    distribution: bool = True


class QualityMetric(_Metric):
    """Candidate ``measure`` on labelled predictions may fall below the baseline's by at most ``margin``.

    A prediction counts as positive when its score is at least ``threshold``.
    """

    kind: Literal["quality"]
    name: str = "quality"
    measure: Literal["accuracy", "precision", "recall"] = "accuracy"
    threshold: float = Field(default=0.5, ge=0, le=1)
    margin: float = Field(default=0.02, ge=0, le=1)
    min_labels: int = Field(default=100, ge=1)


class DriftMetric(_Metric):
    """A guardrail: the distance between the variants' prediction-score distributions stays below ``limit``."""

    kind: Literal["drift"]
    name: str = "prediction-drift"
    distance: Literal["psi", "js", "wasserstein"] = "psi"
    limit: float = Field(default=0.2, gt=0)
    min_requests: int = Field(default=200, ge=1)


class CostMetric(_Metric):
    """A guardrail: candidate CPU time per request may exceed the baseline's by at most ``margin`` (relative)."""

    kind: Literal["cost"]
    name: str = "cpu-cost"
    margin: float = Field(default=0.5, ge=0)
    min_requests: int = Field(default=100, ge=1)


Metric = Annotated[
    ErrorRateMetric | LatencyMetric | QualityMetric | DriftMetric | CostMetric, Field(discriminator="kind")
]


class ThresholdSettings(_Model):
    """Flagger's analysis: every ``interval`` each metric is checked on that interval's data alone,
    and the rollout rolls back after ``failed_checks`` failed checks."""

    interval: Seconds = 60.0
    failed_checks: int = Field(default=5, ge=1)


class MannWhitneySettings(_Model):
    """Kayenta's NetflixACAJudge: per-interval points of each metric, a Mann-Whitney test at
    ``confidence`` with an effect ``tolerance``, and a score (percent of metrics passing) against
    ``pass_score`` and ``marginal_score``."""

    interval: Seconds = 60.0
    confidence: float = Field(default=0.98, gt=0.5, lt=1)
    tolerance: float = Field(default=0.25, ge=0)
    pass_score: float = Field(default=95.0, ge=0, le=100)
    marginal_score: float = Field(default=75.0, ge=0, le=100)


class Analysis(_Model):
    judge: Literal["sequential", "threshold", "mann_whitney"] = "sequential"
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="the promised false-rollback rate")
    metrics: list[Metric] = Field(min_length=1)
    threshold: ThresholdSettings = ThresholdSettings()
    mann_whitney: MannWhitneySettings = MannWhitneySettings()

    @model_validator(mode="after")
    def _unique_names(self) -> Analysis:
        names = [metric.name for metric in self.metrics]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"metric names must be unique; repeated: {', '.join(duplicates)} (set name:)")
        return self


class OnSuccess(_Model):
    set_alias: str | None = Field(default=None, description="registry alias moved to the candidate on promotion")


class OnFailure(_Model):
    tag_version: bool = Field(default=True, description="tag the candidate's registry version with the reason")


class Body(_Model):
    endpoint: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    baseline: ModelUri
    candidate: ModelUri
    traffic: Traffic
    analysis: Analysis
    on_success: OnSuccess = OnSuccess()
    on_failure: OnFailure = OnFailure()

    @field_validator("on_success")
    @classmethod
    def _alias_needs_a_registry_candidate(cls, value: OnSuccess, info: ValidationInfo) -> OnSuccess:
        candidate = info.data.get("candidate")
        if value.set_alias and candidate is not None and not candidate.startswith("models:/"):
            raise ValueError(f"setAlias moves a registry alias, but the candidate {candidate!r} is not in the registry")
        return value


class Metadata(_Model):
    name: str | None = None


class RolloutSpec(_Model):
    api_version: Literal["modelcanary/v1"]
    kind: Literal["Rollout"]
    metadata: Metadata = Metadata()
    spec: Body

    @property
    def name(self) -> str:
        return self.metadata.name or self.spec.endpoint


def load_spec(text: str, *, source: str = "<spec>") -> RolloutSpec:
    """Parse and validate a YAML spec; raise ``SpecError`` naming each bad field and its line."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    try:
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark else "yaml"
        raise SpecError([(where, str(exc.problem or exc))], source=source) from exc
    if not isinstance(document, dict):
        raise SpecError([("line 1", "a rollout spec is a YAML mapping with apiVersion, kind and spec")], source=source)
    try:
        return RolloutSpec.model_validate(_plain(document))
    except ValidationError as exc:
        problems = [(_where(document, error["loc"]), error["msg"]) for error in exc.errors()]
        raise SpecError(problems, source=source) from exc


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists (pydantic wants plain types)."""
    if isinstance(node, dict):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    return node


def _where(document: Any, loc: tuple[int | str, ...]) -> str:
    """``spec.traffic.steps[1].weight (line 14)``: the path, and the line of its deepest part in the YAML."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    path, line, node = "", 1, document
    for part in loc:
        if isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            path += f"[{part}]"
            line = node.lc.item(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedMap) and part in node:
            path += f".{part}" if path else str(part)
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedMap) and node.get("kind") == part:
            continue  # pydantic names the union member it tried (the kind); the YAML has no such level
        else:
            path += f".{part}" if path else str(part)
            node = None
    return f"{path or 'spec'} (line {line})"
