"""Accuracy, precision and recall from binned scores equal sklearn's on the raw scores, at thresholds of 0.01."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, precision_score, recall_score

from modelcanary.domain.telemetry import SCORE_EDGES, score_bucket
from modelcanary.stats.classification import Confusion, confusion

THRESHOLDS = [0.0, 0.01, 0.1, 0.25, 0.37, 0.5, 0.73, 0.9, 0.99]


def _binned(scores: np.ndarray, labels: np.ndarray) -> tuple[list[int], list[int]]:
    positive, negative = [0] * (len(SCORE_EDGES) + 1), [0] * (len(SCORE_EDGES) + 1)
    for score, label in zip(scores, labels, strict=True):
        (positive if label else negative)[score_bucket(float(score))] += 1
    return positive, negative


def _scores(rng: np.random.Generator, size: int) -> np.ndarray:
    # half on the 0.005 grid, so that many scores sit exactly on a threshold; half anywhere in [0, 1)
    grid = rng.integers(0, 201, size=size) / 200
    return np.where(rng.random(size) < 0.5, grid, rng.random(size))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 400), prevalence=st.floats(0.0, 1.0))
def test_measures_equal_sklearn(seed: int, size: int, prevalence: float) -> None:
    rng = np.random.default_rng(seed)
    scores = _scores(rng, size)
    labels = (rng.random(size) < prevalence).astype(int)
    positive, negative = _binned(scores, labels)
    for threshold in THRESHOLDS:
        predicted = (scores >= threshold).astype(int)
        counts = confusion(positive, negative, score_bucket(threshold))
        assert counts.n == size
        assert counts.tp == int(((predicted == 1) & (labels == 1)).sum())
        assert counts.fp == int(((predicted == 1) & (labels == 0)).sum())
        accuracy, accuracy_n = counts.measure("accuracy")
        assert accuracy == pytest.approx(accuracy_score(labels, predicted))
        assert accuracy_n == size
        precision, predicted_positive = counts.measure("precision")
        assert predicted_positive == int(predicted.sum())
        if predicted_positive:
            assert precision == pytest.approx(precision_score(labels, predicted))
        else:
            assert precision is None
        recall, actual_positive = counts.measure("recall")
        assert actual_positive == int(labels.sum())
        if actual_positive:
            assert recall == pytest.approx(recall_score(labels, predicted))
        else:
            assert recall is None


@pytest.mark.parametrize("threshold", [k / 100 for k in range(1, 100)])
def test_a_score_equal_to_the_threshold_is_positive_and_just_below_is_not(threshold: float) -> None:
    positive, negative = _binned(np.array([threshold, threshold - 0.001]), np.array([1, 0]))
    assert confusion(positive, negative, score_bucket(threshold)) == Confusion(tp=1, fp=0, tn=1, fn=0)


def test_threshold_zero_predicts_everything_positive() -> None:
    positive, negative = _binned(np.array([0.0, -0.2, 0.6]), np.array([1, 0, 0]))
    assert confusion(positive, negative, score_bucket(0.0)) == Confusion(tp=1, fp=2, tn=0, fn=0)


def test_threshold_one_predicts_positive_only_at_one() -> None:
    scores, labels = np.array([0.995, 1.0]), np.array([0, 1])
    positive, negative = _binned(scores, labels)
    assert confusion(positive, negative, score_bucket(1.0)) == Confusion(tp=1, fp=0, tn=1, fn=0)


def test_confusion_by_hand() -> None:
    assert confusion([0, 1, 4], [3, 1, 0], threshold_bucket=2) == Confusion(tp=4, fp=0, tn=4, fn=1)
    assert confusion([0, 1, 4], [3, 1, 0], threshold_bucket=0) == Confusion(tp=5, fp=4, tn=0, fn=0)
    assert confusion([0, 1, 4], [3, 1, 0], threshold_bucket=3) == Confusion(tp=0, fp=0, tn=4, fn=5)


def test_measures_by_hand() -> None:
    counts = Confusion(tp=8, fp=2, tn=85, fn=5)
    assert counts.n == 100
    assert counts.measure("accuracy") == (0.93, 100)
    assert counts.measure("precision") == (0.8, 10)
    assert counts.measure("recall") == (8 / 13, 13)


@pytest.mark.parametrize("name", ["accuracy", "precision", "recall"])
def test_empty_denominator_is_none(name: str) -> None:
    assert Confusion(tp=0, fp=0, tn=0, fn=0).measure(name) == (None, 0)


def test_unknown_measure_raises() -> None:
    with pytest.raises(KeyError):
        Confusion(tp=1, fp=1, tn=1, fn=1).measure("f1")
