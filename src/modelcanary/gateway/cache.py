"""A bounded LRU cache of one model's predictions, keyed on the input row, entries kept for a TTL.

Lookups and stores run on the event loop thread only (a candidate running in the pool gets just
the rows that missed, and its outputs are stored back on the loop), so the cache needs no lock.

>>> cache = PredictionCache(max_entries=2, ttl_s=60.0)
>>> first = cache.lookup({"a": [1, 2]})
>>> first.missing
[0, 1]
>>> first.fill(["one", "two"])
['one', 'two']
>>> again = cache.lookup({"a": [2, 3]})
>>> again.missing, again.missing_columns({"a": [2, 3]})
([1], {'a': [3]})
>>> again.fill(["three"]), cache.hits, cache.misses
(['two', 'three'], 1, 3)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelcanary.domain.state import ModelVersion
from modelcanary.domain.telemetry import Variant
from modelcanary.domain.traffic import Cache

if TYPE_CHECKING:
    from modelcanary.gateway.metrics import Series

_MISSING: Any = object()


class PredictionCache:
    def __init__(
        self, *, max_entries: int, ttl_s: float, model: str = "", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.model = model  # the model version whose predictions these are
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self.hits = 0  # rows
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, columns: dict[str, list[Any]]) -> Lookup | None:
        """Each row's cached output, and which rows missed; None when a value is not hashable
        (nested lists), and the request goes to the model whole. A row's key holds its values'
        types beside them: 1, 1.0 and True are equal in Python, but a model may answer each its own."""
        names = tuple(sorted(columns))
        rows = len(columns[names[0]]) if names else 0
        keys = [(names, row, tuple(map(type, row))) for row in zip(*(columns[name] for name in names), strict=True)]
        now = self._clock()
        outputs: list[Any] = []
        missing: list[int] = []
        entries = self._entries
        try:
            for row, key in enumerate(keys):
                entry = entries.get(key)
                if entry is not None and entry[0] > now:
                    entries.move_to_end(key)
                    outputs.append(entry[1])
                else:
                    outputs.append(_MISSING)
                    missing.append(row)
        except TypeError:
            return None
        self.hits += rows - len(missing)
        self.misses += len(missing)
        return Lookup(self, keys, outputs, missing)

    def _store(self, key: Hashable, output: Any) -> None:
        self._entries[key] = (self._clock() + self.ttl_s, output)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def cache_for(
    settings: Cache | None, variant: Variant, version: ModelVersion | None, previous: PredictionCache | None
) -> PredictionCache | None:
    """The cache a variant's model gets under a new route: the one it had if the model and the
    settings are the same (a routing change does not empty it), a new one if not, or none."""
    if settings is None or version is None or variant.value not in settings.variants:
        return None
    if previous is not None and (previous.model, previous.max_entries, previous.ttl_s) == (
        version.uri,
        settings.max_entries,
        settings.ttl,
    ):
        return previous
    return PredictionCache(max_entries=settings.max_entries, ttl_s=settings.ttl, model=version.uri)


def counted(lookup: Lookup | None, series: Series) -> tuple[int, int]:
    """A request's (hits, misses) in its variant's prediction cache, counted in /metrics too."""
    if lookup is None:
        return (0, 0)
    hits, misses = lookup.hits, len(lookup.missing)
    series.cache_hits.inc(hits)
    series.cache_misses.inc(misses)
    return (hits, misses)


@dataclass(slots=True)
class Lookup:
    cache: PredictionCache
    keys: Sequence[Hashable]
    outputs: list[Any]
    missing: list[int]  # indexes of the rows the model must predict

    @property
    def hits(self) -> int:
        return len(self.keys) - len(self.missing)

    def missing_columns(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if len(self.missing) == len(self.keys):
            return columns
        return {name: [values[row] for row in self.missing] for name, values in columns.items()}

    def fill(self, predicted: list[Any]) -> list[Any]:
        """Every row's output, the missed ones from ``predicted`` (stored for next time)."""
        if len(predicted) != len(self.missing):
            raise ValueError(f"the model returned {len(predicted)} outputs for {len(self.missing)} rows")
        for row, output in zip(self.missing, predicted, strict=True):
            self.outputs[row] = output
            self.cache._store(self.keys[row], output)
        return self.outputs
