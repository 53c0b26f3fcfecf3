"""What a model ref and a duration in a spec mean: ``models:/NAME@ALIAS``, ``v2+http://...``,
``ray://APP/DEPLOYMENT``; ``30s``, ``5m``, ``250ms``. Plain functions, shared by the spec's
validation, the registry and the backends."""

from __future__ import annotations

import math
import re

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
    >>> parse_duration(float("inf"))
    Traceback (most recent call last):
    ...
    ValueError: inf is too long a duration: give a finite one, e.g. 30s, 5m or 1h
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30s, 5m, 1h")
    if isinstance(value, int | float):
        seconds = _float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 1h or 250ms")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    # a spec is saved as JSON, where infinity and NaN become null: such a spec would never load again
    if math.isnan(seconds):
        raise ValueError(f"{_shown(value)} is not a number of seconds; write e.g. 30s, 5m, 1h or 250ms")
    if math.isinf(seconds):
        raise ValueError(f"{_shown(value)} is too long a duration: give a finite one, e.g. 30s, 5m or 1h")
    return seconds


def _float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int of hundreds of digits
        return math.inf


def _shown(value: object) -> str:
    """A value as an error quotes it, one of hundreds of digits cut short (``repr`` of an int past
    4300 digits even raises)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"a number of {round(value.bit_length() * math.log10(2))} digits"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...' ({len(text) - 2} characters)"


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
