"""``python -m bench.gateway.servers_latency``: the gateway of setup (2) on each HTTP server it can
run on (``--server uvicorn`` and ``--server granian``), at a few fixed offered loads (open loop) and
at saturation (closed loop), in alternating rounds: which server to run it on is this trade.

    python -m bench.gateway.servers_latency --rates 1500,3000 --rounds 3 --seconds 5 [--json PATH]

Each round starts each server in turn, and for each rate warms it (2 s) and measures p50 and p99
with the open-loop generator of setup 3; then wrk at 32 connections for the saturated throughput
and p50. The table shows medians over rounds. Records go to
``bench/results/servers-latency-<UTC stamp>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.gateway import servers, write_record
from bench.gateway.load import bodies, lua_script, paced, wrk
from bench.gateway.model import prepare

RESULTS = Path(__file__).resolve().parent.parent / "results"
SERVERS = ("uvicorn", "granian")
CONNECTIONS = 32


def one_round(prepared: Any, folder: Path, rates: list[float], seconds: float) -> dict[str, dict[str, float]]:
    """Each server's figures this round: ``p50@RATE``, ``p99@RATE``, ``saturated rps``, ``saturated p50``."""
    payloads = bodies(prepared.rows)
    script = lua_script("/v2/models/fraud/infer", payloads, folder)
    out: dict[str, dict[str, float]] = {}
    for name in SERVERS:
        server = servers.gateway(
            prepared.store_url, prepared.registry_uri, folder, name=f"gateway-{name}", extra=["--server", name]
        )
        figures: dict[str, float] = {}
        try:
            for rate in rates:
                paced(server.url, payloads, rate=rate, seconds=2, connections=CONNECTIONS, folder=folder)
                load = paced(server.url, payloads, rate=rate, seconds=seconds, connections=CONNECTIONS, folder=folder)
                if load.errors:
                    raise RuntimeError(f"{load.errors} failed requests on {name} at {rate:g}/s")
                figures[f"p50 ms at {rate:g}/s"], figures[f"p99 ms at {rate:g}/s"] = load.p50_ms, load.p99_ms
            closed = wrk(server.url, script, connections=CONNECTIONS, seconds=seconds)
            figures["saturated req/s"], figures["saturated p50 ms"] = closed.rps, closed.p50_ms
        finally:
            server.stop()
        out[name] = figures
        print(f"  {name}: " + ", ".join(f"{key} {value:,.2f}" for key, value in figures.items()), flush=True)
    return out


def table(medians: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(medians.values())))
    out = ["| figure (median over rounds) | " + " | ".join(medians) + " |", "|---|" + "--:|" * len(medians)]
    for key in keys:
        out.append(f"| {key} | " + " | ".join(f"{medians[name][key]:,.2f}" for name in medians) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway.servers_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="1500,3000", help="comma-separated offered loads, requests a second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="also write the record here")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rates = [float(rate) for rate in args.rates.split(",")]
    rounds: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="servers-latency-") as tmp:
        folder = Path(tmp)
        prepared = prepare(folder / "prepared")
        for index in range(args.rounds):
            print(f"round {index + 1}/{args.rounds}", flush=True)
            rounds.append(one_round(prepared, folder, rates, args.seconds))
    series: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for each in rounds:
        for name, figures in each.items():
            for key, value in figures.items():
                series[name][key].append(value)
    medians = {name: {key: statistics.median(values) for key, values in keys.items()} for name, keys in series.items()}
    setting = (
        f"modelcanary gateway (setup 2), {args.rounds} alternating rounds of {args.seconds:g} s a figure, "
        f"{CONNECTIONS} connections; {os.cpu_count()} CPUs"
    )
    print(setting + "\n\n" + table(medians))
    record = {"benchmark": "servers-latency", "setting": setting, "medians": medians, "rounds": rounds}
    write_record(args.results_dir, "servers-latency", record, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
