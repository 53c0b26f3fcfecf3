"""``python -m bench.requestpath``: what the gateway's own work costs per request, on a no-op model.

    python -m bench.requestpath --rounds 5 --calls 20000 --json bench/results/requestpath-latest.json

Rows: the candidate inline and in the deadline pool (the hop an abandonable candidate pays);
``Gateway._predict`` with no rollout, and in a rollout serving the baseline with a segment rule and
a 1% shadow sample; the per-request Prometheus work (``Series.observe``) and the recorder's. Medians
of ``--rounds`` rounds; the machine's load shows in the spread, printed beside each median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request

from modelcanary.adapters.testing import FakeBackend, FunctionModel
from modelcanary.domain.spec import CircuitBreaker, Segment, Shadow, StickyKey
from modelcanary.domain.state import ModelVersion, Route
from modelcanary.domain.telemetry import Variant
from modelcanary.gateway.app import Gateway, StaticRoutes
from modelcanary.gateway.faults import CandidateRunner
from modelcanary.gateway.metrics import Metrics
from modelcanary.gateway.recorder import Recorder
from modelcanary.ports import Column

MODEL = FunctionModel(lambda c: [[0.5, 0.5]] * len(c["a"]), (Column("a", "double"),))
REQUEST = Request({"type": "http", "method": "POST", "path": "/", "headers": [(b"x-user-id", b"u1")]})
BASELINE, CANDIDATE = ModelVersion(name="m", version="1"), ModelVersion(name="m", version="2")


async def _per_call(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    for _ in range(calls // 20):
        await call()
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls * 1e6


async def _gateway(route: Route, calls: int) -> float:
    gateway = Gateway(
        routes=StaticRoutes({"m": route}),
        backend=FakeBackend({"m/1": MODEL, "m/2": MODEL}),
        telemetry=None,
        source="bench",
    )
    await gateway.refresh()
    serving = gateway.serving["m"]
    try:
        return await _per_call(lambda: gateway._predict(serving, REQUEST, {"a": [1.0]}, "inputs"), calls)
    finally:
        gateway.close()


async def measure(rounds: int, calls: int) -> dict[str, list[float]]:
    runner = CandidateRunner()
    series = Metrics().endpoint("m").baseline
    recorder = Recorder()
    in_rollout = Route(
        endpoint="m",
        baseline=BASELINE,
        candidate=CANDIDATE,
        weight=0.01,
        rollout_id="r",
        sticky=StickyKey(header="x-other"),
        breaker=CircuitBreaker(),
        segments=(Segment(name="eu", header="x-region", values=["eu-west"]),),
        shadow=Shadow(sample=0.01),
    )

    async def observe() -> None:
        series.observe(0.001, [0.3])

    async def record() -> None:
        recorder.record("r", Variant.BASELINE, latency_ms=1.0, error=False, scores=[0.3])

    cases: dict[str, Callable[[], Awaitable[float]]] = {
        "candidate inline (no deadline)": lambda: _per_call(lambda: runner.predict(MODEL, {"a": [1.0]}, None), calls),
        "candidate in the deadline pool": lambda: _per_call(lambda: runner.predict(MODEL, {"a": [1.0]}, 1.0), calls),
        "Gateway._predict, no rollout": lambda: _gateway(Route(endpoint="m", baseline=BASELINE), calls),
        "Gateway._predict, rollout, baseline served (segment, 1% shadow)": lambda: _gateway(in_rollout, calls),
        "Series.observe (Prometheus), 1 row": lambda: _per_call(observe, calls),
        "Recorder.record, 1 row": lambda: _per_call(record, calls),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):  # interleaved, so load drifting over the run hits every case alike
        for name, case in cases.items():
            results[name].append(await case())
    runner.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.requestpath", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = asyncio.run(measure(args.rounds, args.calls))
    print(f"{'case':<66} {'median µs':>10}  rounds")
    for name, values in results.items():
        print(f"{name:<66} {statistics.median(values):>10.1f}  {', '.join(f'{v:.1f}' for v in values)}")
    if args.json:
        args.json.write_text(json.dumps({"unit": "µs per call", "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
