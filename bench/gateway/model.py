"""The one model every setup serves (and a heavier one that setup 4 batches too), trained at run time
(nothing downloaded), and the places each server reads it from: a joblib file (bare app, MLServer,
Ray Serve), an MLflow registry holding it twice (champion and challenger, for the gateway's
rollout), and a store with that rollout at 50%."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.gateway import STICKY_HEADER
from modelcanary.sim.fraud import BASELINE_FEATURES, make_transactions

MODEL_NAME = "fraud"
ROLLOUT_SPEC = """\
apiVersion: modelcanary/v1
kind: Rollout
spec:
  endpoint: fraud
  baseline: models:/fraud@champion
  candidate: models:/fraud@challenger
  traffic:
    stickyKey: {header: STICKY}
    steps:
      - {weight: 50, minRequests: 100, minDuration: 10h, maxDuration: 20h}
      - {weight: 100, minRequests: 100, minDuration: 10h, maxDuration: 20h}
  analysis:
    metrics:
      - {kind: error_rate, margin: 0.5}
""".replace("STICKY", STICKY_HEADER)


@dataclass(frozen=True)
class Prepared:
    workdir: Path
    joblib_path: Path
    registry_uri: str
    store_url: str
    rows: np.ndarray  # request rows, as served (float64, BASELINE_FEATURES order)


def train(seed: int = 7, *, kind: str = "logistic") -> tuple[object, np.ndarray]:
    """A model on the demo's fraud features, fitted on a plain array. ``logistic``: a
    LogisticRegression, the model of MEASUREMENTS.md and of every setup, light enough that serving
    overhead is what the benchmark sees. ``boosted``: 200 gradient-boosted trees of depth 3, a
    model whose call costs more than its HTTP request (~0.5 ms for one row, ~0.6 ms for 64, ad hoc
    on this machine kind), on which dynamic batching is measured as well (setup 4c/4d)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    frame, labels = make_transactions(5_000, rng=np.random.default_rng(seed), drifted=False)
    x = np.log1p(frame[list(BASELINE_FEATURES)].to_numpy())
    if kind == "logistic":
        model = LogisticRegression(max_iter=500).fit(x, labels)
    elif kind == "boosted":
        model = GradientBoostingClassifier(n_estimators=200, max_depth=3, random_state=seed).fit(x, labels)
    else:
        raise ValueError(f"unknown model kind {kind!r}: logistic or boosted")
    return model, x[:1000]


def prepare(workdir: Path, *, seed: int = 7, kind: str = "logistic") -> Prepared:
    import joblib

    workdir.mkdir(parents=True, exist_ok=True)
    model, rows = train(seed, kind=kind)
    joblib_path = workdir / "model.joblib"
    joblib.dump(model, joblib_path)
    registry_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    store_url = f"sqlite:///{workdir / 'modelcanary.db'}"
    _register(model, rows, registry_uri, workdir / "mlartifacts")
    begin_rollout(store_url, registry_uri)
    return Prepared(workdir, joblib_path, registry_uri, store_url, rows)


def _register(model: object, rows: np.ndarray, registry_uri: str, artifacts: Path) -> None:
    """The same fitted model as fraud v1 (champion) and v2 (challenger). MLflow hands the model a
    pandas frame, so these copies carry the feature names (same coefficients): without them
    scikit-learn warns on every call."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from modelcanary.adapters.registry.mlflow import MlflowRegistry

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    named = copy.deepcopy(model)
    named.feature_names_in_ = np.array(BASELINE_FEATURES, dtype=object)  # type: ignore[attr-defined]
    frame = pd.DataFrame(rows[:50], columns=list(BASELINE_FEATURES))
    client = MlflowRegistry(registry_uri).client
    experiment_id = client.create_experiment("bench-gateway", artifact_location=artifacts.as_uri())
    mlflow.set_tracking_uri(registry_uri)  # MLflow's fluent API (runs, log_model) reads the global URIs
    mlflow.set_registry_uri(registry_uri)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        for version in ("1", "2"):
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"fraud-v{version}"):
                mlflow.sklearn.log_model(
                    named,
                    name="model",
                    registered_model_name=MODEL_NAME,
                    pyfunc_predict_fn="predict_proba",
                    signature=infer_signature(frame, named.predict_proba(frame)),  # type: ignore[attr-defined]
                    pip_requirements=["scikit-learn"],
                    # MLflow saves with skops, which refuses a tree's node arrays unless trusted (our own model)
                    skops_trusted_types=["sklearn.tree._tree.Tree"] if hasattr(model, "estimators_") else None,
                )
    client.set_registered_model_alias(MODEL_NAME, "champion", "1")
    client.set_registered_model_alias(MODEL_NAME, "challenger", "2")


SHADOW_SPEC = ROLLOUT_SPEC.replace(
    "    stickyKey: {header: x-user-id}\n", "    stickyKey: {header: x-user-id}\n    shadow: {sample: 1.0}\n"
)


def begin_rollout(store_url: str, registry_uri: str, spec: str = ROLLOUT_SPEC) -> None:
    """A rollout at 50% candidate with sticky keys, as the controller leaves it after one tick."""
    from modelcanary.adapters.registry.mlflow import MlflowRegistry
    from modelcanary.adapters.store.sql import SqlStore
    from modelcanary.controller.loop import Controller
    from modelcanary.controller.operations import start_rollout

    store, registry = SqlStore(store_url), MlflowRegistry(registry_uri)
    start_rollout(store, registry, spec, source="bench", actor="bench")
    Controller(store=store, registry=registry, holder="bench").tick()
    [route] = store.routes().values()
    if route.weight != 50:
        raise RuntimeError(f"the rollout is at {route.weight}% candidate, not 50%")
    store.close()


if __name__ == "__main__":
    # python -m bench.gateway.model STORE_URL REGISTRY_URI [shadow]: a rollout in a fresh store, made
    # by whichever modelcanary is first on PYTHONPATH (setup 3 may run another branch's gateway)
    import sys

    begin_rollout(sys.argv[1], sys.argv[2], SHADOW_SPEC if sys.argv[3:] == ["shadow"] else ROLLOUT_SPEC)
