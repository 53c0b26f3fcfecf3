"""Tests for the synthetic fraud demo: shape of the data and the incident's inequalities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelcanary.sim.fraud import (
    BASELINE_FEATURES,
    CANDIDATE_FEATURES,
    FEATURES,
    SCENARIOS,
    TrainedModels,
    live_is_drifted,
    live_quality,
    make_transactions,
    train_models,
)


@pytest.fixture(scope="module")
def models() -> TrainedModels:
    return train_models()


def test_feature_sets() -> None:
    assert set(BASELINE_FEATURES) <= set(FEATURES)
    assert set(CANDIDATE_FEATURES) <= set(FEATURES)
    assert "merchant_risk" in set(CANDIDATE_FEATURES) - set(BASELINE_FEATURES)


@pytest.mark.parametrize("drifted", [False, True])
def test_columns_dtypes_and_labels(drifted: bool) -> None:
    X, y = make_transactions(5_000, rng=np.random.default_rng(0), drifted=drifted)
    assert tuple(X.columns) == FEATURES
    assert all(X[c].dtype == np.float64 for c in FEATURES)
    assert len(X) == len(y) == 5_000
    assert set(np.unique(y)) == {0, 1}
    assert np.issubdtype(y.dtype, np.integer)
    assert 0.15 <= y.mean() <= 0.25  # base rate the rollout judge relies on
    assert np.isfinite(X.to_numpy()).all()


def test_deterministic_for_fixed_seed() -> None:
    a = make_transactions(1_000, rng=np.random.default_rng(3), drifted=True)
    b = make_transactions(1_000, rng=np.random.default_rng(3), drifted=True)
    pd.testing.assert_frame_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert train_models(seed=5, n_train=4_000).offline == train_models(seed=5, n_train=4_000).offline


def test_drift_changes_only_merchant_risk() -> None:
    clean, y0 = make_transactions(2_000, rng=np.random.default_rng(1), drifted=False)
    drift, y1 = make_transactions(2_000, rng=np.random.default_rng(1), drifted=True)
    np.testing.assert_array_equal(y0, y1)
    others = [c for c in FEATURES if c != "merchant_risk"]
    pd.testing.assert_frame_equal(clean[others], drift[others])
    assert not np.allclose(clean["merchant_risk"], drift["merchant_risk"])


def test_offline_candidate_wins(models: TrainedModels) -> None:
    o = models.offline
    assert set(o) == {f"{m}_{k}" for m in ("baseline", "candidate") for k in ("accuracy", "recall", "auc")}
    assert o["candidate_accuracy"] >= o["baseline_accuracy"] + 0.03
    assert o["candidate_auc"] > o["baseline_auc"]


def test_drift_scenario_candidate_loses(models: TrainedModels) -> None:
    q = live_quality(models, scenario="drift")
    assert q["candidate_accuracy"] <= q["baseline_accuracy"] - 0.08
    # The baseline never reads the drifted feed, so it stays near its offline accuracy.
    assert abs(q["baseline_accuracy"] - models.offline["baseline_accuracy"]) < 0.03


def test_good_scenario_candidate_wins(models: TrainedModels) -> None:
    q = live_quality(models, scenario="good")
    assert q["candidate_accuracy"] >= q["baseline_accuracy"] + 0.03
    assert 0.0 <= q["candidate_recall"] <= 1.0 and 0.0 <= q["baseline_recall"] <= 1.0


def test_scenarios() -> None:
    assert SCENARIOS == ("drift", "good")
    assert live_is_drifted("drift") is True
    assert live_is_drifted("good") is False


def test_unknown_scenario_names_known_ones(models: TrainedModels) -> None:
    for call in (lambda: live_quality(models, scenario="chaos"), lambda: live_is_drifted("chaos")):
        with pytest.raises(ValueError) as err:
            call()
        assert all(name in str(err.value) for name in SCENARIOS)
