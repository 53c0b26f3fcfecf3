"""The MLflow model registry: resolve aliases to versions, move aliases, tag versions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelcanary.domain.errors import RegistryError
from modelcanary.domain.spec import parse_model_uri
from modelcanary.domain.state import ModelVersion

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
