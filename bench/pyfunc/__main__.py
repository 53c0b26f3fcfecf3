"""``python -m bench.pyfunc``: one ``PyfuncModel.predict`` call, sklearn direct path against the generic pyfunc.

    python -m bench.pyfunc --rounds 7 --calls 300

Two models, trained here at run time on the demo's data: the demo's baseline fraud pipeline
(``sim.fraud.train_models``: ColumnTransformer selecting by name, log1p, StandardScaler,
LogisticRegression) and a StandardScaler + LogisticRegression pipeline fitted on the same frame (the
test suite's kind of model). Each is saved as the demo logs it (sklearn flavor,
``pyfunc_predict_fn="predict_proba"``, signature inferred from its features) and loaded with
``mlflow.pyfunc``. For reference it also times the pipeline's own ``predict_proba`` on a DataFrame, and
the final LogisticRegression's on a float64 array. Medians of ``--rounds`` rounds, in µs per call;
the spread (min-max over rounds) shows the machine's load.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import timeit
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


def _time(call: Callable[[], Any], *, rounds: int, calls: int) -> tuple[float, float, float]:
    call()  # warm
    per_call = [timeit.timeit(call, number=calls) / calls * 1e6 for _ in range(rounds)]
    return statistics.median(per_call), min(per_call), max(per_call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from modelcanary.sim.fraud import BASELINE_FEATURES, make_transactions, train_models

    demo = train_models().baseline
    X, y = make_transactions(20_000, rng=np.random.default_rng(7), drifted=False)
    plain = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[list(BASELINE_FEATURES)], y)
    sample, _ = make_transactions(200, rng=np.random.default_rng(1), drifted=False)
    inputs = sample[list(BASELINE_FEATURES)]
    print(f"{'model':10} {'call':44} {'rows':>4} {'median µs':>10} {'min-max µs':>16}")
    for label, model in (("demo", demo), ("plain", plain)):
        _bench(label, model, sample, inputs, rounds=args.rounds, calls=args.calls)


def _bench(label: str, model: Any, sample: Any, inputs: Any, *, rounds: int, calls: int) -> None:
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from modelcanary.adapters.backends.inprocess import PyfuncModel

    names = list(inputs.columns)
    with tempfile.TemporaryDirectory(prefix="bench-pyfunc-") as tmp:
        path = str(Path(tmp) / "model")
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            mlflow.sklearn.save_model(
                model,
                path,
                pyfunc_predict_fn="predict_proba",
                signature=infer_signature(inputs, model.predict_proba(inputs)),
                pip_requirements=["scikit-learn"],
            )
            pyfunc = mlflow.pyfunc.load_model(path)
        direct, generic = PyfuncModel(pyfunc), PyfuncModel(pyfunc, direct=False)
        assert direct.path != "pyfunc" and generic.path == "pyfunc"
        for rows in (1, 64):
            chunk = sample.head(rows)
            columns = {name: chunk[name].tolist() for name in names}
            assert direct.predict(columns) == generic.predict(columns)
            frame = chunk[names]
            timed: list[tuple[str, Callable[[], Any]]] = [
                ("PyfuncModel.predict, generic pyfunc", partial(generic.predict, columns)),
                ("PyfuncModel.predict, sklearn direct", partial(direct.predict, columns)),
                ("pipeline.predict_proba(DataFrame)", partial(model.predict_proba, frame)),
            ]
            # the floor: the final estimator alone on the float64 array the steps before it produce
            last, scaled = model.steps[-1][1], model[:-1].transform(frame)
            timed.append(("LogisticRegression.predict_proba(array)", partial(last.predict_proba, scaled)))
            for name, call in timed:
                median, low, high = _time(call, rounds=rounds, calls=calls)
                print(f"{label:10} {name:44} {rows:>4} {median:>10.0f} {low:>7.0f}-{high:<8.0f}")


if __name__ == "__main__":
    main()
