"""Where a deployment keeps its state: a work folder holding the SQLite store and a local MLflow
registry, unless URLs for either are given."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelcanary.domain.errors import ModelcanaryError

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
        from_env = os.environ.get("MODELCANARY_WORKDIR")
        named_by = "--workdir" if workdir else "MODELCANARY_WORKDIR" if from_env else "the default"
        folder = _folder(Path(workdir or from_env or DEFAULT_WORKDIR), named_by=named_by)
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


def _folder(path: Path, *, named_by: str) -> Path:
    """The work folder, made if it is not there yet; one that cannot be (a file is in its way, or
    its parent is a file or a read-only system folder) is a known error that says which and why."""
    try:
        folder = path.resolve()
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        raise ModelcanaryError(f"work folder {str(path)!r} ({named_by}) cannot be made: {problem}") from exc
    return folder
