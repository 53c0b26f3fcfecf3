"""Metric sources: where a rollout's telemetry comes from when the gateway does not serve its models.

The factory is one dict from the name a spec uses (``spec.source.NAME``) to the adapter's class;
an unknown name raises with the known ones. Each source is made once per process and handed to
every caller: a source may remember its earlier reads (Prometheus' does, to catch a counter that
reset between two reads).
"""

from __future__ import annotations

from collections.abc import Callable

from modelcanary.adapters.sources import prometheus
from modelcanary.ports import MetricSource

SOURCES: dict[str, Callable[[], MetricSource]] = {prometheus.NAME: prometheus.PrometheusMetrics}
_MADE: dict[str, MetricSource] = {}


def metric_source(name: str) -> MetricSource:
    """
    >>> metric_source("prometheus") is metric_source("prometheus")
    True
    >>> metric_source("graphite")
    Traceback (most recent call last):
    ...
    KeyError: "unknown metric source 'graphite'; known: prometheus"
    """
    try:
        make = SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown metric source {name!r}; known: {', '.join(sorted(SOURCES))}") from None
    if name not in _MADE:
        _MADE[name] = make()
    return _MADE[name]
