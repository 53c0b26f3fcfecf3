"""Where a deployment keeps its state: a work folder holding the SQLite store and a local MLflow
registry, unless URLs for either are given."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelcanary.adapters.registry.mlflow import MlflowRegistry
    from modelcanary.adapters.store.sql import SqlStore

DEFAULT_WORKDIR = ".modelcanary"


@dataclass(frozen=True, kw_only=True)
class Workspace:
    workdir: Path
    store_url: str
    registry_uri: str

    @classmethod
    def at(
        cls, workdir: str | os.PathLike[str] | None, *, store: str | None = None, registry: str | None = None
    ) -> Workspace:
        folder = Path(workdir or os.environ.get("MODELCANARY_WORKDIR") or DEFAULT_WORKDIR).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return cls(
            workdir=folder,
            store_url=store or os.environ.get("MODELCANARY_STORE") or f"sqlite:///{folder / 'modelcanary.db'}",
            registry_uri=registry or os.environ.get("MODELCANARY_REGISTRY") or f"sqlite:///{folder / 'mlflow.db'}",
        )

    @property
    def artifacts(self) -> Path:
        return self.workdir / "mlartifacts"

    def store(self) -> SqlStore:
        from modelcanary.adapters.store.sql import SqlStore

        return SqlStore(self.store_url)

    def registry(self) -> MlflowRegistry:
        from modelcanary.adapters.registry.mlflow import MlflowRegistry

        return MlflowRegistry(self.registry_uri)
