"""What every part of the rollout spec shares: the base model (camelCase keys, unknown keys
refused, frozen, no booleans for numbers), the field types read from text (durations, model refs,
URLs), and the error of a check across fields, at the field at fault."""

from __future__ import annotations

import functools
import re
import types
import typing
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from modelcanary.domain.refs import parse_duration, parse_model_ref


def _model_ref(value: object) -> str:
    parse_model_ref(str(value))
    return str(value)


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
ModelUri = Annotated[str, BeforeValidator(_model_ref)]


def http_url(url: str) -> str:
    """A URL a client can call: http(s), a host, and a port from 1 to 65535 if it names one, and no
    credentials (``user:password@``): urllib never sends them (it reads them as part of the host
    name, and looks that up in DNS), and every error would show them. A webhook proves its origin
    with ``secretEnv`` (an HMAC-SHA256 signature the receiver checks); the Prometheus source sends
    no credentials, so a Prometheus that wants some is reached through a proxy that adds them.

    >>> http_url("http://prometheus:909O")
    Traceback (most recent call last):
    ...
    ValueError: 'http://prometheus:909O' has a bad port: give a number from 1 to 65535, or none
    >>> http_url("http://admin:s3cret@prometheus:9090")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 'http://prometheus:9090' holds credentials (user:password@, not shown here), which are never sent...
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed [IPv6] host
        raise ValueError(f"{without_credentials(url)!r} is not a URL: {exc}") from None
    if "@" in parts.netloc:
        raise ValueError(
            f"{without_credentials(url)!r} holds credentials (user:password@, not shown here), which are never "
            "sent and would be shown in every error: take them out of the URL. A webhook proves its origin with "
            "secretEnv (an HMAC-SHA256 signature); a Prometheus that asks for credentials is reached through a "
            "proxy that adds them"
        )
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    try:
        port = parts.port  # None when none is given
    except ValueError:  # not a number, or past 65535
        port = 0
    if port == 0:
        raise ValueError(f"{url!r} has a bad port: give a number from 1 to 65535, or none")
    return url


# a URL's scheme, then its userinfo: everything in the authority up to its last "@"
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def without_credentials(url: str) -> str:
    """``url`` without its ``user:password@``, to show in a message: a URL saved before specs refused
    credentials in one may still hold some. Read as text, so a URL that does not parse loses them too.

    >>> without_credentials("https://bot:ghp_T0KEN@hooks.example/x?to=a@b")
    'https://hooks.example/x?to=a@b'
    >>> without_credentials("http://u:p@[fe80::1")
    'http://[fe80::1'
    """
    return _USERINFO.sub(r"\1", url)


HttpUrl = Annotated[str, Field(pattern=r"^https?://\S+$"), AfterValidator(http_url)]

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
    if len(name) > ENDPOINT_CHARS or not re.fullmatch(ENDPOINT_PATTERN, name):
        raise ValueError(
            f"endpoint name {name!r} must be letters, digits, '_', '.' and '-', starting with a letter or digit, "
            f"at most {ENDPOINT_CHARS} characters"
        )
    return name


def problem_at(model: str, loc: tuple[int | str, ...], message: str, value: object) -> ValidationError:
    """A cross-field check's error, to raise from a validator, at the field at fault rather than at
    the model that checks it: ``loc`` runs from that model (or field) down, by YAML key, and pydantic
    puts the model's own path in front, so the error names the field's line as its own check would.

    >>> problem_at("Traffic", ("steps", 1, "weight"), "step weights must increase", 5.0).errors()[0]["loc"]
    ('steps', 1, 'weight')
    """
    details = InitErrorDetails(type="value_error", loc=loc, input=value, ctx={"error": message})
    return ValidationError.from_exception_data(model, [details])


def _is_number(annotation: object) -> bool:
    """``int``, ``float``, or either or None (``bool`` is an ``int`` to Python, not to a spec)."""
    if annotation in (int, float):
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
        return bool(kinds) and all(kind in (int, float) for kind in kinds)
    return False


@functools.cache
def _number_keys(model: type[BaseModel]) -> frozenset[str]:
    """The keys (field names and aliases) of ``model``'s number fields, but those that read their
    own input first (a duration refuses a boolean in its own words)."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        if _is_number(info.annotation) and not any(isinstance(item, BeforeValidator) for item in info.metadata):
            keys.update(key for key in (name, info.alias) if key is not None)
    return frozenset(keys)


class SpecModel(BaseModel):
    """Every part of a spec: camelCase keys in YAML, unknown keys refused, frozen once read, and
    numbers finite and not booleans: a spec is saved as JSON, where infinity and NaN become null,
    and a saved spec holding a null where a number belongs would never load again (its rollout
    would hang)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, allow_inf_nan=False
    )

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: object) -> object:
        """pydantic's lax mode reads ``true`` as 1 and ``false`` as 0 in a number field, so
        ``weight: true`` was a 1% step: a boolean where a number belongs is a mistake to name. (A
        model's check, as a field's before-check on every field would break the metrics' ``kind``
        discriminator; the model's other fields go unchecked until this is fixed.)"""
        if not isinstance(data, dict):
            return data
        numbers = _number_keys(cls)
        wrong = [(key, value) for key, value in data.items() if isinstance(value, bool) and key in numbers]
        if wrong:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "number_type", "Input should be a number, not {value}", {"value": str(value).lower()}
                        ),
                        loc=(key,),
                        input=value,
                    )
                    for key, value in wrong
                ],
            )
        return data
