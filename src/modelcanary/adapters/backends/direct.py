"""The direct path of the in-process backend for scikit-learn models: the estimator's own method
called on a float64 matrix, without MLflow's pyfunc and schema enforcement in between, where that
gives the same outputs bit for bit (docs/backends.md; ``PyfuncModel`` chooses)."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelcanary.ports import Column

# The methods MLflow's sklearn wrapper (``_SklearnModelWrapper``) hands straight to the estimator:
# ``predict`` by default, the others when the model was logged with ``pyfunc_predict_fn``.
_SKLEARN_PREDICT_FNS = {"predict", "predict_proba", "predict_log_proba", "predict_joint_log_proba"}


@dataclass(frozen=True)
class Direct:
    """How the direct path calls the estimator: ``method`` on a float64 matrix of ``columns`` (in
    that order), or on a DataFrame of them when ``on_frame``."""

    method: Callable[[Any], Any]
    columns: tuple[str, ...]
    on_frame: bool

    def call(self, matrix: Any, *, finite: bool = True) -> Any:
        """The estimator's outputs on ``matrix``, (columns, rows): transposed, it has the memory
        layout of the frame the pyfunc would build (pandas keeps a frame's block column-major), so
        the estimator's arithmetic runs in the same order and the outputs are bit-identical to the
        slow path's. ``finite``: checked finite before, so scikit-learn need not check again; a
        matrix with a missing value (NaN) is checked by the estimator, which takes it (an imputer)
        or refuses it."""
        matrix = matrix.T
        if self.on_frame:
            import pandas as pd

            matrix = pd.DataFrame(matrix, columns=list(self.columns), copy=False)
        config = _sklearn_config() if finite else None
        if config is None:
            import sklearn

            with sklearn.config_context(assume_finite=finite):
                return self.method(matrix)
        before = config["assume_finite"]
        config["assume_finite"] = True
        try:
            return self.method(matrix)
        finally:
            config["assume_finite"] = before


def _sklearn_config() -> dict[str, Any] | None:
    """This thread's scikit-learn configuration, the dict ``sklearn.config_context`` edits, to
    set ``assume_finite`` for one call (the gateway checked the values finite): its own
    ``config_context`` copies and re-validates the whole configuration on entry and exit, ~40,000
    instructions a request, a twenty-fifth of a light model's whole request (docs/gateway-benchmark.md,
    "Instructions a request"). None if a scikit-learn release keeps it elsewhere; ``config_context``
    is used then."""
    getter = _config_getter()
    config = getter() if getter is not None else None
    return config if isinstance(config, dict) and isinstance(config.get("assume_finite"), bool) else None


@functools.cache
def _config_getter() -> Callable[[], Any] | None:
    try:
        from sklearn._config import _get_threadlocal_config
    except ImportError:
        return None
    return _get_threadlocal_config  # type: ignore[no-any-return]


def sklearn_method(pyfunc: Any, columns: tuple[Column, ...] | None) -> Direct | None:
    """The estimator's own method the pyfunc would call, and how to call it.

    Only for the sklearn flavor with an all-``double`` column signature: there MLflow's schema
    enforcement does nothing ``PyfuncModel`` does not do itself (float64 columns in signature
    order, extras dropped), so calling the estimator directly gives the same outputs without
    MLflow's checks (measured in docs/backends.md). Anything else keeps the generic pyfunc.
    """
    conf = pyfunc.metadata.flavors.get("python_function", {})
    if conf.get("loader_module") != "mlflow.sklearn" or not columns:
        return None
    if any(column.type != "double" for column in columns):  # MLflow casts "float" to float32, "long" strictly
        return None
    name = conf.get("predict_fn", "predict")
    if name not in _SKLEARN_PREDICT_FNS or not hasattr(pyfunc, "get_raw_model"):
        return None
    try:
        estimator = pyfunc.get_raw_model()
    except NotImplementedError:
        return None
    method = getattr(estimator, name, None)
    if not callable(method):
        return None
    signature = tuple(column.name for column in columns)
    fitted_on = getattr(estimator, "feature_names_in_", None)
    if fitted_on is None:
        return Direct(method, signature, on_frame=False)
    on_frame = Direct(method, signature, on_frame=True)
    names = tuple(str(each) for each in fitted_on)
    if not set(names) <= set(signature):
        return on_frame
    unnamed = _without_feature_names(estimator)
    return (
        Direct(getattr(unnamed, name), names, on_frame=False)
        if _same_outputs(on_frame, unnamed, name, names)
        else on_frame
    )


def _without_feature_names(estimator: Any) -> Any:
    """A deep copy of ``estimator`` that forgets the column names it was fitted with, so that it
    takes a plain array without a warning. scikit-learn checks names on every call, and building
    a DataFrame for it costs more than the model itself on light models (docs/backends.md)."""
    from sklearn.base import BaseEstimator

    copy = deepcopy(estimator)
    seen: set[int] = set()

    def forget(value: Any) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, BaseEstimator):
            vars(value).pop("feature_names_in_", None)
            for each in vars(value).values():
                forget(each)
        elif isinstance(value, list | tuple):
            for each in value:
                forget(each)
        elif isinstance(value, dict):
            for each in value.values():
                forget(each)

    forget(copy)
    return copy


def _same_outputs(on_frame: Direct, unnamed: Any, method: str, names: tuple[str, ...]) -> bool:
    """Whether the unnamed copy, given an array of ``names``, answers as the estimator does on a
    DataFrame of the signature's columns: bit for bit, without a warning, on probe rows. An
    estimator that needs the names (a ColumnTransformer selecting by name) fails here and keeps
    the DataFrame."""
    import pandas as pd

    rng = np.random.default_rng(0)
    probe = {column: rng.uniform(0.5, 50.0, size=16) for column in on_frame.columns}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            expected = on_frame.method(pd.DataFrame(probe, columns=list(on_frame.columns)))
            got = getattr(unnamed, method)(np.vstack([probe[name] for name in names]).T)
    except Exception:
        return False
    expected, got = np.asarray(expected), np.asarray(got)
    return expected.shape == got.shape and expected.dtype == got.dtype and bool(np.array_equal(expected, got))


def finite_matrix(columns: list[Any]) -> Any:
    """The columns as one float64 (columns, rows) array in one conversion, when they all are
    equal-length lists of finite numbers; else None (``_typed`` then names what is wrong, or reads
    a null in an optional column as a missing value). Finite is checked on the lists, in C: a sum
    of numbers is finite only if each is (NaN and infinities carry through), and one that
    overflows sends the request the slow way, which checks each value. (Cheaper than numpy's
    ``isfinite(...).all()`` on a small matrix: ~12,000 fewer instructions a request.)"""
    try:
        if not math.isfinite(sum(map(sum, columns))):  # a missing column or value, a string: TypeError
            return None
        matrix = np.array(columns, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        return None
    return matrix
