"""Test doubles for the ports, for the unit tests of the pure layers (and users' own tests)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from modelcanary.domain.errors import MissingVersion, RegistryError
from modelcanary.domain.refs import parse_model_uri
from modelcanary.domain.spec import Source
from modelcanary.domain.state import ModelInfo, ModelVersion
from modelcanary.ports import Column, Measurement


class FakeRegistry:
    """An in-memory registry: ``versions[name]`` lists version numbers, ``aliases[(name, alias)]``.

    >>> registry = FakeRegistry({"fraud": ["1", "2"]}, {("fraud", "champion"): "1"})
    >>> registry.resolve("models:/fraud@champion").version
    '1'
    """

    def __init__(self, versions: dict[str, list[str]], aliases: dict[tuple[str, str], str] | None = None) -> None:
        self.versions = versions
        self.aliases = dict(aliases or {})
        self.tags: dict[tuple[str, str], dict[str, str]] = {}
        self.infos: dict[tuple[str, str], ModelInfo] = {}  # what ``describe`` answers; empty by default

    def resolve(self, uri: str) -> ModelVersion:
        name, version, alias = parse_model_uri(uri)
        if alias is not None:
            version = self.aliases.get((name, alias))
            if version is None:  # as MLflow answers: not a missing version
                raise RegistryError(f"{uri}: no such alias")
        if version is None or version not in self.versions.get(name, []):
            raise MissingVersion(f"{uri}: no such model version")
        return ModelVersion(name=name, version=version)

    def _check(self, name: str, version: str) -> None:
        if version not in self.versions.get(name, []):
            raise MissingVersion(f"models:/{name}/{version}: no such model version")

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._check(name, version)
        self.aliases[(name, alias)] = version

    def set_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._check(name, version)
        self.tags.setdefault((name, version), {})[key] = value

    def describe(self, version: ModelVersion) -> ModelInfo:
        return self.infos.get((version.name, version.version), ModelInfo())


class FunctionModel:
    """A model made of a function from a column dict to one output per row; with ``takes_params``,
    from the column dict and a request's inference parameters (None when it sent none)."""

    def __init__(
        self, fn: Callable[..., list[Any]], columns: tuple[Column, ...] | None = None, *, takes_params: bool = False
    ):
        self.fn = fn
        self.columns = columns
        self.takes_params = takes_params

    def predict(self, columns: dict[str, list[Any]], params: Mapping[str, Any] | None = None) -> list[Any]:
        return self.fn(columns, params) if self.takes_params else self.fn(columns)


class FakeBackend:
    def __init__(self, models: dict[str, FunctionModel]) -> None:
        self.models = models  # keyed by "name/version"

    def load(self, version: ModelVersion) -> FunctionModel:
        try:
            return self.models[f"{version.name}/{version.version}"]
        except KeyError:
            raise RegistryError(f"{version.uri}: no such model") from None


class FakeMetrics:
    """A metric source that answers each read with the next of ``measurements`` (the last one
    repeats), and keeps the reads it was asked for.

    >>> from modelcanary.ports import Measurement
    >>> source = FakeMetrics([Measurement(telemetry=None, error="down")])
    >>> source.measure(None, since=0.0, until=1.0).error, source.reads
    ('down', [(0.0, 1.0)])
    """

    def __init__(self, measurements: list[Measurement]) -> None:
        self.measurements = measurements
        self.reads: list[tuple[float, float]] = []

    def measure(self, source: Source, *, since: float, until: float) -> Measurement:
        self.reads.append((since, until))
        return self.measurements[min(len(self.reads), len(self.measurements)) - 1]
