"""Scenarios of the judge benchmark, read from YAML and checked before anything runs.

A file holds ``scenarios:`` (a list) and optionally ``defaults:``, a mapping deep-merged under every
scenario so the file states only what each scenario changes. The knobs are documented at the top of
``bench/judge/scenarios.yaml``; an unknown knob raises, naming the scenario.

>>> scenario = parse_scenario({**EXAMPLE, "name": "aa"}, where="example")
>>> scenario.is_aa, scenario.looks, scenario.weight_at(650.0)
(True, 360, 5.0)
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.judge.distributions import LatencyDist
from modelcanary.domain.metrics import Analysis

DEFAULT_ANALYSIS: dict[str, Any] = {
    "alpha": 0.05,
    "metrics": [
        {"kind": "error_rate", "margin": 0.0, "min_requests": 100},
        {"kind": "latency", "quantile": 0.99, "margin": 0.0, "min_requests": 100},
        {"kind": "quality", "measure": "accuracy", "margin": 0.0, "threshold": 0.5, "min_labels": 100},
    ],
}
_VARIANT = {"error_rate": 0.01, "latency_ms": {"dist": "lognormal", "median": 40, "sigma": 0.5}, "positive_rate": 0.9}
EXAMPLE: dict[str, Any] = {
    "rps": 50,
    "duration_s": 3600,
    "steps": [1, 5, 25, 50],
    "step_s": 600,
    "baseline": _VARIANT,
    "candidate": _VARIANT,
    "label_delay_s": {"dist": "exponential", "mean": 300},
    "judge_every_s": 10,
}
_KNOBS = {
    "name", "rps", "duration_s", "steps", "step_s", "baseline", "candidate", "noise",
    "diurnal_amplitude", "label_delay_s", "judge_every_s", "analysis", "shadow",
}  # fmt: skip
_LANE_KNOBS = {"sample", "agreement"}


@dataclass(frozen=True)
class VariantModel:
    """One variant's true behaviour: error probability, latency law, and P(a prediction is right)."""

    error_rate: float
    latency: LatencyDist
    positive_rate: float


@dataclass(frozen=True)
class Noise:
    """Per-minute AR(1) log-factors, each with stationary standard deviation as given (see scenarios.yaml)."""

    ar1_rho: float = 0.0
    minute_sd: float = 0.0
    independent_sd: float = 0.0


@dataclass(frozen=True)
class ShadowLane:
    """A shadow lane: the share of the baseline's served requests copied to the candidate, and the
    phi coefficient between the two models being right on the same row (see scenarios.yaml)."""

    sample: float
    agreement: float = 0.5

    def joint(self, baseline: float, candidate: float) -> tuple[tuple[float, float, float, float], bool]:
        """P(both right, only the baseline right, only the candidate right, both wrong) for the two
        models' probabilities of being right, at this lane's phi; and whether P(both right) had to be
        clipped into its feasible range [max(0, p_b + p_c - 1), min(p_b, p_c)].

        >>> probs, clipped = ShadowLane(sample=1.0, agreement=0.5).joint(0.9, 0.9)
        >>> [round(p, 3) for p in probs], clipped
        ([0.855, 0.045, 0.045, 0.055], False)
        >>> probs, clipped = ShadowLane(sample=1.0, agreement=0.9).joint(0.9, 0.5)
        >>> probs[0], clipped  # 0.45 + 0.9 x 0.15 = 0.585 > P(candidate right)
        (0.5, True)
        """
        p_b, p_c = baseline, candidate
        both = p_b * p_c + self.agreement * math.sqrt(p_b * (1 - p_b) * p_c * (1 - p_c))
        feasible = min(max(both, max(0.0, p_b + p_c - 1)), min(p_b, p_c))
        return (feasible, p_b - feasible, p_c - feasible, 1 - p_b - p_c + feasible), feasible != both


@dataclass(frozen=True)
class Scenario:
    name: str
    rps: float
    duration_s: int
    steps: tuple[float, ...]
    step_s: int
    baseline: VariantModel
    candidate: VariantModel
    noise: Noise
    diurnal_amplitude: float
    label_delay_mean_s: float
    judge_every_s: int
    analysis: dict[str, Any]  # validated by modelcanary's Analysis model; plain data so it pickles anywhere
    shadow: ShadowLane | None = None  # None: no shadow lane

    @property
    def is_aa(self) -> bool:
        """A/A: the candidate behaves exactly as the baseline, so any rollback is a false one."""
        return self.candidate == self.baseline

    @property
    def looks(self) -> int:
        return self.duration_s // self.judge_every_s

    def weight_at(self, t: float) -> float:
        """The candidate's weight (percent) at ``t`` seconds: the steps in turn, then the last one."""
        return self.steps[min(int(t // self.step_s), len(self.steps) - 1)]

    def analysis_model(self) -> Analysis:
        return Analysis.model_validate(self.analysis)


def load_scenarios(path: Path) -> list[Scenario]:
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict) or not isinstance(document.get("scenarios"), list):
        raise ValueError(f"{path}: a scenario file is a mapping with a list under 'scenarios'")
    defaults = document.get("defaults") or {}
    scenarios = [
        parse_scenario(merge(defaults, raw), where=f"{path}: scenario {i + 1}")
        for i, raw in enumerate(document["scenarios"])
    ]
    names = [s.name for s in scenarios]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{path}: scenario names must be unique; repeated: {', '.join(repeated)}")
    return scenarios


def merge(base: Any, override: Any) -> Any:
    """``override`` deep-merged onto ``base``: mappings merge key by key, except that a mapping naming
    its ``dist`` is a whole distribution and replaces; anything else (lists too) replaces.

    >>> merge({"a": {"dist": "lognormal", "median": 40, "sigma": 0.5}}, {"a": {"median": 42}})
    {'a': {'dist': 'lognormal', 'median': 42, 'sigma': 0.5}}
    >>> merge({"a": {"dist": "lognormal", "median": 40, "sigma": 0.5}}, {"a": {"dist": "gamma", "shape": 2}})
    {'a': {'dist': 'gamma', 'shape': 2}}
    """
    if isinstance(base, dict) and isinstance(override, dict) and "dist" not in override:
        merged = copy.deepcopy(base)
        for key, value in override.items():
            merged[key] = merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


def parse_scenario(raw: Any, *, where: str) -> Scenario:
    if not isinstance(raw, dict) or "name" not in raw:
        raise ValueError(f"{where}: a scenario is a mapping with a name")
    where = f"{where} ({raw['name']})"
    unknown = sorted(set(raw) - _KNOBS)
    if unknown:
        raise ValueError(f"{where}: unknown knobs {unknown}; known: {sorted(_KNOBS)}")
    noise = raw.get("noise") or {}
    delay = raw.get("label_delay_s") or {"dist": "exponential", "mean": 0}
    if delay.get("dist") != "exponential" or set(delay) - {"dist", "mean"}:
        raise ValueError(f"{where}: label_delay_s is {{dist: exponential, mean: SECONDS}}")
    try:
        scenario = Scenario(
            name=str(raw["name"]),
            rps=float(raw["rps"]),
            duration_s=int(raw["duration_s"]),
            steps=tuple(float(w) for w in raw["steps"]),
            step_s=int(raw["step_s"]),
            baseline=_variant(raw["baseline"], where=f"{where} baseline"),
            candidate=_variant(raw["candidate"], where=f"{where} candidate"),
            noise=Noise(**{key: float(value) for key, value in noise.items()}),
            diurnal_amplitude=float(raw.get("diurnal_amplitude", 0.0)),
            label_delay_mean_s=float(delay.get("mean", 0.0)),
            judge_every_s=int(raw["judge_every_s"]),
            analysis=merge(DEFAULT_ANALYSIS, raw.get("analysis") or {}),
            shadow=_lane(raw.get("shadow"), where=where),
        )
    except KeyError as exc:
        raise ValueError(f"{where}: missing knob {exc.args[0]!r}") from None
    except TypeError as exc:  # an unknown noise key
        raise ValueError(f"{where}: {exc}") from None
    _check(scenario, where)
    return scenario


def _variant(raw: Any, *, where: str) -> VariantModel:
    if not isinstance(raw, dict) or set(raw) != {"error_rate", "latency_ms", "positive_rate"}:
        raise ValueError(f"{where}: a variant has exactly error_rate, latency_ms and positive_rate")
    model = VariantModel(
        error_rate=float(raw["error_rate"]),
        latency=LatencyDist.parse(raw["latency_ms"], where=where),
        positive_rate=float(raw["positive_rate"]),
    )
    if not (0 <= model.error_rate < 1 and 0 < model.positive_rate < 1):
        raise ValueError(f"{where}: error_rate must be in [0, 1) and positive_rate in (0, 1)")
    return model


def _lane(raw: Any, *, where: str) -> ShadowLane | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or "sample" not in raw or set(raw) - _LANE_KNOBS:
        raise ValueError(f"{where}: shadow is {{sample: SHARE, agreement: PHI}} (agreement optional, default 0.5)")
    try:
        lane = ShadowLane(**{key: float(value) for key, value in raw.items()})
    except (TypeError, ValueError):
        raise ValueError(f"{where}: shadow.sample and shadow.agreement are numbers") from None
    if not (0 < lane.sample <= 1 and 0 <= lane.agreement < 1):
        raise ValueError(f"{where}: shadow.sample must be in (0, 1] and shadow.agreement in [0, 1)")
    return lane


def _check(s: Scenario, where: str) -> None:
    problems = []
    if s.rps <= 0 or s.duration_s <= 0 or s.step_s <= 0 or s.judge_every_s <= 0:
        problems.append("rps, duration_s, step_s and judge_every_s must be positive")
    elif s.duration_s % s.judge_every_s:
        problems.append("duration_s must be a multiple of judge_every_s")
    if not s.steps or any(not 0 < w <= 100 for w in s.steps):
        problems.append("steps are candidate weights in (0, 100]")
    if not 0 <= s.diurnal_amplitude < 1:
        problems.append("diurnal_amplitude must be in [0, 1)")
    if not -1 < s.noise.ar1_rho < 1 or min(s.noise.minute_sd, s.noise.independent_sd) < 0:
        problems.append("noise.ar1_rho must be in (-1, 1) and the sds non-negative")
    if s.label_delay_mean_s < 0:
        problems.append("label_delay_s.mean must be non-negative")
    if problems:
        raise ValueError(f"{where}: {'; '.join(problems)}")
    if s.shadow is not None:  # phi < 1 never needs clipping for equal models, so the oracle's null never does
        probs, clipped = s.shadow.joint(s.baseline.positive_rate, s.candidate.positive_rate)
        if clipped:
            warnings.warn(
                f"{where}: shadow.agreement {s.shadow.agreement} puts P(both right) outside its feasible "
                f"range for these positive rates; clipped to {probs[0]:.6g}",
                stacklevel=3,
            )
    try:
        s.analysis_model()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"{where}: analysis: {exc}") from None
