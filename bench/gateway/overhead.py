"""``python -m bench.gateway.overhead``: what the gateway's own work costs a request, in a tight loop
and in a server under load, beside the bare app.

    python -m bench.gateway.overhead --rounds 3 --seconds 6 \\
        --json bench/results/overhead-latest.json --markdown bench/results/overhead-latest.md

Two apps: the bare app of setup (1) and the gateway of setup (2) (a rollout at 50%, sticky keys,
telemetry to a SQLite store), each with the benchmark's scikit-learn model and with a no-op model
that answers a constant, so that only the serving work shows. Each is measured two ways, on the
benchmark's 500 requests:

- **in a loop**: the ASGI app called directly with each request's ASGI messages, one after another
  (no server, no socket), microseconds a request, the best of ``--rounds`` rounds of ``--calls``;
- **in a server**: uvicorn serving the same app on loopback under wrk (32 connections), one
  process on its one saturated core, so microseconds a request is 1 / throughput; the median of
  ``--rounds`` interleaved runs.

The gateway's cost is its difference from the bare app on each line (docs/gateway-benchmark.md,
"Where (2)'s time goes").
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.gateway import STICKY_HEADER, run_header, servers, write_record
from bench.gateway.load import bodies, lua_script, wrk
from bench.gateway.model import Prepared, prepare

RESULTS = Path(__file__).resolve().parent.parent / "results"
APPS = ("bare", "gateway")
MODELS = ("model", "no-op")
NO_OP_ROW = [0.9, 0.1]


class NoOpEstimator:
    """The bare app's no-op: ``predict_proba`` answers a constant."""

    def predict_proba(self, x: Any) -> Any:
        return np.tile(NO_OP_ROW, (len(x), 1))


class NoOpBackend:
    """The gateway's no-op: each version loaded for real, with only the estimator's method swapped
    for ``NoOpEstimator``'s, so the gateway does all its own work (the signature's checks, the
    matrix and its finite check, the output rows) as the bare app does its own. (Swapping the whole
    model, as an earlier version did, skipped ~6.5 µs of the gateway's work a request.)"""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def load(self, version: Any) -> Any:
        model = self.backend.load(version)
        direct = getattr(model, "_fast", None)  # the in-process sklearn path (adapters/backends/inprocess.py)
        if direct is None:
            raise RuntimeError(f"{version.uri} does not take the direct scikit-learn path; the no-op needs it")
        no_op = copy.copy(model)  # the loaded model itself is left as it was
        no_op._fast = replace(direct, method=NoOpEstimator().predict_proba)
        return no_op


def build(app: str, model: str, prepared: Prepared) -> tuple[Any, Any]:
    """The ASGI app, and the gateway behind it (None for the bare app)."""
    if app == "bare":
        import joblib

        from bench.gateway.bare_app import BareApp

        return BareApp(NoOpEstimator() if model == "no-op" else joblib.load(prepared.joblib_path)), None
    from modelcanary.adapters.backends.refs import default_backend
    from modelcanary.adapters.store.sql import SqlStore
    from modelcanary.gateway.app import Gateway, StaticRoutes, create_app

    store = SqlStore(prepared.store_url)
    backend = default_backend(prepared.registry_uri)
    gateway = Gateway(
        routes=StaticRoutes({}, store),
        backend=NoOpBackend(backend) if model == "no-op" else backend,
        telemetry=store,
        source="bench-overhead",
    )
    return create_app(gateway), gateway


def requests(prepared: Prepared) -> list[tuple[dict[str, Any], bytes]]:
    """The benchmark's 500 requests as ASGI scopes and bodies, with their sticky keys."""
    out = []
    for index, body in enumerate(bodies(prepared.rows)):
        raw = body.encode()
        headers = [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (STICKY_HEADER.encode(), f"user-{index + 1}".encode()),
            (b"content-length", str(len(raw)).encode()),
        ]
        scope = {"type": "http", "method": "POST", "path": "/v2/models/fraud/infer", "headers": headers}
        out.append((scope, raw))
    return out


async def call(app: Any, scope: dict[str, Any], raw: bytes, sent: list[dict[str, Any]]) -> None:
    """One request sent to the ASGI app directly, with ``raw`` as its whole body; what the app
    sends back is appended to ``sent``."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(dict(scope), receive, send)


def check_answered(sent: list[dict[str, Any]]) -> None:
    """Every response in ``sent`` was a 200."""
    statuses = {message["status"] for message in sent if message["type"] == "http.response.start"}
    if statuses != {200}:
        raise RuntimeError(f"answers other than 200: {statuses}")


async def in_loop(app: Any, gateway: Any, reqs: list[tuple[dict[str, Any], bytes]], calls: int) -> float:
    """Microseconds a request, the ASGI app called directly: one round of ``calls`` requests."""
    if gateway is not None:
        await gateway.refresh()  # loads the models and routes, as the server's start does
    sent: list[dict[str, Any]] = []
    for index in range(calls // 10):  # warm
        await call(app, *reqs[index % len(reqs)], sent)
    sent.clear()
    started = time.perf_counter()
    for index in range(calls):
        await call(app, *reqs[index % len(reqs)], sent)
    elapsed = time.perf_counter() - started
    if gateway is not None:
        await gateway.close()
    check_answered(sent)
    return elapsed / calls * 1e6


def serve(app: str, model: str, workdir: Path, port: int) -> None:
    """The server process of one line: uvicorn, as ``modelcanary gateway`` runs by default and the
    bare app of (1) runs, for both apps, so that the difference is the gateway's own work."""
    import pickle

    from modelcanary.gateway import server

    prepared = pickle.loads((workdir / "prepared.pickle").read_bytes())
    entry, _gateway = build(app, model, prepared)
    server.run(entry, "127.0.0.1", port)


def in_server(app: str, model: str, workdir: Path, script: Path, seconds: float, warmup_s: float) -> float:
    """Microseconds a request (1 / throughput) of uvicorn serving the app under wrk."""
    port = servers.free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "bench.gateway.overhead", "--serve", app, model, str(workdir), str(port)]
    ready = f"{base}/v2/health/ready"
    server = servers.start(
        f"overhead-{app}-{model}",
        command,
        ready,
        f"{base}/v2/models/fraud/infer",
        workdir,
        env={"PYTHONPATH": servers.python_path(), "MODELCANARY_WORKDIR": "", "MODELCANARY_STORE": ""},
    )
    try:
        if warmup_s > 0:
            wrk(server.url, script, connections=32, seconds=warmup_s)
        load = wrk(server.url, script, connections=32, seconds=seconds)
    finally:
        server.stop()
    if load.errors:
        raise RuntimeError(f"{load.errors} failed requests serving {app} with the {model}")
    return 1e6 / load.rps


@dataclass
class Line:
    app: str
    model: str
    loop_us: list[float]
    server_us: list[float]

    @property
    def loop(self) -> float:
        return min(self.loop_us)

    @property
    def server(self) -> float:
        return statistics.median(self.server_us)


def table(lines: dict[tuple[str, str], Line]) -> str:
    out = [
        "| app | model | in a loop, µs a request (best) | in a server, µs a request (median) | req/s in the server |",
        "|---|---|--:|--:|--:|",
    ]
    for line in lines.values():
        out.append(f"| {line.app} | {line.model} | {line.loop:.1f} | {line.server:.1f} | {1e6 / line.server:,.0f} |")
    out += ["", "| gateway - bare | in a loop, µs | in a server, µs | server ÷ loop |", "|---|--:|--:|--:|"]
    for model in MODELS:
        loop = lines["gateway", model].loop - lines["bare", model].loop
        server = lines["gateway", model].server - lines["bare", model].server
        out.append(f"| {model} | {loop:.1f} | {server:.1f} | {server / loop:.2f}x |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3000, help="requests per round in the loop")
    parser.add_argument(
        "--seconds", type=float, default=6.0, help="measured seconds per server run (whole seconds: wrk's unit)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds of load first (whole seconds)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--serve", nargs=4, metavar=("APP", "MODEL", "WORKDIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        app, model, workdir, port = args.serve
        serve(app, model, Path(workdir), int(port))
        return 0
    import pickle

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as folder:
        workdir = Path(folder)
        prepared = prepare(workdir / "prepared")
        (workdir / "prepared.pickle").write_bytes(pickle.dumps(prepared))
        script = lua_script("/v2/models/fraud/infer", bodies(prepared.rows), workdir)
        reqs = requests(prepared)
        lines = {(app, model): Line(app, model, [], []) for app in APPS for model in MODELS}
        for _round in range(args.rounds):  # interleaved, so drifting load hits every line alike
            for (app, model), line in lines.items():
                asgi, gateway = build(app, model, prepared)
                line.loop_us.append(asyncio.run(in_loop(asgi, gateway, reqs, args.calls)))
                line.server_us.append(in_server(app, model, workdir, script, args.seconds, args.warmup))
                print(
                    f"round {_round + 1}: {app}, {model}: {line.loop_us[-1]:.1f} µs in a loop, "
                    f"{line.server_us[-1]:.1f} µs in a server",
                    file=sys.stderr,
                )
    text = table(lines)
    print(text)
    record = {
        **run_header("bench.gateway.overhead", argv, started),
        "rounds": args.rounds,
        "calls": args.calls,
        "server_seconds": args.seconds,
        "lines": [
            {"app": line.app, "model": line.model, "loop_us": line.loop_us, "server_us": line.server_us}
            for line in lines.values()
        ],
    }
    write_record(args.results_dir, "overhead", record, args.json, table=text, table_also=args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
