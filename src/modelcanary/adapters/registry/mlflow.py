"""The MLflow model registry: resolve aliases to versions, move aliases, tag versions, and read a
version's lineage and metadata (its run's metrics and tags, git commit, datasets, signature).

Each registry reads through its own client, on its own URI: two registries in one process (a
controller's and a test's) never read each other's versions. Its calls fail fast, since the
controller's outbox retries an action that failed: each call (``resolve``, ``set_alias``,
``set_tag``, ``describe``) has one wall-clock deadline however the registry answers, and MLflow
makes one attempt per request (see ``HTTP_DEFAULTS``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from modelcanary.domain.errors import MissingVersion, RegistryError
from modelcanary.domain.refs import parse_model_uri
from modelcanary.domain.state import ModelInfo, ModelVersion

GIT_COMMIT_TAG = "mlflow.source.git.commit"
DATA_AS_OF_TAG = "data.as_of"  # when the training data ends: ISO-8601, epoch seconds or milliseconds
EPOCH_MILLIS_ABOVE = 1e11  # an epoch number above this is milliseconds (see _epoch)

# MLflow's own defaults retry a failed request 7 times with a doubling backoff and wait 120 s for
# each answer: one alias move took ~4 minutes while the registry was down, and the control loop did
# nothing else meanwhile. The controller's outbox tries a failed action again on a later tick, with
# a backoff, and an operator a refused start, so one attempt is enough. MLflow reads these per
# request from the environment, so they are set for the whole process, and only where unset: a
# value the user exported wins. The timeout bounds each socket read, not a request (a registry
# sending a byte every 4 s held one for 48 s): the call's deadline (``DEADLINE_S``) bounds that.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",  # seconds, per connect or read
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
DEADLINE_S = 10.0  # per registry call, however many requests it makes (describe makes four)
# A call past its deadline is abandoned, not stopped (Python cannot stop a thread): its thread ends
# when MLflow's read timeout does, or never, while a registry trickles bytes. So a registry runs at
# most this many reads at once, abandoned ones included; a read that finds every slot taken waits
# for one within its deadline. Writes go one at a time, so an alias move never overtakes an earlier
# one still in flight (a rollback's move overtaken by the promotion it undoes).
MAX_READS = 4

if TYPE_CHECKING:
    from mlflow import MlflowClient

T = TypeVar("T")


class MlflowRegistry:
    """Implements Registry on MLflow's client. ``deadline_s`` bounds each call in wall-clock time;
    a call past it raises ``RegistryError`` naming the call and the deadline."""

    def __init__(self, tracking_uri: str, *, deadline_s: float = DEADLINE_S) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        try:
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        except MlflowException as exc:  # an unknown scheme, a path MLflow refuses as a store
            raise RegistryError(f"cannot open the model registry {tracking_uri!r}: {exc.message.strip()}") from exc
        # MLflow's global URIs are left as they are: they belong to the process (a pipeline's own
        # runs may log elsewhere), and every read here goes through this registry's client.
        self.tracking_uri = tracking_uri
        self.client: MlflowClient = client
        self.deadline_s = deadline_s
        self._reads = threading.BoundedSemaphore(MAX_READS)
        self._writes = threading.BoundedSemaphore(1)

    def resolve(self, uri: str) -> ModelVersion:
        try:
            name, version, alias = parse_model_uri(uri)
        except ValueError as exc:
            raise RegistryError(str(exc)) from exc
        return self._call(f"resolving {uri}", self._reads, lambda: self._resolve(uri, name, version, alias))

    def _resolve(self, uri: str, name: str, version: str | None, alias: str | None) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            found = (
                self.client.get_model_version_by_alias(name, alias)
                if alias is not None
                else self.client.get_model_version(name, str(version))
            )
        except MlflowException as exc:
            raise _refusal(exc)(f"{uri}: {exc.message}") from exc
        return ModelVersion(name=found.name, version=str(found.version), run_id=found.run_id, source=found.source)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._write(
            f"setting alias {name}@{alias} -> {version}", self.client.set_registered_model_alias, name, alias, version
        )

    def set_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._write(f"tagging {name}/{version}", self.client.set_model_version_tag, name, version, key, value)

    def describe(self, version: ModelVersion) -> ModelInfo:
        """Read once when a rollout starts; a version without a run (registered from a path) has
        only its version tags and signature. Only the run's finite metrics are kept: a NaN or an
        infinite one (a diverged training) cannot be saved as JSON, and a rollout state holding one
        could not be read back; a policy finds it missing, as if never logged."""
        return self._call(f"describing {version.uri}", self._reads, lambda: self._describe(version))

    def _call(self, what: str, slots: threading.BoundedSemaphore, work: Callable[[], T]) -> T:
        """``work()`` on a thread of its own, waited for until the deadline (a slot's wait
        included); past it, the thread is abandoned and keeps its slot until it ends."""
        deadline = time.monotonic() + self.deadline_s
        if not slots.acquire(timeout=self.deadline_s):
            busy = "an earlier write to the registry is" if slots is self._writes else f"{MAX_READS} earlier reads are"
            raise RegistryError(f"{what}: not sent, {busy} still unanswered after {self.deadline_s:g} s")
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(work())
            except BaseException as exc:  # the caller's to raise, whatever it is
                future.set_exception(exc)
            finally:
                slots.release()

        try:
            threading.Thread(target=run, name=f"modelcanary-registry: {what}", daemon=True).start()
        except RuntimeError as exc:  # no thread to be had
            slots.release()
            raise RegistryError(f"{what}: {exc}") from exc
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise RegistryError(f"{what}: the registry did not answer within {self.deadline_s:g} s") from None

    def _write(self, what: str, method: Callable[..., object], *args: str) -> None:
        """One write through the client, within the deadline; MLflow's error names ``what``."""
        from mlflow.exceptions import MlflowException

        def work() -> None:
            try:
                method(*args)
            except MlflowException as exc:
                raise _refusal(exc)(f"{what}: {exc.message}") from exc

        self._call(what, self._writes, work)

    def _describe(self, version: ModelVersion) -> ModelInfo:
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
        # the run's start stands in only for a tag that is not there: one that cannot be read
        # ("2020/01/01") is no date, where the start made any data look fresh (found by review)
        data_as_of = _epoch(tags[DATA_AS_OF_TAG]) if DATA_AS_OF_TAG in tags else started
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
            data_as_of=data_as_of,
        )

    def _signature(self, version: ModelVersion) -> dict[str, Any] | None:
        """The version's signature from its MLmodel file (``version_files``)."""
        from mlflow.exceptions import MlflowException
        from mlflow.models import Model

        try:
            with tempfile.TemporaryDirectory(prefix="modelcanary-mlmodel-") as folder:
                path = version_files(self.tracking_uri, version, file="MLmodel", dst=folder)
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


def version_files(uri: str, version: ModelVersion, *, file: str = "", dst: str | None = None) -> str:
    """Where the files (or the one ``file``) of a version of the registry at ``uri`` are on this
    machine: downloaded to ``dst`` (a new temporary folder by default) from a remote artifact
    store, a local store's own path. ``pyfunc.load_model("models:/...")`` and
    ``mlflow.models.get_model_info`` would find the version through MLflow's global registry URI,
    which this adapter neither reads nor sets."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    location = MlflowClient(uri, uri).get_model_version_download_uri(version.name, version.version)
    location = f"{location.rstrip('/')}/{file}" if file else location
    return str(download_artifacts(artifact_uri=location, dst_path=dst, tracking_uri=uri, registry_uri=uri))


def _epoch(value: str | None) -> float | None:
    """Epoch seconds from a tag holding an epoch number or an ISO-8601 date or time (UTC if no
    zone); None for anything else, ``nan`` and ``inf`` too (a date no policy could compare).

    A number above ``EPOCH_MILLIS_ABOVE`` (1e11) is read as epoch milliseconds, MLflow's own unit
    (a run's ``start_time``, ``int(time.time() * 1000)``): as seconds it would be past the year
    5000, and as milliseconds any date since March 1973 is above it, so no real date is ambiguous.
    (Read as seconds, 1700000000000 was a date far in the future, and data-freshness passed it as
    fresh.)

    >>> _epoch("1700000000"), _epoch("1700000000000"), _epoch("2024-01-02"), _epoch("nonsense"), _epoch("nan")
    (1700000000.0, 1700000000.0, 1704153600.0, None, None)
    """
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if abs(seconds) > EPOCH_MILLIS_ABOVE:
            seconds /= 1000.0
        return seconds if math.isfinite(seconds) else None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _refusal(exc: Any) -> type[RegistryError]:
    """The error for an ``MlflowException``: ``MissingVersion`` when the version does not exist."""
    return MissingVersion if exc.error_code == "RESOURCE_DOES_NOT_EXIST" else RegistryError
