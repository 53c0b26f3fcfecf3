"""``python -m bench.gateway``: the gateway beside a bare model server, MLServer and Ray Serve, in
one run, on one model, under one load generator.

    python -m bench.gateway --rounds 3 --seconds 10 --connections 32 \\
        --json bench/results/gateway-latest.json --markdown bench/results/gateway-latest.md

Setups (numbers as in issue 4, and 0, the same app answering a constant: the generator's and HTTP
stack's ceiling): 1 bare uvicorn app + model (and 1g, the same app on granian over RSGI); 2
``modelcanary gateway`` with a rollout at 50%, sticky keys, telemetry on (and 2g, the same with
``--server granian``); 3 the same with a 100% shadow lane at half (1)'s throughput (open loop); 4
dynamic batching at 64 connections vs none (4c, 4d: the same on 200 boosted trees); 5 MLServer 1.7;
6 Ray Serve, default settings, and 6b with ``max_ongoing_requests`` 64 (the goal reads the faster);
7 the gateway forwarding to a remote V2 server vs calling it directly. Rounds interleave the setups
(1, 2, ..., 7, 1, 2, ...) and the table shows medians. MLServer and Ray run from
``bench/.venv-servers`` (``--setup-servers`` makes it; neither is a project dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.gateway import servers
from bench.gateway.load import Load
from bench.gateway.model import prepare
from bench.gateway.report import goals, markdown, summarise
from bench.gateway.servers import NotRun
from bench.gateway.setups import SETUPS, Context

RESULTS = Path(__file__).resolve().parent.parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default="0,1,2,3,4,5,6,7", help="comma-separated setup numbers (default all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per setup and round")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds of load first")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--setup-servers", action="store_true", help="make bench/.venv-servers (MLServer, Ray) and exit"
    )
    parser.add_argument("--no-install", action="store_true", help="report MLServer/Ray as not run if not installed")
    parser.add_argument("--json", type=Path, help="also write the record here")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the run's record goes")
    args = parser.parse_args(argv)
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = [s for s in args.setups if s not in SETUPS]
    if unknown:
        parser.error(f"unknown setup(s) {', '.join(unknown)}; known: {', '.join(SETUPS)}")
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.setup_servers:
        for kind in servers.SERVER_PACKAGES:
            print(f"{kind}: {servers.setup_venv(kind)}")
        return 0
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        folder = Path(tmp)
        print("training the model, registering it, starting a rollout at 50% ...", file=sys.stderr, flush=True)
        ctx = Context(
            prepared=prepare(folder / "work"),
            folder=folder,
            seconds=args.seconds,
            connections=args.connections,
            warmup_s=args.warmup,
            install=not args.no_install,
        )
        measured: dict[str, list[Load]] = {}
        not_run: dict[str, str] = {}
        for round_index in range(args.rounds):
            for key in args.setups:
                if key in not_run:
                    continue
                print(f"round {round_index + 1}/{args.rounds}: setup {key} ...", file=sys.stderr, flush=True)
                try:
                    setup_rows = SETUPS[key](ctx)
                except NotRun as exc:
                    not_run[key] = str(exc)
                    print(f"  not run: {exc}", file=sys.stderr, flush=True)
                    continue
                for label, load in setup_rows.items():
                    measured.setdefault(label, []).append(load)
                    print(
                        f"  {label}: {load.rps:,.0f} req/s p50 {load.p50_ms:.2f} p99 {load.p99_ms:.2f} ms "
                        f"errors {load.errors}",
                        file=sys.stderr,
                        flush=True,
                    )
                servers.wait_free()
    rows = sorted(summarise(measured), key=lambda row: row["setup"])
    checks = goals(rows)
    load_after = os.getloadavg()
    setting = (
        f"{args.connections} connections (64 for setup 4), {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s after {args.warmup:g} s warm-up, medians; wrk -t1 unless open loop; "
        f"{os.cpu_count()} CPUs, 1-min load average {load_before[0]:.1f} before and {load_after[0]:.1f} after"
    )
    table = markdown(rows, not_run, checks, setting)
    print(table)
    record = {
        "benchmark": "gateway",
        "argv": sys.argv,
        "setting": setting,
        "rows": rows,
        "not_run": not_run,
        "notes": ctx.notes,
        "load_average_before_after": [load_before, load_after],
        "goals": checks,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (args.results_dir / f"gateway-{stamp}.json").write_text(json.dumps(record, indent=2))
    (args.results_dir / f"gateway-{stamp}.md").write_text(table)
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
