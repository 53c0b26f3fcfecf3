"""What every part of the rollout spec shares: the base model (camelCase keys, unknown keys
refused, frozen) and the field types read from text (durations, model refs)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modelcanary.domain.refs import parse_duration, parse_model_ref


def _model_ref(value: object) -> str:
    parse_model_ref(str(value))
    return str(value)


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
ModelUri = Annotated[str, BeforeValidator(_model_ref)]


class SpecModel(BaseModel):
    """Every part of a spec: camelCase keys in YAML, unknown keys refused, frozen once read."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)
