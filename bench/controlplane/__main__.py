"""``python -m bench.controlplane``: one controller driving many concurrent rollouts, on SQLite and
PostgreSQL side by side.

    python -m bench.controlplane --rollouts 1000 --rounds 5 --engines sqlite,postgresql \\
        --json bench/results/controlplane-latest.json --markdown bench/results/controlplane-latest.md

Per engine, on a fresh store: start N rollouts (sequential judge, three metrics, steps long enough
that they all stay in canary), tick once to put them in canary, then for each round:

1. flush: one gateway source writes cumulative telemetry for every rollout (one transaction, as a
   gateway's flush does; its time is the ``flush`` column), and the clock starts;
2. tick: the controller reads, judges, decides and saves every rollout; each save's completion time
   minus the flush's gives that rollout's decision latency (the flush landing just before the tick:
   in a running controller a flush landing between ticks waits for the next one, up to its
   ``--tick`` interval, which these figures leave out); with
   ``--processes`` above 1 the worker processes decide and save their shares, and a rollout they
   saved counts from the moment the controller heard back (after the worker's commit);
3. propagation: one rollout is aborted through the store (a routing-table change
   with a new version), and two gateways (two ``Gateway`` objects, each with its own connection
   pool, polling the routing table every ``--poll`` seconds as ``modelcanary serve`` does) record
   when they applied it.

``--processes 1,2`` runs every engine once per count, side by side (the controller alone, then with
one worker process: ``modelcanary controller --processes``).

The registry is the in-memory one from ``modelcanary.adapters.testing``: no rollout is promoted
here, and the store and the controller are what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from modelcanary.adapters.store.schema import normalise_url
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.adapters.testing import FakeBackend, FakeRegistry, FunctionModel
from modelcanary.controller.loop import Controller
from modelcanary.controller.operations import run_command, start_rollout
from modelcanary.controller.shards import Shards, ShardTick
from modelcanary.domain.telemetry import Variant, VariantTelemetry
from modelcanary.engine.decide import Command
from modelcanary.gateway.app import Gateway

RESULTS = Path(__file__).resolve().parent.parent / "results"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"

SPEC = """\
apiVersion: modelcanary/v1
kind: Rollout
spec:
  endpoint: e{index}
  baseline: models:/m@champion
  candidate: models:/m@challenger
  traffic:
    steps:
      - {{weight: 10, minRequests: 100, minDuration: 1h, maxDuration: 2h}}
      - {{weight: 50, minRequests: 100, minDuration: 1h, maxDuration: 2h}}
  analysis:
    metrics:
      - {{kind: error_rate, margin: 0.01}}
      - {{kind: latency, quantile: 0.99, margin: 0.2}}
      - {{kind: quality, name: accuracy, measure: accuracy, margin: 0.02, minLabels: 100}}
"""


def counts(requests: int, errors: int, labels: int, seed: int) -> VariantTelemetry:
    telemetry = VariantTelemetry()
    for index in range(requests):
        telemetry.observe(latency_ms=5.0 + (index * 7 + seed) % 40, error=index < errors)
    for index in range(labels):
        telemetry.observe_label(bucket=telemetry.observe_score(0.9 if index % 10 else 0.2), label=1)
    return telemetry


class TimedStore(SqlStore):
    """The store, noting when each rollout's decision committed (a tick commits them together)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.saved_at: dict[str, float] = {}

    def save_many(self, items: Any, *, fence: Any = None) -> Any:
        results = super().save_many(items, fence=fence)
        committed = time.perf_counter()
        self.saved_at.update({saved.id: committed for saved, _ in results if saved is not None})
        return results


class TimedShards(Shards):
    """The worker processes, noting when the controller heard that each of their rollouts was saved."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.saved_at: dict[str, float] = {}

    def submit(self, now: float, fence: Any) -> Any:
        started = super().submit(now, fence)
        for future in started:
            future.add_done_callback(self._note)
        return started

    def _note(self, future: Future[ShardTick]) -> None:
        heard = time.perf_counter()
        if future.exception() is None:
            self.saved_at.update(dict.fromkeys(future.result().saved, heard))


def pg_schema_url(base: str) -> tuple[str, Callable[[], None]]:
    import sqlalchemy as sa

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalise_url(base))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{schema}", drop


class GatewayThread(threading.Thread):
    """A gateway's routing-table follower in its own thread and event loop, noting when it applied
    each routes version."""

    def __init__(self, url: str, poll_s: float) -> None:
        super().__init__(daemon=True)
        self.store = SqlStore(url)
        model = FunctionModel(lambda columns: [0.5] * len(next(iter(columns.values()))))
        self.gateway = Gateway(
            routes=self.store,
            backend=FakeBackend({"m/1": model, "m/2": model}),
            telemetry=None,
            source="bench",
        )
        self.poll_s = poll_s
        self.applied: dict[int, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        async def follow() -> None:
            while not self.stopping.is_set():
                if await self.gateway.refresh():
                    self.applied[self.gateway.routes_version] = time.perf_counter()
                await asyncio.sleep(self.poll_s)

        asyncio.run(follow())
        self.store.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_engine(
    engine: str, url: str, *, rollouts: int, rounds: int, poll_s: float, processes: int = 1
) -> dict[str, Any]:
    registry = FakeRegistry({"m": ["1", "2"]}, {("m", "champion"): "1", ("m", "challenger"): "2"})
    store = TimedStore(url)
    for index in range(rollouts):
        start_rollout(store, registry, SPEC.format(index=index), source=f"e{index}", actor="bench")
    shards = TimedShards(url, processes) if processes > 1 else None
    controller = Controller(store=store, registry=registry, holder="bench", clock=time.time, shards=shards)
    began = time.perf_counter()
    controller.tick()  # pending -> canary for every rollout
    enter_s = time.perf_counter() - began
    gateways = [GatewayThread(url, poll_s) for _ in range(2)]
    for gateway in gateways:
        gateway.start()
    time.sleep(max(1.0, 3 * poll_s))  # both gateways have applied the first table (1,000 routes)

    ticks, latencies, propagation, flushes = [], [], [], []
    ids = [state.id for state in store.list_rollouts(active=True)]
    for round_index in range(rounds):
        scale = round_index + 1
        baseline = counts(900 * scale, 9 * scale, 300 * scale, 1)
        candidate = counts(100 * scale, scale, 40 * scale, 2)
        rows = [
            (rollout_id, variant, c)
            for rollout_id in ids
            for variant, c in ((Variant.BASELINE, baseline), (Variant.CANDIDATE, candidate))
        ]
        flush_began = time.perf_counter()
        store.write_telemetry("bench-gateway", rows)
        flushed = time.perf_counter()
        flushes.append(flushed - flush_began)
        store.saved_at.clear()
        if shards is not None:
            shards.saved_at.clear()
        began = time.perf_counter()
        controller.tick()
        ticks.append(time.perf_counter() - began)
        saved_at = {**store.saved_at, **(shards.saved_at if shards is not None else {})}
        latencies += [at - flushed for at in saved_at.values()]
        # a routing-table change, and when each gateway applied it
        run_command(store, ids[round_index], Command.ABORT, actor="bench")
        changed_at, version = time.perf_counter(), store.routes_version()
        deadline = changed_at + 10
        while time.perf_counter() < deadline and not all(version in g.applied for g in gateways):
            time.sleep(0.005)
        propagation += [g.applied[version] - changed_at for g in gateways if version in g.applied]
    for gateway in gateways:
        gateway.stopping.set()
        gateway.join(10)
    if shards is not None:
        shards.close()
    store.close()
    return {
        "engine": engine,
        "processes": processes,
        "rollouts": rollouts,
        "rounds": rounds,
        "enter_canary_s": enter_s,
        "flush_ms_median": 1000 * statistics.median(flushes),
        "tick_s_median": statistics.median(ticks),
        "ticks_per_s": 1 / statistics.median(ticks),
        "tick_s": ticks,  # each round's, in order: a round that carries more of the judges' work shows
        "decisions": len(latencies),
        "decision_latency_ms_p50": 1000 * percentile(latencies, 0.5),
        "decision_latency_ms_p99": 1000 * percentile(latencies, 0.99),
        "propagation_ms_p50": 1000 * percentile(propagation, 0.5) if propagation else None,
        "propagation_ms_max": 1000 * max(propagation) if propagation else None,
        "gateways": len(gateways),
        # routing changes applied, of rounds x gateways: one a gateway missed (10 s) is not timed
        "propagated": len(propagation),
        "poll_s": poll_s,
    }


def _missed(row: dict[str, Any]) -> str:
    """A note in the propagation cell when a gateway did not apply a change within 10 s."""
    changes = row["rounds"] * row["gateways"]
    return "" if row.get("propagated", changes) == changes else f" ({row['propagated']} of {changes} applied)"


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| engine | processes | rollouts | flush (median ms) | tick (median s) | ticks/s | p50 decision ms "
    head += "| p99 decision ms | propagation p50 / max ms |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    for r in rows:
        head += (
            f"| {r['engine']} | {r.get('processes', 1)} | {r['rollouts']:,} | {r['flush_ms_median']:.0f} | "
            f"{r['tick_s_median']:.2f} | "
            f"{r['ticks_per_s']:.2f} | "
            f"{r['decision_latency_ms_p50']:.0f} | {r['decision_latency_ms_p99']:.0f} | "
            f"{r['propagation_ms_p50']:.0f} / {r['propagation_ms_max']:.0f}{_missed(r)} |\n"
        )
    return head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.controlplane", description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument(
        "--postgres", default=POSTGRES, help="server for the postgresql engine (a schema is made and dropped)"
    )
    parser.add_argument(
        "--poll", type=float, default=0.5, help="gateways' routing-table poll, seconds (serve's default)"
    )
    parser.add_argument(
        "--processes", default="1", help="comma-separated process counts to run each engine with (e.g. 1,2)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the run's record goes")
    args = parser.parse_args(argv)
    rows = []
    counts = [int(p) for p in args.processes.split(",") if p.strip()]
    for engine, processes in [(e.strip(), p) for e in args.engines.split(",") if e.strip() for p in counts]:
        cleanup: Callable[[], None]
        with tempfile.TemporaryDirectory() as folder:
            if engine == "sqlite":
                url, cleanup = f"sqlite:///{folder}/bench.db", (lambda: None)
            elif engine == "postgresql":
                url, cleanup = pg_schema_url(args.postgres)
            else:
                parser.error(f"unknown engine {engine!r}: sqlite or postgresql")
            try:
                print(
                    f"{engine}, {processes} process(es): {args.rollouts} rollouts, {args.rounds} rounds ...",
                    file=sys.stderr,
                    flush=True,
                )
                rows.append(
                    run_engine(
                        engine, url, rollouts=args.rollouts, rounds=args.rounds, poll_s=args.poll, processes=processes
                    )
                )
            finally:
                cleanup()
    table = markdown(rows)
    print(table)
    record = {
        "benchmark": "controlplane",
        "argv": sys.argv,
        "rows": rows,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"controlplane-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json").write_text(
        json.dumps(record, indent=2)
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
