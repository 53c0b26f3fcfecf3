"""modelcanary: progressive delivery for machine-learning models.

The root exports the pure core (specs, phases, judgements, the decision function); the
gateway, controller and adapters are imported from their packages, so ``import modelcanary``
stays fast and pulls in neither MLflow nor SQLAlchemy.
"""

from modelcanary.domain.errors import (
    Conflict,
    ModelcanaryError,
    NotFound,
    RegistryError,
    RequestError,
    SpecError,
    StoreError,
    UnknownEndpoint,
    UnknownPrediction,
)
from modelcanary.domain.judgement import Judgement, MetricJudgement, Verdict
from modelcanary.domain.phases import Phase
from modelcanary.domain.spec import RolloutSpec, load_spec
from modelcanary.domain.state import ModelVersion, Outcome, RolloutState, Route
from modelcanary.domain.telemetry import RolloutTelemetry, Variant, VariantTelemetry
from modelcanary.engine.analysis import analyse
from modelcanary.engine.decide import Command, apply_command, decide

__version__ = "0.1.0"

__all__ = [
    "Command",
    "Conflict",
    "Judgement",
    "MetricJudgement",
    "ModelVersion",
    "ModelcanaryError",
    "NotFound",
    "Outcome",
    "Phase",
    "RegistryError",
    "RequestError",
    "RolloutSpec",
    "RolloutState",
    "RolloutTelemetry",
    "Route",
    "SpecError",
    "StoreError",
    "UnknownEndpoint",
    "UnknownPrediction",
    "Variant",
    "VariantTelemetry",
    "Verdict",
    "__version__",
    "analyse",
    "apply_command",
    "decide",
    "load_spec",
]
