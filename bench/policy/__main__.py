"""``python -m bench.policy``: what one gate evaluation costs with each built-in policy, compiled once
per source (the engine's cache, what a held rollout pays every tick) and compiled every time (what
the first evaluation of a source pays).

    python -m bench.policy --repeat 50 --markdown bench/results/policy-latest.md

numpy is imported first, as it is in a controller, since it once changed rego-cpp's behaviour.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy  # noqa: F401

from modelcanary.adapters.policy.rego import RegoPolicyEngine, builtin_policies
from modelcanary.domain.gates import Gate
from modelcanary.ports import Policy

DOCUMENT = {
    "baseline": {"metrics": {"auc": 0.9, "log_loss": 0.3}, "signature": {"inputs": [{"name": "a", "type": "double"}]}},
    "candidate": {
        "metrics": {"auc": 0.91, "log_loss": 0.2},
        "data_age_days": 4.0,
        "signature": {"inputs": [{"name": "a", "type": "double"}]},
    },
    "rollout": {"approvals": [{"actor": "token:bo", "at": 0.0, "step": 1}]},
    "now": 1_733_486_400.0,
    "spec": {},
    "judgement": None,
}


def per_call_ms(engine: RegoPolicyEngine, policies: list[Policy], repeat: int, *, cached: bool) -> float:
    engine.evaluate(Gate.STEP, policies, DOCUMENT)  # warm the cache (or not, below)
    times = []
    for _ in range(repeat):
        if not cached:
            engine = RegoPolicyEngine()
        started = time.perf_counter()
        engine.evaluate(Gate.STEP, policies, DOCUMENT)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    engine = RegoPolicyEngine()
    policies = [Policy(name, engine.source(name, relative_to=None), {}) for name in builtin_policies()]
    rows = ["| policy | compiled once (ms, median) | compiled every time (ms, median) |", "|---|---:|---:|"]
    for name, chosen in [*((p.name, [p]) for p in policies), ("all five", policies)]:
        once = per_call_ms(engine, chosen, args.repeat, cached=True)
        every = per_call_ms(engine, chosen, args.repeat, cached=False)
        rows.append(f"| {name} | {once:.2f} | {every:.2f} |")
    table = "\n".join(rows)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
