"""The MLflow model registry: resolve aliases to versions, move aliases, tag versions, and read a
version's lineage and metadata (its run's metrics and tags, git commit, datasets, signature).

Each registry reads through its own client, on its own URI: two registries in one process (a
controller's and a test's) never read each other's versions. Its requests fail fast, since the
controller's outbox retries an action that failed (see ``HTTP_DEFAULTS``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime
from typing import TYPE_CHECKING, Any

from modelcanary.domain.errors import RegistryError
from modelcanary.domain.refs import parse_model_uri
from modelcanary.domain.state import ModelInfo, ModelVersion

GIT_COMMIT_TAG = "mlflow.source.git.commit"
DATA_AS_OF_TAG = "data.as_of"  # when the training data ends: ISO-8601 or epoch seconds

# MLflow's own defaults retry a failed request 7 times with a doubling backoff and wait 120 s for
# each answer: one alias move took ~4 minutes while the registry was down, and the control loop did
# nothing else meanwhile. The controller's outbox tries a failed action again on a later tick, so
# one attempt should fail fast. MLflow reads these per request from the environment, so they are
# set for the whole process, and only where unset: a value the user exported wins.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",  # seconds, per connect or read
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # sleeps of ~1 s, then ~2 s
}

if TYPE_CHECKING:
    from mlflow import MlflowClient


class MlflowRegistry:
    def __init__(self, tracking_uri: str) -> None:
        import mlflow
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        try:
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        except MlflowException as exc:  # an unknown scheme, a path MLflow refuses as a store
            raise RegistryError(f"cannot open the model registry {tracking_uri!r}: {exc.message.strip()}") from exc
        # Only pyfunc.load_model("models:/...") (the in-process backend) reads the global URIs; this
        # registry's own reads go through its client and never depend on them.
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        self.client: MlflowClient = client

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
        only its version tags and signature. Only the run's finite metrics are kept: a NaN or an
        infinite one (a diverged training) cannot be saved as JSON, and a rollout state holding one
        could not be read back; a policy finds it missing, as if never logged."""
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
            metrics={key: value for key, value in (run.data.metrics if run else {}).items() if math.isfinite(value)},
            tags=tags,
            signature=self._signature(version),
            run_started_at=started,
            data_as_of=data_as_of if data_as_of is not None else started,
        )

    def _signature(self, version: ModelVersion) -> dict[str, Any] | None:
        """The version's signature from its MLmodel file, found through this registry's client
        (``mlflow.models.get_model_info`` would resolve ``models:/`` through the global registry
        URI, which the last registry made in the process set)."""
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException
        from mlflow.models import Model

        try:
            location = self.client.get_model_version_download_uri(version.name, version.version)
            with tempfile.TemporaryDirectory(prefix="modelcanary-mlmodel-") as folder:
                path = download_artifacts(
                    artifact_uri=f"{location.rstrip('/')}/MLmodel",
                    dst_path=folder,
                    tracking_uri=self.tracking_uri,
                    registry_uri=self.tracking_uri,
                )
                signature = Model.load(path).signature
        except (MlflowException, OSError):  # no MLmodel file: a version registered without one
            return None
        except (ImportError, ValueError):
            # The artifact store needs an SDK this process lacks (s3:// without boto3, gs:// without
            # google-cloud-storage) or is a source MLflow cannot download from (an https URL). The
            # signature is lineage for the policies, not needed to serve: a rollout starts without
            # it, and a policy that needs it (signature-match) denies.
            return None
        if signature is None:
            return None
        return {key: json.loads(value) for key, value in signature.to_dict().items() if isinstance(value, str)}


def _epoch(value: str | None) -> float | None:
    """Epoch seconds from a tag holding epoch seconds or an ISO-8601 date or time (UTC if no zone);
    None for anything else, ``nan`` and ``inf`` too (a date no policy could compare).

    >>> _epoch("1700000000"), _epoch("2024-01-02"), _epoch("nonsense"), _epoch("nan")
    (1700000000.0, 1704153600.0, None, None)
    """
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) else None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
