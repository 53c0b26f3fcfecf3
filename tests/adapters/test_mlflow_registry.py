"""The MLflow registry adapter against a real registry in a temp dir."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from modelcanary.adapters.registry import mlflow as mlflow_adapter
from modelcanary.adapters.registry.mlflow import DATA_AS_OF_TAG, HTTP_DEFAULTS, MlflowRegistry
from modelcanary.domain.errors import MissingVersion, RegistryError
from modelcanary.domain.state import ModelInfo, ModelVersion


def test_resolve_an_alias_and_a_version(registry: MlflowRegistry) -> None:
    champion = registry.resolve("models:/fraud@champion")
    challenger = registry.resolve("models:/fraud@challenger")
    assert (champion.name, champion.version) == ("fraud", "1")
    assert (challenger.name, challenger.version) == ("fraud", "2")
    assert registry.resolve("models:/fraud/1") == champion
    for version in (champion, challenger):
        assert version.run_id
        assert version.source
    assert champion.run_id != challenger.run_id
    assert champion.uri == "models:/fraud/1"


@pytest.mark.parametrize(
    "uri",
    ["models:/nosuchmodel@champion", "models:/fraud@nosuchalias", "models:/fraud/99", "models:/nosuchmodel/1"],
)
def test_unknown_model_alias_or_version_is_a_registry_error_naming_the_uri(registry: MlflowRegistry, uri: str) -> None:
    with pytest.raises(RegistryError) as caught:
        registry.resolve(uri)
    assert uri in str(caught.value)
    # a version (or model) the registry does not hold is an answer (the controller gives up on it),
    # not an outage; MLflow answers an unknown alias of a known model otherwise
    assert isinstance(caught.value, MissingVersion) == (uri != "models:/fraud@nosuchalias"), type(caught.value)


def test_a_malformed_uri_is_a_registry_error(registry: MlflowRegistry) -> None:
    with pytest.raises(RegistryError, match="runs:/abc/model"):
        registry.resolve("runs:/abc/model")


def test_set_alias_moves_the_alias(registry: MlflowRegistry) -> None:
    alias = f"staging-{uuid.uuid4().hex[:6]}"  # a fresh alias: champion and challenger stay put for other tests
    registry.set_alias("fraud", alias, "1")
    assert registry.resolve(f"models:/fraud@{alias}").version == "1"
    registry.set_alias("fraud", alias, "2")
    registry.set_alias("fraud", alias, "2")  # idempotent
    assert registry.resolve(f"models:/fraud@{alias}").version == "2"
    assert registry.resolve("models:/fraud@champion").version == "1"
    registry.client.delete_registered_model_alias("fraud", alias)


def test_set_alias_on_an_unknown_version_is_a_registry_error(registry: MlflowRegistry) -> None:
    with pytest.raises(MissingVersion, match="fraud@staging"):
        registry.set_alias("fraud", "staging", "99")


def test_set_tag_is_visible_through_mlflow(registry: MlflowRegistry, mlflow_registry: Any) -> None:
    key = f"modelcanary.test.{uuid.uuid4().hex[:6]}"
    registry.set_tag("fraud", "2", key, "rolled back: accuracy failed")
    client = MlflowClient(tracking_uri=mlflow_registry.uri, registry_uri=mlflow_registry.uri)
    assert client.get_model_version("fraud", "2").tags[key] == "rolled back: accuracy failed"
    assert key not in client.get_model_version("fraud", "1").tags


def test_set_tag_on_an_unknown_version_is_a_registry_error(registry: MlflowRegistry) -> None:
    with pytest.raises(MissingVersion, match="fraud/99"):
        registry.set_tag("fraud", "99", "k", "v")


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory: pytest.TempPathFactory) -> MlflowRegistry:
    """A registry of this module's own: the versions its tests add touch no other test's registry."""
    return MlflowRegistry(f"sqlite:///{tmp_path_factory.mktemp('own-mlflow') / 'mlflow.db'}")


def test_describe_keeps_only_finite_metrics_so_the_state_reads_back(
    own_registry: MlflowRegistry, tmp_path: Path
) -> None:
    client = own_registry.client
    run = client.create_run(client.create_experiment("diverged", artifact_location=(tmp_path / "a").as_uri()))
    # (an infinity would test nothing here: MLflow's SQL store saves it as the largest finite float)
    client.log_metric(run.info.run_id, "auc", float("nan"))  # a training that diverged
    client.log_metric(run.info.run_id, "acc", 0.9)
    client.create_registered_model("diverged")
    version = client.create_model_version("diverged", (tmp_path / "model").as_uri(), run_id=run.info.run_id)

    info = own_registry.describe(ModelVersion(name="diverged", version=str(version.version)))

    assert info.metrics == {"acc": 0.9}
    assert ModelInfo.model_validate_json(info.model_dump_json()) == info  # as the store saves and reads it


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            "s3://no-such-bucket/model",
            marks=pytest.mark.skipif(importlib.util.find_spec("boto3") is not None, reason="boto3 is installed"),
        ),
        "https://127.0.0.1:9/model",
    ],
)
def test_a_version_in_a_store_this_process_cannot_read_is_described_without_a_signature(
    own_registry: MlflowRegistry, source: str
) -> None:
    name = f"elsewhere-{uuid.uuid4().hex[:6]}"
    own_registry.client.create_registered_model(name)
    version = own_registry.client.create_model_version(name, source)

    info = own_registry.describe(ModelVersion(name=name, version=str(version.version)))

    assert info.signature is None and info.source == source


def test_a_registry_reads_its_own_versions_whatever_mlflows_global_uris_name(
    gated_registry: Any, own_registry: MlflowRegistry, mlflow_registry: Any
) -> None:
    """And making one leaves those URIs as they were: they belong to the process (a pipeline's
    own runs), and MLflow's fluent API logs wherever they point."""
    import mlflow

    from modelcanary.adapters.backends.inprocess import InProcessBackend

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(own_registry.tracking_uri)
    mlflow.set_registry_uri(own_registry.tracking_uri)
    try:
        first = MlflowRegistry(gated_registry.uri)
        assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (own_registry.tracking_uri,) * 2
        info = first.describe(first.resolve("models:/scorer@good"))
        assert info.signature is not None
        assert [column["name"] for column in info.signature["inputs"]] == ["amount", "age"]
        # the in-process backend, too, loads the versions of the registry it is given
        fraud = MlflowRegistry(mlflow_registry.uri).resolve("models:/fraud@champion")
        model = InProcessBackend(mlflow_registry.uri).load(fraud)
        assert model.columns is not None and tuple(column.name for column in model.columns) == mlflow_registry.features
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


@pytest.mark.parametrize("uri", ["foo://bar", "notauri"])
def test_an_unusable_registry_uri_is_a_registry_error_naming_it(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # with it, MLflow takes a bare path as a store
    with pytest.raises(RegistryError, match=f"cannot open the model registry '{uri}': "):
        MlflowRegistry(uri)


def test_an_unreachable_registry_fails_an_alias_move_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as sock:  # a loopback port nothing listens on: every attempt is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    registry = MlflowRegistry(f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(RegistryError, match="setting alias fraud@champion -> 2"):
        registry.set_alias("fraud", "champion", "2")
    assert time.monotonic() - started < 30  # MLflow's own retries took ~4 minutes


def test_the_request_limits_are_defaults_a_users_setting_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "42")
    MlflowRegistry("http://127.0.0.1:9")
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "42"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]


def fresh_http_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """This module's registries get the adapter's request limits, whatever an earlier one left set."""
    for name in HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)


@contextlib.contextmanager
def trickling_registry() -> Iterator[str]:
    """The URL of a loopback server that reads each request, then sends its answer a byte every
    0.25 s (each well within MLflow's 5 s read timeout) until the block ends."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def trickle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in itertools.cycle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 64):
                if stop.wait(0.25):
                    return
                conn.sendall(bytes([byte]))

    def serve() -> None:
        with contextlib.suppress(OSError):  # the listener closed
            while True:
                threading.Thread(target=trickle, args=(listener.accept()[0],), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def test_a_registry_that_trickles_its_answers_fails_each_call_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_http_defaults(monkeypatch)
    with trickling_registry() as url:
        registry = MlflowRegistry(url, deadline_s=1.0)
        calls: list[tuple[str, Callable[[], object]]] = [
            ("resolving models:/fraud@champion", lambda: registry.resolve("models:/fraud@champion")),
            ("describing models:/fraud/2", lambda: registry.describe(ModelVersion(name="fraud", version="2"))),
            ("setting alias fraud@champion -> 2", lambda: registry.set_alias("fraud", "champion", "2")),
        ]
        for what, call in calls:
            started = time.monotonic()
            with pytest.raises(RegistryError, match=re.escape(f"{what}: the registry did not answer within 1 s")):
                call()
            # MLflow's read timeout never fires: a byte comes every 0.25 s (the audit's took 48 s)
            assert time.monotonic() - started < 3


def registry_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("modelcanary-registry") and t not in before]


def test_abandoned_calls_are_bounded_and_a_write_never_overtakes_an_earlier_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh_http_defaults(monkeypatch)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")  # the abandoned calls outlive the test's calls
    reads = mlflow_adapter.MAX_READS
    before = set(threading.enumerate())
    listener = socket.create_server(("127.0.0.1", 0), backlog=32)  # never accepts: the kernel does, nothing answers
    registry = MlflowRegistry(f"http://127.0.0.1:{listener.getsockname()[1]}", deadline_s=0.3)
    try:
        for _ in range(reads):
            with pytest.raises(RegistryError, match=r"did not answer within 0\.3 s"):
                registry.resolve("models:/fraud@champion")
        busy = f"not sent, {reads} earlier reads are still unanswered after 0.3 s"
        with pytest.raises(RegistryError, match=re.escape(busy)):
            registry.resolve("models:/fraud@champion")
        with pytest.raises(RegistryError, match="setting alias fraud@champion -> 2: the registry did not answer"):
            registry.set_alias("fraud", "champion", "2")
        # the move back must not land before the one still in flight: it is not sent
        with pytest.raises(
            RegistryError, match="setting alias fraud@champion -> 1: not sent, an earlier write to the registry is"
        ):
            registry.set_alias("fraud", "champion", "1")
        assert len(registry_threads(before)) == reads + 1
    finally:
        listener.close()  # resets the waiting connections: the abandoned calls end
    deadline = time.monotonic() + 30
    while registry_threads(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registry_threads(before) == []
    with pytest.raises(RegistryError, match="models:/fraud@champion: API request"):  # sent again, and refused
        registry.resolve("models:/fraud@champion")


@pytest.mark.parametrize("tag", ["1700000000", "1700000000000", "2023-11-14T22:13:20Z"])
def test_a_data_as_of_tag_in_epoch_seconds_milliseconds_or_iso_is_the_same_date(
    own_registry: MlflowRegistry, tmp_path: Path, tag: str
) -> None:
    client = own_registry.client
    name = f"dated-{uuid.uuid4().hex[:6]}"
    run = client.create_run(client.create_experiment(name, artifact_location=(tmp_path / "a").as_uri()))
    client.set_tag(run.info.run_id, DATA_AS_OF_TAG, tag)  # 1700000000000 is MLflow's unit, milliseconds
    client.create_registered_model(name)
    version = client.create_model_version(name, (tmp_path / "model").as_uri(), run_id=run.info.run_id)

    info = own_registry.describe(ModelVersion(name=name, version=str(version.version)))

    assert info.data_as_of == 1_700_000_000.0


@pytest.mark.parametrize("tag", ["2020/01/01", "Jan 1 2020", "nan"])
def test_a_data_as_of_tag_that_cannot_be_read_is_no_date_not_the_runs_start(
    own_registry: MlflowRegistry, tmp_path: Path, tag: str
) -> None:
    """The run's start stood in for it, so six-year-old data passed data-freshness as fresh (found
    by review); the start stands in only where there is no tag."""
    client = own_registry.client
    name = f"misdated-{uuid.uuid4().hex[:6]}"
    run = client.create_run(client.create_experiment(name, artifact_location=(tmp_path / "a").as_uri()))
    client.set_tag(run.info.run_id, DATA_AS_OF_TAG, tag)
    client.create_registered_model(name)
    version = client.create_model_version(name, (tmp_path / "model").as_uri(), run_id=run.info.run_id)

    info = own_registry.describe(ModelVersion(name=name, version=str(version.version)))

    assert info.data_as_of is None and info.run_started_at is not None
