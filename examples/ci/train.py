"""Train the fraud model, register it and point the `challenger` alias at the new version.

The CI step before the rollout (see github-actions.yml). Prints `version=N` for $GITHUB_OUTPUT.
Replace the synthetic data with your training set; everything after `fit` is what matters here.

    python examples/ci/train.py --registry "$MLFLOW_TRACKING_URI" --model fraud --alias challenger
"""

from __future__ import annotations

import argparse
import os

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=os.environ.get("MLFLOW_TRACKING_URI"), required=False)
    parser.add_argument("--model", default="fraud")
    parser.add_argument("--alias", default="challenger")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("GITHUB_RUN_NUMBER", "0")))
    args = parser.parse_args()
    if args.registry:
        mlflow.set_tracking_uri(args.registry)
        mlflow.set_registry_uri(args.registry)

    rng = np.random.default_rng(args.seed)
    frame = pd.DataFrame(
        {"amount": rng.lognormal(3.5, 1.0, 2000), "velocity": rng.poisson(1.5, 2000).astype(np.float64)}
    )
    logit = 0.02 * (frame["amount"] - 40) + 0.8 * (frame["velocity"] - 1.5)
    labels = (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, labels)

    with mlflow.start_run(run_name=f"{args.model}-ci-{args.seed}"):
        mlflow.log_metric("train_accuracy", float(model.score(frame, labels)))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=args.model,
            pyfunc_predict_fn="predict_proba",
            signature=infer_signature(frame, model.predict_proba(frame)),
            pip_requirements=["scikit-learn"],
        )
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(args.model, args.alias, version)
    print(f"version={version}")


if __name__ == "__main__":
    main()
