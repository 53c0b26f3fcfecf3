"""The MLflow model registry: resolve aliases to versions, move aliases, tag versions, and read a
version's lineage and metadata (its run's metrics and tags, git commit, datasets, signature)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from modelcanary.domain.errors import RegistryError
from modelcanary.domain.refs import parse_model_uri
from modelcanary.domain.state import ModelInfo, ModelVersion

GIT_COMMIT_TAG = "mlflow.source.git.commit"
DATA_AS_OF_TAG = "data.as_of"  # when the training data ends: ISO-8601 or epoch seconds

if TYPE_CHECKING:
    from mlflow import MlflowClient


class MlflowRegistry:
    def __init__(self, tracking_uri: str) -> None:
        import mlflow
        from mlflow import MlflowClient

        # pyfunc.load_model("models:/...") reads the global registry URI; keep it in step.
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        self.client: MlflowClient = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def resolve(self, uri: str) -> ModelVersion:
        try:
            name, version, alias = parse_model_uri(uri)
        except ValueError as exc:
            raise RegistryError(str(exc)) from exc
        from mlflow.exceptions import MlflowException

        try:
            found = (
                self.client.get_model_version_by_alias(name, alias)
                if alias is not None
                else self.client.get_model_version(name, str(version))
            )
        except MlflowException as exc:
            raise RegistryError(f"{uri}: {exc.message}") from exc
        return ModelVersion(name=found.name, version=str(found.version), run_id=found.run_id, source=found.source)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.set_registered_model_alias(name, alias, version)
        except MlflowException as exc:
            raise RegistryError(f"setting alias {name}@{alias} -> {version}: {exc.message}") from exc

    def set_tag(self, name: str, version: str, key: str, value: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.set_model_version_tag(name, version, key, value)
        except MlflowException as exc:
            raise RegistryError(f"tagging {name}/{version}: {exc.message}") from exc

    def describe(self, version: ModelVersion) -> ModelInfo:
        """Read once when a rollout starts; a version without a run (registered from a path) has
        only its version tags and signature."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version(version.name, version.version)
            run = self.client.get_run(found.run_id) if found.run_id else None
        except MlflowException as exc:
            raise RegistryError(f"describing {version.uri}: {exc.message}") from exc
        tags = {**(run.data.tags if run else {}), **(found.tags or {})}
        started = run.info.start_time / 1000.0 if run and run.info.start_time else None
        datasets = tuple(
            {"name": each.dataset.name, "digest": each.dataset.digest, "source": each.dataset.source}
            for each in (run.inputs.dataset_inputs if run and run.inputs else [])
        )
        data_as_of = _epoch(tags.get(DATA_AS_OF_TAG))
        return ModelInfo(
            run_id=found.run_id,
            source=found.source,
            git_commit=tags.get(GIT_COMMIT_TAG),
            data_tags={key: value for key, value in tags.items() if key.lower().startswith(("data", "dataset"))},
            datasets=datasets,
            metrics=dict(run.data.metrics) if run else {},
            tags=tags,
            signature=self._signature(version),
            run_started_at=started,
            data_as_of=data_as_of if data_as_of is not None else started,
        )

    def _signature(self, version: ModelVersion) -> dict[str, Any] | None:
        from mlflow.exceptions import MlflowException
        from mlflow.models import get_model_info

        try:
            signature = get_model_info(version.uri).signature
        except (MlflowException, OSError):  # no MLmodel file: a version registered without one
            return None
        if signature is None:
            return None
        return {key: json.loads(value) for key, value in signature.to_dict().items() if isinstance(value, str)}


def _epoch(value: str | None) -> float | None:
    """Epoch seconds from a tag holding epoch seconds or an ISO-8601 date or time (UTC if no zone).

    >>> _epoch("1700000000"), _epoch("2024-01-02"), _epoch("nonsense")
    (1700000000.0, 1704153600.0, None)
    """
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
