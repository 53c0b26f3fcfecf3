"""``python -m bench.gateway.shadow_cost``: what a 100% shadow lane costs the event loop's thread,
per copy, measured in CPU time rather than in p99.

    python -m bench.gateway.shadow_cost --rounds 5 --calls 3000 \\
        --json bench/results/shadow-cost-latest.json --markdown bench/results/shadow-cost-latest.md

Setup (3)'s question is whether the lane costs live requests; its p99 is set by this machine's
stalls more than by the lane (docs/gateway-benchmark.md, "What sets setup 3's p99"). This asks
what the lane takes from the loop's thread instead: the gateway of setup (2), a rollout at 50%
with sticky keys, built in this process twice, without and with ``shadow: {sample: 1.0}``; the
benchmark's requests sent to its ASGI app directly (no server, no socket), in chunks of
``--chunk``, each followed by an idle wait until the lane has predicted every copy (so that no copy
is shed: the lane runs in the loop's idle moments). Its figure is the loop thread's CPU time
(``time.thread_time``) over the chunks and the waits: a shadow copy of an in-process candidate
that serves live requests runs on that thread (``gateway/shadow.py``). The lane's cost per copy is
the difference between the two gateways over the copies predicted; the best of ``--rounds``
interleaved rounds, since a stall only ever adds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gateway import run_header, write_record
from bench.gateway.model import SHADOW_SPEC, begin_rollout, prepare
from bench.gateway.overhead import call, check_answered, requests

RESULTS = Path(__file__).resolve().parent.parent / "results"
LANES = ("off", "on")


def build(store_url: str, registry_uri: str) -> tuple[Any, Any]:
    """The ASGI app of setup (2)'s gateway following ``store_url``, and the gateway."""
    from modelcanary.adapters.backends.refs import default_backend
    from modelcanary.adapters.store.sql import SqlStore
    from modelcanary.gateway.app import Gateway, StaticRoutes, create_app

    store = SqlStore(store_url)
    backend = default_backend(registry_uri)
    gateway = Gateway(routes=StaticRoutes({}, store), backend=backend, telemetry=store, source="bench-shadow")
    return create_app(gateway), gateway


async def measure(
    app: Any, gateway: Any, reqs: list[tuple[dict[str, Any], bytes]], calls: int, chunk: int
) -> dict[str, float]:
    """The loop thread's CPU µs a request over ``calls`` requests, and the copies the lane predicted."""
    await gateway.refresh()  # loads the models and routes, as the server's start does
    lane = asyncio.create_task(gateway.shadow.run())
    sent: list[dict[str, Any]] = []

    async def drained() -> None:
        while len(gateway.shadow):
            await asyncio.sleep(0.005)

    async def send_all(count: int, start: int) -> None:
        for first in range(start, start + count, chunk):
            for index in range(first, min(first + chunk, start + count)):
                await call(app, *reqs[index % len(reqs)], sent)
            await drained()

    try:
        await send_all(max(calls // 5, chunk), 0)  # warm: the lane learns the candidate's cost first
        sent.clear()
        done, cpu = gateway.shadow.done, time.thread_time()
        await send_all(calls, calls)
        await asyncio.sleep(0.05)  # a copy taken by the lane just before the queue read empty
        cpu, done = time.thread_time() - cpu, gateway.shadow.done - done
    finally:
        lane.cancel()
        await asyncio.gather(lane, return_exceptions=True)
        await gateway.close()
    check_answered(sent)
    return {"cpu_us_per_request": cpu / calls * 1e6, "copies": float(done)}


def table(rounds: dict[str, list[dict[str, float]]], calls: int) -> str:
    off = min(r["cpu_us_per_request"] for r in rounds["off"])
    best_on = min(rounds["on"], key=lambda r: r["cpu_us_per_request"])
    on, copies = best_on["cpu_us_per_request"], best_on["copies"]
    per_copy = (on - off) * calls / copies if copies else float("nan")
    return "\n".join(
        [
            "| shadow lane | loop thread CPU µs a request (best) | copies predicted per request |",
            "|---|--:|--:|",
            f"| off | {off:.1f} | 0 |",
            f"| on (sample 1.0) | {on:.1f} | {copies / calls:.2f} |",
            "",
            f"The lane's cost: {on - off:.1f} µs a request, {per_copy:.1f} µs of the loop thread's CPU per copy.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway.shadow_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000, help="measured requests per round and gateway")
    parser.add_argument("--chunk", type=int, default=200, help="requests between two waits for the lane")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1 or args.chunk < 1:
        parser.error("--rounds, --calls and --chunk must be at least 1")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as folder:
        prepared = prepare(Path(folder) / "prepared")
        shadow_url = f"sqlite:///{Path(folder) / 'shadow-on.db'}"
        begin_rollout(shadow_url, prepared.registry_uri, SHADOW_SPEC)
        urls = {"off": prepared.store_url, "on": shadow_url}
        reqs = requests(prepared)
        rounds: dict[str, list[dict[str, float]]] = {lane: [] for lane in LANES}
        for number in range(args.rounds):  # interleaved, each round in the other order
            for lane in LANES if number % 2 == 0 else LANES[::-1]:
                app, gateway = build(urls[lane], prepared.registry_uri)
                rounds[lane].append(asyncio.run(measure(app, gateway, reqs, args.calls, args.chunk)))
                print(
                    f"round {number + 1}: lane {lane}: {rounds[lane][-1]['cpu_us_per_request']:.1f} µs a request, "
                    f"{rounds[lane][-1]['copies']:.0f} copies",
                    file=sys.stderr,
                )
    text = table(rounds, args.calls)
    print(text)
    record = {
        **run_header("bench.gateway.shadow_cost", argv, started),
        "calls": args.calls,
        "chunk": args.chunk,
        "rounds": rounds,
    }
    write_record(args.results_dir, "shadow-cost", record, args.json, table=text, table_also=args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
