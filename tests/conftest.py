"""Shared real parts: a real MLflow registry in a temp dir (built once per session) and a fresh
SQLite store per test. Heavy clients are imported inside the fixtures, so tests that need neither
pay nothing for them."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from modelcanary.adapters.backends.inprocess import PyfuncModel
    from modelcanary.adapters.registry.mlflow import MlflowRegistry
    from modelcanary.adapters.store.sql import SqlStore
    from modelcanary.domain.state import ModelVersion

MODEL = "fraud"
FEATURES = ("amount", "velocity", "age")


@dataclass(frozen=True)
class RealRegistry:
    """A real MLflow registry (SQLite tracking and registry, artifacts in the same temp dir) holding
    ``fraud`` v1 (alias champion) and v2 (alias challenger), both sklearn pipelines scored with
    ``predict_proba`` on the float columns ``FEATURES``."""

    uri: str
    root: Path
    features: tuple[str, ...]
    rows: list[dict[str, float]]  # a few sample rows of valid input, for requests


def _train(rows: int, seed: int) -> tuple[Any, Any]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3.5, 1.0, rows),
            "velocity": rng.poisson(1.5, rows).astype(np.float64),
            "age": rng.exponential(500.0, rows),
        }
    )
    logit = 0.02 * (frame["amount"] - 40) + 0.8 * (frame["velocity"] - 1.5) - 0.002 * (frame["age"] - 500)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return frame, labels


@pytest.fixture(scope="session")
def mlflow_registry(tmp_path_factory: pytest.TempPathFactory) -> RealRegistry:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from modelcanary.adapters.registry.mlflow import MlflowRegistry

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowRegistry(uri).client
    experiment_id = client.create_experiment("modelcanary-tests", artifact_location=(root / "artifacts").as_uri())
    frame, labels = _train(300, seed=3)
    # v2 is strongly regularised, so its scores differ from v1's on the same rows
    models = {
        "1": make_pipeline(StandardScaler(), LogisticRegression()),
        "2": make_pipeline(StandardScaler(), LogisticRegression(C=0.01)),
    }
    with (
        fluent_at(uri),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        for version, model in models.items():
            model.fit(frame, labels)
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"fraud-v{version}"):
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    registered_model_name=MODEL,
                    pyfunc_predict_fn="predict_proba",
                    signature=infer_signature(frame, model.predict_proba(frame)),
                    # naming the requirements skips MLflow's slow import-capturing subprocess
                    pip_requirements=["scikit-learn"],
                )
            assert str(info.registered_model_version) == version
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    sample = frame.head(20)
    return RealRegistry(
        uri=uri,
        root=root,
        features=FEATURES,
        rows=[{key: float(value) for key, value in row.items()} for row in sample.to_dict(orient="records")],
    )


@contextlib.contextmanager
def fluent_at(uri: str) -> Iterator[None]:
    """Points MLflow's fluent API (``start_run``, ``log_model`` with a registered model name), which
    reads the global URIs, at the registry ``uri`` while the fixtures log their models through it;
    then back where they were: the URIs are the process's, and no later test may find them moved."""
    import mlflow

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


@pytest.fixture
def registry(mlflow_registry: RealRegistry) -> MlflowRegistry:
    """An ``MlflowRegistry`` on the session's registry."""
    from modelcanary.adapters.registry.mlflow import MlflowRegistry

    return MlflowRegistry(mlflow_registry.uri)


class CachingBackend:
    """``InProcessBackend`` with loaded versions kept for the session: registry versions are
    immutable, and loading each once keeps the gateway tests fast."""

    def __init__(self, uri: str) -> None:
        from modelcanary.adapters.backends.inprocess import InProcessBackend

        self.uri = uri
        self.inner = InProcessBackend(uri)
        self.loaded: dict[str, PyfuncModel] = {}

    def load(self, version: ModelVersion) -> PyfuncModel:
        model = self.loaded.get(version.uri)
        if model is None:
            model = self.loaded[version.uri] = self.inner.load(version)
        return model


@pytest.fixture(scope="session")
def pyfunc_backend(mlflow_registry: RealRegistry) -> CachingBackend:
    return CachingBackend(mlflow_registry.uri)


POSTGRES = os.environ.get("MODELCANARY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_or_skip() -> None:
    import sqlalchemy as sa

    from modelcanary.adapters.store.schema import normalise_url

    engine = sa.create_engine(normalise_url(POSTGRES), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        if os.environ.get("MODELCANARY_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here but {POSTGRES} does not answer: {exc.orig}")
        pytest.skip(f"no PostgreSQL at {POSTGRES} (set MODELCANARY_TEST_POSTGRES): {exc.orig}")
    finally:
        engine.dispose()


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL for an empty store on the engine named by the test's parameter (``sqlite`` or
    ``postgresql``; parametrise with ``indirect=True``). PostgreSQL gets a schema of its own per
    test, on the server named by ``MODELCANARY_TEST_POSTGRES`` (default
    ``postgresql://postgres@127.0.0.1:5432/test``), dropped afterwards. Without a reachable server
    those cases skip and say why, unless ``MODELCANARY_REQUIRE_POSTGRES=1`` (set by ``.ci/run``):
    then they fail, so CI cannot pass by skipping."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'modelcanary.db'}"
        return
    import sqlalchemy as sa

    from modelcanary.adapters.store.schema import normalise_url

    _postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalise_url(POSTGRES))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in POSTGRES else "?"
    try:
        yield f"{POSTGRES}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def open_store(store_url: str) -> Iterator[Callable[[], SqlStore]]:
    """Opens stores on the test's URL (a second one is another process's view); closes them all."""
    from modelcanary.adapters.store.sql import SqlStore

    opened: list[SqlStore] = []

    def opener() -> SqlStore:
        opened.append(SqlStore(store_url))
        return opened[-1]

    yield opener
    for each in opened:
        each.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    """A fresh SQLite store in a file of its own (WAL mode, as in production)."""
    from modelcanary.adapters.store.sql import SqlStore

    sql_store = SqlStore(f"sqlite:///{tmp_path / 'modelcanary.db'}")
    try:
        yield sql_store
    finally:
        sql_store.close()


@dataclass
class GatewayProcesses:
    """Starts ``modelcanary gateway`` processes on loopback; each is stopped when the test ends."""

    tmp_path: Path
    registry_uri: str
    processes: list[Any]

    def start(self, *args: str, ready_s: float = 90.0) -> str:
        """Start one with ``args`` (e.g. ``--endpoint fraud=models:/fraud/1``); its base URL once ready."""
        import socket
        import subprocess
        import sys
        import time

        import httpx

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        workdir = self.tmp_path / f"gateway-{port}"
        workdir.mkdir()
        command = [sys.executable, "-m", "modelcanary", "gateway", "--registry", self.registry_uri, "--port", str(port)]
        process = subprocess.Popen(
            [*command, *args],
            stderr=(workdir / "stderr.log").open("w"),
            env={**os.environ, "PYTHONUNBUFFERED": "1", "MODELCANARY_WORKDIR": str(workdir)},
        )
        self.processes.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"gateway exited {process.returncode}: {(workdir / 'stderr.log').read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    return base
            time.sleep(0.05)
        raise AssertionError(f"gateway on {base} not ready after {ready_s} s")

    def stop(self, base: str) -> int:
        """SIGTERM the gateway serving ``base`` (as a container runtime stops one) and wait for it
        to exit; its exit code (uvicorn ends a graceful shutdown by raising the signal again: -15)."""
        import signal

        port = int(base.rpartition(":")[2])
        (process,) = [each for each in self.processes if f"--port {port} " in " ".join([*each.args, ""])]
        process.send_signal(signal.SIGTERM)
        self.processes.remove(process)
        return int(process.wait(30))

    def stop_all(self) -> None:
        import signal
        import subprocess

        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


@pytest.fixture(scope="module")
def gateway_processes(tmp_path_factory: pytest.TempPathFactory, mlflow_registry: RealRegistry) -> Iterator[Any]:
    """``gateway_processes.start(*args)``: real ``modelcanary gateway`` processes on the session's registry."""
    started = GatewayProcesses(tmp_path_factory.mktemp("gateways"), mlflow_registry.uri, [])
    try:
        yield started
    finally:
        started.stop_all()


# -- a registry for policy gates and lineage -------------------------------------------------------


@dataclass(frozen=True)
class GatedRegistry:
    """A real MLflow registry for policy gates and lineage: ``scorer`` v1 (@champion), v2 (@good,
    better, fresher, the same inputs) and v3 (@bad: worse, stale, other inputs)."""

    uri: str
    now: float  # when it was made: data ages count from here
    git_commit: str


GATED_GIT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
# version -> (auc, log_loss, input columns, days since its training data ended)
GATED_VERSIONS: dict[str, tuple[float, float, dict[str, str], float]] = {
    "1": (0.90, 0.30, {"amount": "double", "age": "double"}, 10.0),  # the baseline
    "2": (0.905, 0.29, {"amount": "double", "age": "double"}, 2.0),  # better, fresh, same inputs
    "3": (0.80, 0.45, {"amount": "double", "country": "string"}, 100.0),  # worse, stale, other inputs
}


class Constant:
    """A pyfunc model that predicts 0.5 for every row (the gates never load it)."""

    def predict(self, context: Any, model_input: Any, params: Any = None) -> list[float]:
        return [0.5] * len(model_input)


@pytest.fixture(scope="session")
def gated_registry(tmp_path_factory: pytest.TempPathFactory) -> GatedRegistry:
    """``scorer`` v1 (@champion), v2 (@good) and v3 (@bad), each logged from a run with metrics,
    a git commit, data version tags, a dataset input and a signature."""
    import mlflow
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature
    from mlflow.pyfunc.model import PythonModel

    from modelcanary.adapters.registry.mlflow import MlflowRegistry

    now = time.time()
    root = tmp_path_factory.mktemp("gated-mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowRegistry(uri).client
    experiment = client.create_experiment("gates", artifact_location=(root / "artifacts").as_uri())
    model = type("ConstantModel", (Constant, PythonModel), {})()
    with (
        fluent_at(uri),
        warnings.catch_warnings(),
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        for version, (auc, loss, columns, age_days) in GATED_VERSIONS.items():
            frame = pd.DataFrame({name: [1.0] if kind == "double" else ["x"] for name, kind in columns.items()})
            with mlflow.start_run(experiment_id=experiment, run_name=f"scorer-v{version}"):
                mlflow.log_metrics({"auc": auc, "log_loss": loss})
                as_of = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - age_days * 86_400.0))
                mlflow.set_tags(
                    {"mlflow.source.git.commit": GATED_GIT_COMMIT, "data.as_of": as_of, "data.version": f"d{version}"}
                )
                mlflow.log_input(from_pandas(frame, name=f"train-v{version}"), context="training")
                mlflow.pyfunc.log_model(
                    name="model",
                    python_model=model,
                    registered_model_name="scorer",
                    signature=infer_signature(frame, [0.5]),
                    pip_requirements=[],
                )
    for alias, version in (("champion", "1"), ("good", "2"), ("bad", "3")):
        client.set_registered_model_alias("scorer", alias, version)
    return GatedRegistry(uri=uri, now=now, git_commit=GATED_GIT_COMMIT)


@pytest.fixture
def valgrind_installed() -> None:
    """The instruction counter of ``bench.gateway.instructions``: as ``wrk_installed``, with
    ``MODELCANARY_REQUIRE_VALGRIND`` (``.ci/run`` sets it)."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        if os.environ.get("MODELCANARY_REQUIRE_VALGRIND"):
            pytest.fail("MODELCANARY_REQUIRE_VALGRIND is set but valgrind is not on PATH (apt-get install valgrind)")
        pytest.skip("valgrind is not installed (apt-get install valgrind); set MODELCANARY_REQUIRE_VALGRIND")


@pytest.fixture
def wrk_installed() -> None:
    """The gateway benchmarks' load generator: without it their smoke tests skip and say why,
    unless ``MODELCANARY_REQUIRE_WRK`` is set (``.ci/run`` sets it): then they fail, so CI cannot
    pass by skipping."""
    if shutil.which("wrk") is None:
        if os.environ.get("MODELCANARY_REQUIRE_WRK"):
            pytest.fail("MODELCANARY_REQUIRE_WRK is set but wrk is not on PATH (apt-get install wrk)")
        pytest.skip("wrk is not installed (apt-get install wrk); set MODELCANARY_REQUIRE_WRK to make this fail")
