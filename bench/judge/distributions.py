"""Latency distributions of the scenarios, and their probabilities over modelcanary's latency buckets.

A scale factor ``s`` multiplies every latency (a slower minute), so the bucket probabilities at ``s``
are the CDF read at ``edges / s``. ``median`` is the median of the lognormal and gamma laws; for the
Pareto-tailed mixture it is the median of the lognormal body, and the tail (mass ``tail_p``, Pareto
with shape ``tail_alpha`` from ``tail_scale * median`` up) sits above it.

>>> body = LatencyDist(dist="lognormal", median=40.0, sigma=0.5)
>>> round(body.quantile(0.5), 6), round(float(body.bucket_probs().sum()), 12)
(40.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

from modelcanary.domain.telemetry import LATENCY_EDGES_MS

EDGES = np.asarray(LATENCY_EDGES_MS, dtype=np.float64)
BUCKETS = len(LATENCY_EDGES_MS) + 1
Kind = Literal["lognormal", "gamma", "pareto_mixture"]
_KNOWN = ("lognormal", "gamma", "pareto_mixture")
_NEEDS = {
    "lognormal": ("median", "sigma"),
    "gamma": ("median", "shape"),
    "pareto_mixture": ("median", "sigma", "tail_p", "tail_scale"),
}


@dataclass(frozen=True)
class LatencyDist:
    dist: Kind
    median: float
    sigma: float = 0.0
    shape: float = 0.0
    tail_p: float = 0.0
    tail_scale: float = 1.0
    tail_alpha: float = 2.5

    @classmethod
    def parse(cls, data: Any, *, where: str) -> LatencyDist:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: latency_ms is a mapping with dist and its parameters")
        kind = data.get("dist")
        if kind not in _KNOWN:
            raise ValueError(f"{where}: latency_ms.dist {kind!r} is unknown; known: {', '.join(_KNOWN)}")
        allowed = {"dist", *_NEEDS[kind], *(("tail_alpha",) if kind == "pareto_mixture" else ())}
        extra = sorted(set(data) - allowed)
        missing = [key for key in _NEEDS[kind] if key not in data]
        if extra or missing:
            raise ValueError(f"{where}: latency_ms ({kind}) takes {sorted(allowed)}; extra {extra}, missing {missing}")
        numbers = {key: float(value) for key, value in data.items() if key != "dist"}
        parsed = cls(dist=kind, **numbers)
        positive = [key for key in ("median", "sigma", "shape", "tail_scale", "tail_alpha") if key in numbers]
        if any(numbers[key] <= 0 for key in positive) or not 0 <= parsed.tail_p < 1:
            raise ValueError(f"{where}: latency_ms parameters must be positive and tail_p in [0, 1)")
        return parsed

    def cdf(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        x = np.maximum(np.asarray(x, dtype=np.float64), 1e-300)
        if self.dist == "gamma":
            scale = self.median / float(special.gammaincinv(self.shape, 0.5))
            return np.asarray(special.gammainc(self.shape, x / scale), dtype=np.float64)
        body = special.ndtr((np.log(x) - np.log(self.median)) / self.sigma)
        if self.dist == "lognormal":
            return np.asarray(body, dtype=np.float64)
        start = self.tail_scale * self.median
        tail = np.where(x >= start, 1.0 - (start / np.maximum(x, start)) ** self.tail_alpha, 0.0)
        return np.asarray((1.0 - self.tail_p) * body + self.tail_p * tail, dtype=np.float64)

    def bucket_probs(self, scale: float | NDArray[np.float64] = 1.0) -> NDArray[np.float64]:
        """P(latency in each bucket) with every latency multiplied by ``scale``: shape ``scale.shape + (BUCKETS,)``."""
        scales = np.asarray(scale, dtype=np.float64)[..., None]
        inner = self.cdf(EDGES / scales)
        shape = (*inner.shape[:-1], 1)
        full = np.concatenate([np.zeros(shape), inner, np.ones(shape)], axis=-1)
        return np.maximum(np.diff(full, axis=-1), 0.0)

    def quantile(self, q: float) -> float:
        """The exact ``q``-quantile (root of the CDF), to check a scenario's construction."""
        high = self.median
        while float(self.cdf(np.array([high]))[0]) < q:
            high *= 2.0
        root = optimize.brentq(lambda x: float(self.cdf(np.array([x]))[0]) - q, 1e-9, high, xtol=1e-10, rtol=1e-13)
        return float(root)
