"""Which segment a request is in, and whether that segment may see the candidate; and its sticky
key.

Compiled once per route (a tuple of rules with frozensets of values), so a request pays a header
lookup and a set membership test per rule, and nothing when the route has no segments. An input
field's value is compared, and hashed as a sticky key, in one spelling (``canonical``), as are the
rule values it is compared with: ``0``, ``0.0`` and ``"0.0"`` are the same number, and JSON ``true``
is ``"true"``. Header values are compared as they are.

>>> from modelcanary.domain.traffic import Segment
>>> from modelcanary.domain.state import ModelVersion, Route
>>> route = Route(endpoint="e", baseline=ModelVersion(name="m", version="1"),
...               segments=(Segment(name="eu", header="x-region", values=["eu-west"]),),
...               candidate_segments=("eu",))
>>> segmenter = Segmenter.for_route(route, None)
>>> segmenter.segment({"x-region": "eu-west"}, {}), segmenter.segment({}, {})
('eu', 'other')
>>> segmenter.eligible("eu"), segmenter.eligible("other")
(True, False)
>>> idle = Route(endpoint="e", baseline=ModelVersion(name="m", version="1"),
...              segments=(Segment(name="idle", field="velocity", values=["0.0"]),))
>>> [Segmenter.for_route(idle, None).segment({}, {"velocity": [v]}) for v in (0, 0.0, "0", 0.5)]
['idle', 'idle', 'idle', 'other']
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelcanary.domain.state import Route
from modelcanary.domain.traffic import OTHER_SEGMENT
from modelcanary.ports import Column

# a JSON number: no leading zeros, no "+", no ".5" or "5.", so "007" and "+1" stay text
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_NUMBER_START = frozenset("-0123456789")


def canonical(value: Any) -> str:
    """One spelling of an input field's value, for segment rules and sticky keys: a boolean is
    ``true``/``false``, a whole number (int, or finite float) its integer digits, another float its
    shortest repr, a string that spells a JSON number that number's spelling (so a rule's ``"0.0"``
    matches ``0``); other strings are kept, other values are ``str(value)``.

    >>> [canonical(v) for v in (0, 0.0, -0.0, 42.0, 0.5, 1e20, True, False)]
    ['0', '0', '0', '42', '0.5', '100000000000000000000', 'true', 'false']
    >>> [canonical(v) for v in ("0.0", "1e3", "42", "-0.50", "12345678901234567890", "true", "True")]
    ['0', '1000', '42', '-0.5', '12345678901234567890', 'true', 'True']
    >>> [canonical(v) for v in ("007", "+1", ".5", "1_000", " 1", "nan", "1e999", "eu-west", None)]
    ['007', '+1', '.5', '1_000', ' 1', 'nan', '1e999', 'eu-west', 'None']
    """
    if isinstance(value, str):
        if not value or value[0] not in _NUMBER_START or _JSON_NUMBER.fullmatch(value) is None:
            return value
        if "." not in value and "e" not in value and "E" not in value:
            return str(int(value))  # exact, however long (a float would round past 2**53)
        number = float(value)
        return _float(number) if math.isfinite(number) else value
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    return str(value)


def _float(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    header: str | None
    field: str | None
    values: frozenset[str]


@dataclass(frozen=True, slots=True)
class Segmenter:
    rules: tuple[Rule, ...] = ()
    allowed: frozenset[str] | None = None  # None: every segment may see the candidate
    routing_only: tuple[str, ...] = ()  # input fields read for routing that the model does not take
    sticky_header: str | None = None  # the sticky key's header, lowercased as ASGI gives header names
    sticky_field: str | None = None  # or the input field that holds it

    @property
    def active(self) -> bool:
        return bool(self.rules) or self.allowed is not None

    @classmethod
    def for_route(cls, route: Route, columns: tuple[Column, ...] | None) -> Segmenter:
        rules = tuple(
            Rule(
                segment.name,
                segment.header.lower() if segment.header else None,
                segment.field,
                # a header's values as written; a field's in the spelling its request values get
                frozenset(segment.values) if segment.header else frozenset(map(canonical, segment.values)),
            )
            for segment in route.segments
        )
        fields = [rule.field for rule in rules if rule.field is not None]
        if route.sticky is not None and route.sticky.field is not None:
            fields.append(route.sticky.field)
        taken = {column.name for column in columns or ()}
        allowed = frozenset(route.candidate_segments) if route.candidate_segments is not None else None
        sticky_header = route.sticky.header.lower() if route.sticky is not None and route.sticky.header else None
        sticky_field = route.sticky.field if route.sticky is not None else None
        routing_only = tuple(dict.fromkeys(name for name in fields if name not in taken))
        return cls(rules, allowed, routing_only, sticky_header, sticky_field)

    def sticky_key(self, headers: Mapping[str, str], columns: Mapping[str, list[Any]]) -> str | None:
        """The request's sticky key: its header as sent, or its input field's first row, canonical
        (a user id sent as ``42`` or ``42.0`` is one user); None: no key, a random split.

        >>> Segmenter(sticky_field="user").sticky_key({}, {"user": [42.0]}), Segmenter().sticky_key({}, {})
        ('42', None)
        """
        if self.sticky_header is not None:
            return headers.get(self.sticky_header)
        if self.sticky_field is not None:
            values = columns.get(self.sticky_field)
            return canonical(values[0]) if values else None
        return None

    def segment(self, headers: Mapping[str, str], columns: Mapping[str, list[Any]]) -> str:
        """The first rule the request matches (an input field is read from its first row)."""
        for rule in self.rules:
            if rule.header is not None:
                value = headers.get(rule.header)
            else:
                values = columns.get(rule.field or "")
                value = canonical(values[0]) if values else None
            if value is not None and value in rule.values:
                return rule.name
        return OTHER_SEGMENT

    def eligible(self, segment: str) -> bool:
        return self.allowed is None or segment in self.allowed
