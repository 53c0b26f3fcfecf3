"""Which segment a request is in, and whether that segment may see the candidate; and which
header holds its sticky key.

Compiled once per route (a tuple of rules with frozensets of values), so a request pays a header
lookup and a set membership test per rule, and nothing when the route has no segments.

>>> from modelcanary.domain.spec import Segment
>>> from modelcanary.domain.state import ModelVersion, Route
>>> route = Route(endpoint="e", baseline=ModelVersion(name="m", version="1"),
...               segments=(Segment(name="eu", header="x-region", values=["eu-west"]),),
...               candidate_segments=("eu",))
>>> segmenter = Segmenter.for_route(route, None)
>>> segmenter.segment({"x-region": "eu-west"}, {}), segmenter.segment({}, {})
('eu', 'other')
>>> segmenter.eligible("eu"), segmenter.eligible("other")
(True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelcanary.domain.spec import OTHER_SEGMENT
from modelcanary.domain.state import Route
from modelcanary.ports import Column


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
                frozenset(segment.values),
            )
            for segment in route.segments
        )
        fields = [rule.field for rule in rules if rule.field is not None]
        if route.sticky is not None and route.sticky.field is not None:
            fields.append(route.sticky.field)
        taken = {column.name for column in columns or ()}
        allowed = frozenset(route.candidate_segments) if route.candidate_segments is not None else None
        sticky_header = route.sticky.header.lower() if route.sticky is not None and route.sticky.header else None
        return cls(rules, allowed, tuple(dict.fromkeys(name for name in fields if name not in taken)), sticky_header)

    def segment(self, headers: Mapping[str, str], columns: Mapping[str, list[Any]]) -> str:
        """The first rule the request matches (an input field is read from its first row)."""
        for rule in self.rules:
            if rule.header is not None:
                value = headers.get(rule.header)
            else:
                values = columns.get(rule.field or "")
                value = str(values[0]) if values else None
            if value is not None and value in rule.values:
                return rule.name
        return OTHER_SEGMENT

    def eligible(self, segment: str) -> bool:
        return self.allowed is None or segment in self.allowed
