"""What every part of the rollout spec shares: the base model (camelCase keys, unknown keys
refused, frozen) and the field types read from text (durations, model refs, URLs)."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modelcanary.domain.refs import parse_duration, parse_model_ref


def _model_ref(value: object) -> str:
    parse_model_ref(str(value))
    return str(value)


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
ModelUri = Annotated[str, BeforeValidator(_model_ref)]


def _http_url(url: str) -> str:
    """A URL a client can call: http(s), a host, and a port from 1 to 65535 if it names one.

    >>> _http_url("http://prometheus:909O")
    Traceback (most recent call last):
    ...
    ValueError: 'http://prometheus:909O' has a bad port: give a number from 1 to 65535, or none
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed [IPv6] host
        raise ValueError(f"{url!r} is not a URL: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    try:
        port = parts.port  # None when none is given
    except ValueError:  # not a number, or past 65535
        port = 0
    if port == 0:
        raise ValueError(f"{url!r} has a bad port: give a number from 1 to 65535, or none")
    return url


HttpUrl = Annotated[str, Field(pattern=r"^https?://\S+$"), AfterValidator(_http_url)]

# An endpoint's name: one path segment of its prediction routes (/v2/models/NAME/infer), within the
# store's column (200), whether a spec or ``gateway --endpoint`` names it
ENDPOINT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ENDPOINT_CHARS = 200
EndpointName = Annotated[str, Field(pattern=ENDPOINT_PATTERN, max_length=ENDPOINT_CHARS)]


def check_endpoint_name(name: str) -> str:
    """``name`` if it is one an endpoint may have, else a ValueError saying what it may be.

    >>> check_endpoint_name("fraud/v2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: endpoint name 'fraud/v2' must be letters, digits, '_', '.' and '-', starting with a letter ...
    """
    if len(name) > ENDPOINT_CHARS or not re.match(ENDPOINT_PATTERN, name):
        raise ValueError(
            f"endpoint name {name!r} must be letters, digits, '_', '.' and '-', starting with a letter or digit, "
            f"at most {ENDPOINT_CHARS} characters"
        )
    return name


class SpecModel(BaseModel):
    """Every part of a spec: camelCase keys in YAML, unknown keys refused, frozen once read, and
    numbers finite: a spec is saved as JSON, where infinity and NaN become null, and a saved spec
    holding a null where a number belongs would never load again (its rollout would hang)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, allow_inf_nan=False
    )
