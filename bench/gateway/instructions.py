"""``python -m bench.gateway.instructions``: the CPU instructions a request costs the bare app and
the gateway, counted by valgrind's callgrind: the same count run after run, where a timing on
these shared VMs swings by 1.7x between minutes (docs/gateway-benchmark.md, "Instructions a
request").

    apt-get install -y valgrind
    python -m bench.gateway.instructions --requests 2000 [--against OTHER_SRC] \\
        --json bench/results/instructions-latest.json --markdown bench/results/instructions-latest.md

The apps and models are those of ``bench.gateway.overhead`` (the bare app of setup 1, the gateway
of setup 2, each with the benchmark's scikit-learn model and with a no-op one), called in a loop
with the benchmark's 500 requests, no server: each line runs in a process of its own under
callgrind with counting off while it imports, loads and warms up (1,500 requests), then counts
``--requests`` requests. ``--against`` counts the gateway's lines a second time with the
``modelcanary`` package of another source tree first on the path (a checkout of an earlier commit's
``src``), for a before and after in one run. An instruction count says nothing about caches or the
server (``bench.gateway.overhead`` times those); it says which change removes work.

``--in-server SECONDS`` counts each line a second way: served by uvicorn (the server process of
``bench.gateway.overhead``) under wrk's 32 connections, counting off while it starts and while
wrk warms it for 10 s, then counting SECONDS of load, divided by the requests wrk saw answered.
That adds the server's own work (HTTP parsing, the event loop) and the gateway's work on a clock
(its telemetry flush, once a second), which under callgrind, some 20-50 times slower, falls on
that many times fewer requests: the gateway's line there overstates that part of its work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.gateway import run_header, servers, write_record
from bench.gateway.overhead import APPS, MODELS, RESULTS, build, call, check_answered, requests

WARM = 1_500


@dataclass(frozen=True)
class Line:
    tree: str  # "this" or the --against source tree
    app: str
    model: str
    instructions: int  # counted over ``requests`` requests
    requests: int
    where: str = "loop"  # or "server": uvicorn under wrk (``--in-server``)

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


async def _child(app: str, model: str, prepared_path: Path, count: int, go: Path) -> None:
    """The counted process: warm up with counting off, say so, wait for the go file (counting is on
    by then), answer ``count`` requests, and leave at once (no teardown counted)."""
    prepared = pickle.loads(prepared_path.read_bytes())
    asgi, gateway = build(app, model, prepared)
    reqs = requests(prepared)
    if gateway is not None:
        await gateway.refresh()
    sent: list[dict[str, object]] = []
    for index in range(WARM):
        await call(asgi, *reqs[index % len(reqs)], sent)
    sent.clear()
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.01)
    for index in range(count):
        await call(asgi, *reqs[index % len(reqs)], sent)
    check_answered(sent)
    sys.stdout.flush()
    os._exit(0)


def _total(out: Path) -> int:
    """The instructions a callgrind output file counts (its ``summary:`` or ``totals:`` line)."""
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{out} has no totals")


def count(app: str, model: str, prepared_path: Path, requests_n: int, folder: Path, source: Path | None) -> int:
    """Instructions of ``requests_n`` requests to ``app`` with ``model``, in a process of its own."""
    tag = f"{app}-{model}-{'other' if source else 'this'}"
    folder.mkdir(parents=True, exist_ok=True)
    out, go = folder / f"callgrind-{tag}.out", folder / f"go-{tag}"
    path = [str(source)] if source is not None else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, servers.python_path()])}
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bench.gateway.instructions",
        "--child",
        app,
        model,
        str(prepared_path),
        str(requests_n),
        str(go),
    ]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert child.stdout is not None
    try:
        for line in child.stdout:  # whatever a library prints while loading comes first
            if line.strip() == "ready":
                break
        else:
            raise RuntimeError(f"{tag}: the counted process did not start (exit {child.wait()})")
        subprocess.run(["callgrind_control", "-i", "on", str(child.pid)], check=True, capture_output=True)
        go.touch()
        if child.wait(timeout=600) != 0:
            raise RuntimeError(f"{tag}: the counted process failed (exit {child.returncode})")
    finally:
        if child.poll() is None:
            child.kill()
    return _total(out)


def count_in_server(app: str, model: str, folder: Path, seconds: int, source: Path | None) -> tuple[int, int]:
    """Instructions and requests of ``app`` with ``model`` served by uvicorn (the process of
    ``bench.gateway.overhead --serve``) under wrk's 32 connections for ``seconds``, counted from
    after a warm-up of wrk's load; the process started and warmed with counting off."""
    from bench.gateway.load import bodies, lua_script, wrk

    tag = f"server-{app}-{model}-{'other' if source else 'this'}"
    prepared = pickle.loads((folder / "prepared.pickle").read_bytes())
    script = lua_script("/v2/models/fraud/infer", bodies(prepared.rows), folder)
    out, port = folder / f"callgrind-{tag}.out", servers.free_port()
    path = [str(source)] if source is not None else []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*path, servers.python_path()]),
        "MODELCANARY_WORKDIR": "",
        "MODELCANARY_STORE": "",
    }
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    command += [sys.executable, "-m", "bench.gateway.overhead", "--serve", app, model, str(folder), str(port)]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5).close()
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{tag}: the counted server did not start (exit {child.poll()})") from None
                time.sleep(1)
        wrk(url, script, connections=32, seconds=10)  # warm, uncounted
        subprocess.run(["callgrind_control", "-i", "on", str(child.pid)], check=True, capture_output=True)
        load = wrk(url, script, connections=32, seconds=seconds)
        subprocess.run(["callgrind_control", "-d", str(child.pid)], check=True, capture_output=True)
    finally:
        child.kill()
        child.wait()
    if load.errors:
        raise RuntimeError(f"{tag}: {load.errors} failed requests")
    (dump,) = folder.glob(f"callgrind-{tag}.out.*")  # the dump callgrind_control -d asked for
    return _total(dump), load.requests


def table(lines: list[Line]) -> str:
    out = ["| where | tree | app | model | instructions a request |", "|---|---|---|---|--:|"]
    out += [f"| {line.where} | {line.tree} | {line.app} | {line.model} | {line.per_request:,.0f} |" for line in lines]
    by = {(line.where, line.tree, line.app, line.model): line.per_request for line in lines}
    out += ["", "| where | tree | model | gateway - bare | gateway ÷ bare |", "|---|---|---|--:|--:|"]
    for where, tree in dict.fromkeys((line.where, line.tree) for line in lines):
        for model in MODELS:
            gateway, bare = by[where, tree, "gateway", model], by[where, "this", "bare", model]
            out.append(f"| {where} | {tree} | {model} | {gateway - bare:,.0f} | {gateway / bare:.3f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway.instructions", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--requests", type=int, default=2_000, help="requests counted a line")
    parser.add_argument("--against", type=Path, help="another tree's src: its gateway counted too")
    parser.add_argument(
        "--in-server",
        type=int,
        metavar="SECONDS",
        help="also count each line in a server (uvicorn under wrk) for SECONDS of load",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        app, model, prepared_path, count_n, go = args.child
        asyncio.run(_child(app, model, Path(prepared_path), int(count_n), Path(go)))
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed: apt-get install -y valgrind", file=sys.stderr)
        return 2
    from bench.gateway.model import prepare

    started = time.time()
    lines: list[Line] = []
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as name:
        folder = Path(name)
        prepared_path = folder / "prepared.pickle"
        prepared_path.write_bytes(pickle.dumps(prepare(folder / "prepared")))
        trees: list[tuple[str, Path | None]] = [("this", None)]
        if args.against is not None:
            trees.append((str(args.against), args.against.resolve()))
        for tree, source in trees:
            for app in APPS if source is None else ("gateway",):
                for model in MODELS:
                    total = count(app, model, prepared_path, args.requests, folder, source)
                    lines.append(Line(tree, app, model, total, args.requests))
                    print(f"{tree}: {app}, {model}: {lines[-1].per_request:,.0f} a request", file=sys.stderr)
                    if args.in_server:
                        total, served = count_in_server(app, model, folder, args.in_server, source)
                        lines.append(Line(tree, app, model, total, served, where="server"))
                        print(f"  in a server: {lines[-1].per_request:,.0f} a request", file=sys.stderr)
    text = table(lines)
    print(text)
    record = {
        **run_header("bench.gateway.instructions", argv, started),
        "requests": args.requests,
        "warm_requests": WARM,
        "lines": [
            {
                "where": x.where,
                "tree": x.tree,
                "app": x.app,
                "model": x.model,
                "instructions": x.instructions,
                "requests": x.requests,
            }
            for x in lines
        ],
    }
    write_record(args.results_dir, "instructions", record, args.json, table=text, table_also=args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
