"""Synthetic card-fraud data and the two models of the demo incident.

A candidate model adds the upstream ``merchant_risk`` feed to the baseline's features and
beats it on the offline holdout. In the "drift" scenario that feed is silently inverted
(the vendor now ships a trust score, higher = safer), so the candidate loses on live
traffic while the baseline, which never used the feed, is unaffected. In the "good"
scenario nothing drifts and the candidate is better live too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

FEATURES: tuple[str, ...] = ("amount", "velocity_1h", "account_age_days", "merchant_risk", "hour")
BASELINE_FEATURES: tuple[str, ...] = ("amount", "velocity_1h", "account_age_days", "hour")
# The candidate's only extra input is the feed that drifts, which is the whole point.
CANDIDATE_FEATURES: tuple[str, ...] = (*BASELINE_FEATURES, "merchant_risk")
SCENARIOS: tuple[str, ...] = ("drift", "good")


def make_transactions(n: int, *, rng: np.random.Generator, drifted: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """Return ``n`` transactions (float64 columns ``FEATURES``) and 0/1 fraud labels.

    ``drifted=True`` is live traffic after the upstream change: labels still follow the
    true merchant risk, but the ``merchant_risk`` column carries ``1 - risk``.
    """
    amount = rng.lognormal(mean=3.8, sigma=1.1, size=n)  # median ~45, long right tail
    velocity = rng.poisson(lam=1.5, size=n).astype(np.float64)  # card uses in the last hour
    age = np.ceil(rng.exponential(scale=700.0, size=n))  # account age in days, >= 1
    risk = rng.beta(a=2.0, b=5.0, size=n)  # merchant risk score in [0, 1]
    hour = rng.integers(0, 24, size=n).astype(np.float64)
    # The fraud logit is close to linear in the log1p features the models see, so logistic
    # regression fits it well (night-time is the one term neither model captures).
    # merchant_risk carries the largest single effect: that is why the candidate wins when
    # the feed is honest and loses badly once it is inverted. The intercept puts the fraud
    # rate near 19%, so accuracy gaps show up within a few hundred labels.
    night = ((hour < 6) | (hour >= 22)).astype(np.float64)
    logit = (
        -6.3
        + 0.45 * (np.log1p(amount) - 3.8)
        + 0.7 * velocity
        - 0.35 * (np.log1p(age) - 6.0)
        + 10.0 * risk
        + 0.4 * night
    )
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame(
        {
            "amount": amount,
            "velocity_1h": velocity,
            "account_age_days": age,
            "merchant_risk": 1.0 - risk if drifted else risk,
            "hour": hour,
        },
        columns=list(FEATURES),
    ).astype(np.float64)
    return frame, y


@dataclass(frozen=True)
class TrainedModels:
    baseline: Pipeline  # fit on BASELINE_FEATURES
    candidate: Pipeline  # fit on CANDIDATE_FEATURES
    offline: dict[str, float]  # metrics on a non-drifted holdout


def _pipeline(features: tuple[str, ...]) -> Pipeline:
    # Select by name so callers can pass the full frame; log1p tames the lognormal /
    # exponential tails (all features are >= 0) so a linear model fits the logit above.
    # No lambdas: the pipeline must pickle for the model registry.
    log = FunctionTransformer(np.log1p, feature_names_out="one-to-one")
    return make_pipeline(
        ColumnTransformer([("log1p", log, list(features))]),
        StandardScaler(),
        LogisticRegression(max_iter=500),
    )


def _scores(model: Any, X: pd.DataFrame, y: np.ndarray) -> tuple[float, float, float]:
    proba = model.predict_proba(X)[:, 1]
    pred = (proba >= 0.5).astype(np.int64)  # the same fixed threshold the rollout judge uses
    acc = float(accuracy_score(y, pred))
    rec = float(recall_score(y, pred, zero_division=0))
    return acc, rec, float(roc_auc_score(y, proba))


def train_models(*, seed: int = 7, n_train: int = 20_000) -> TrainedModels:
    """Fit both models on non-drifted data and score them on a non-drifted holdout."""
    rng = np.random.default_rng(seed)
    X, y = make_transactions(n_train, rng=rng, drifted=False)
    X_hold, y_hold = make_transactions(max(n_train // 4, 1_000), rng=rng, drifted=False)
    baseline = _pipeline(BASELINE_FEATURES).fit(X, y)
    candidate = _pipeline(CANDIDATE_FEATURES).fit(X, y)
    offline: dict[str, float] = {}
    for name, model in (("baseline", baseline), ("candidate", candidate)):
        acc, rec, auc = _scores(model, X_hold, y_hold)
        offline |= {f"{name}_accuracy": acc, f"{name}_recall": rec, f"{name}_auc": auc}
    return TrainedModels(baseline=baseline, candidate=candidate, offline=offline)


def live_is_drifted(scenario: str) -> bool:
    """Whether live traffic in ``scenario`` comes from the drifted generator."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known scenarios: {', '.join(SCENARIOS)}")
    return scenario == "drift"


def live_quality(models: TrainedModels, *, scenario: str, n: int = 20_000, seed: int = 11) -> dict[str, float]:
    """Accuracy and recall of both models (threshold 0.5) on ``n`` live rows of ``scenario``."""
    drifted = live_is_drifted(scenario)
    X, y = make_transactions(n, rng=np.random.default_rng(seed), drifted=drifted)
    out: dict[str, float] = {}
    for name, model in (("baseline", models.baseline), ("candidate", models.candidate)):
        acc, rec, _ = _scores(model, X, y)
        out |= {f"{name}_accuracy": acc, f"{name}_recall": rec}
    return out
