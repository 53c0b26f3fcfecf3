"""The setups, one small function each. A setup starts its server(s), warms them, puts load on
them and stops them, returning one or more measured rows; one that cannot run here raises
``NotRun`` with the reason, which the table shows in place of figures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench.gateway import servers
from bench.gateway.load import Load, bodies, lua_script, paced, wrk
from bench.gateway.model import Prepared, prepare
from bench.gateway.servers import NotRun, Server


@dataclass
class Context:
    prepared: Prepared
    folder: Path
    seconds: float
    connections: int
    warmup_s: float
    install: bool  # may a missing server venv be made now?
    bare_rps: list[float] = field(default_factory=list)  # setup (1)'s throughput, each round so far
    gateway_rps: list[float] = field(default_factory=list)  # setup (2)'s
    notes: dict[str, str] = field(default_factory=dict)  # label -> how it was run, for the record
    boosted: Prepared | None = None  # setup 4's heavier model, made when it first runs

    def heavier(self) -> Prepared:
        if self.boosted is None:
            self.boosted = prepare(self.folder / "work-boosted", kind="boosted")
        return self.boosted

    def script(self, path: str = "/v2/models/fraud/infer", outputs: list[str] | None = None) -> Path:
        return lua_script(path, bodies(self.prepared.rows, outputs=outputs), self.folder)

    def closed(self, server: Server, *, connections: int | None = None, outputs: list[str] | None = None) -> Load:
        """Warm up, then the measured wrk run."""
        script = self.script(outputs=outputs)
        if self.warmup_s > 0:
            wrk(server.url, script, connections=connections or self.connections, seconds=self.warmup_s)
        return wrk(server.url, script, connections=connections or self.connections, seconds=self.seconds)

    def open(self, server: Server, rate: float) -> Load:
        payloads = bodies(self.prepared.rows)
        if self.warmup_s > 0:
            paced(
                server.url, payloads, rate=rate, seconds=self.warmup_s, connections=self.connections, folder=self.folder
            )
        return paced(
            server.url, payloads, rate=rate, seconds=self.seconds, connections=self.connections, folder=self.folder
        )


Rows = dict[str, Load]  # row label -> what was measured
BATCHING = ["--batch-max-size", "64", "--batch-max-wait-us", "500"]
PROBA = ["predict_proba"]  # MLServer's sklearn runtime returns labels unless asked for this


def _running(server: Server, measure: Callable[[Server], Rows]) -> Rows:
    try:
        return measure(server)
    finally:
        server.stop()


def hello(ctx: Context) -> Rows:
    """(0) the same uvicorn app answering a constant: how far the load generator and the HTTP
    stack go on this machine, so that no figure below is the generator's limit."""
    server = servers.bare(ctx.prepared.joblib_path, ctx.folder, hello=True)
    return _running(server, lambda s: {"0 ceiling: uvicorn hello, no model": ctx.closed(s)})


def bare(ctx: Context) -> Rows:
    """(1) the bare uvicorn app calling the model; and 1g, the same app on granian over RSGI, as
    ``modelcanary gateway --server granian`` is served: what that server alone is worth."""
    rows = _running(
        servers.bare(ctx.prepared.joblib_path, ctx.folder), lambda s: {"1 bare uvicorn + model": ctx.closed(s)}
    )
    ctx.bare_rps.append(rows["1 bare uvicorn + model"].rps)
    granian = servers.bare(ctx.prepared.joblib_path, ctx.folder, granian=True)
    return rows | _running(granian, lambda s: {"1g bare app on granian (RSGI) + model": ctx.closed(s)})


def _gateway(ctx: Context, *, name: str = "gateway", extra: list[str] | None = None) -> Server:
    return servers.gateway(ctx.prepared.store_url, ctx.prepared.registry_uri, ctx.folder, name=name, extra=extra)


def gateway(ctx: Context) -> Rows:
    """(2) ``modelcanary gateway`` following a store with a rollout at 50%, sticky keys, telemetry on;
    and 2g, the same on granian (``--server granian``), for reference."""
    rows = _running(_gateway(ctx), lambda s: {"2 gateway 50/50 sticky": ctx.closed(s)})
    ctx.gateway_rps.append(rows["2 gateway 50/50 sticky"].rps)
    granian = _gateway(ctx, name="gateway-granian", extra=["--server", "granian"])
    return rows | _running(granian, lambda s: {"2g gateway 50/50 sticky on granian (--server granian)": ctx.closed(s)})


def shadow(ctx: Context) -> Rows:
    """(3) (2) with a 100% shadow lane, and (2) alone, both at one fixed offered load, open loop:
    half (1)'s throughput this round, or half (2)'s if the gateway cannot carry that (then both
    would only queue, and their p99 would be the queue's, not the shadow lane's cost)."""
    if not ctx.bare_rps:
        raise NotRun("needs setup 1's throughput first")
    rate = ctx.bare_rps[-1] / 2
    why = "half of (1)'s throughput"
    if ctx.gateway_rps and ctx.gateway_rps[-1] < rate:
        rate, why = ctx.gateway_rps[-1] / 2, "half of (2)'s throughput: half of (1)'s is more than the gateway carries"
    for label in ("3a gateway 50/50, paced", "3b + 100% shadow lane, paced"):
        ctx.notes[label] = f"offered {why}"
    stores = _shadow_stores(ctx)
    pairs = [("3a gateway 50/50, paced", stores[0]), ("3b + 100% shadow lane, paced", stores[1])]
    if len(ctx.bare_rps) % 2 == 0:  # every other round 3b first: neither always gets the later slot
        pairs.reverse()
    rows: Rows = {}
    for label, store_url in pairs:
        name = "gateway-" + label[:2]
        server = servers.gateway(store_url, ctx.prepared.registry_uri, ctx.folder, name=name)
        rows |= _running(server, partial(_paced, ctx, label=label, rate=rate))
    return rows


def _paced(ctx: Context, server: Server, label: str, rate: float) -> Rows:
    cpu_s, (live, _, _) = _cpu_s(server), _tally(server)
    rows = {label: ctx.open(server, rate)}
    cpu_s, (live, done, shed) = _cpu_s(server) - cpu_s, _tally(server, since=live)
    # the gateway's CPU time over the live requests it served (warm-up included): what the lane
    # costs it, where p99 on this machine is set by its stalls (docs/gateway-benchmark.md)
    key = f"{label[:2]} gateway CPU µs per live request, per round"
    ctx.notes[key] = ctx.notes.get(key, "") + f"{cpu_s / max(live, 1) * 1e6:,.1f}; "
    if label.startswith("3b"):  # what the lane did with the copies it was given (warm-up included)
        key = "3b shadow copies predicted / shed, per round"
        ctx.notes[key] = ctx.notes.get(key, "") + f"{done:,.0f} / {shed:,.0f}; "
    return rows


def _cpu_s(server: Server) -> float:
    """The CPU time (user and system) the server's processes have used, from ``/proc``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in server.pids():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _tally(server: Server, since: float = 0.0) -> tuple[float, float, float]:
    """The gateway's live requests (less ``since``), shadow-lane requests and shed copies, from its
    ``/metrics``."""
    import urllib.request

    base = server.url.split("/v2/")[0]
    live = done = shed = 0.0
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("modelcanary_requests_total{"):
                if 'lane="shadow"' in line:
                    done += float(line.rsplit(" ", 1)[1])
                else:
                    live += float(line.rsplit(" ", 1)[1])
            elif line.startswith("modelcanary_shadow_shed_total{"):
                shed += float(line.rsplit(" ", 1)[1])
    return live - since, done, shed


def _shadow_stores(ctx: Context) -> tuple[str, str]:
    """Two fresh stores (made once): a rollout at 50%, and the same with ``shadow: {sample: 1.0}``."""
    urls = (f"sqlite:///{ctx.folder / 'shadow-off.db'}", f"sqlite:///{ctx.folder / 'shadow-on.db'}")
    if not (ctx.folder / "shadow-on.db").exists():
        env = {**os.environ, "PYTHONPATH": servers.python_path()}
        for url, extra in zip(urls, ([], ["shadow"]), strict=True):
            command = [sys.executable, "-m", "bench.gateway.model", url, ctx.prepared.registry_uri, *extra]
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=servers.ROOT, check=False)
            if done.returncode != 0:
                tail = done.stderr.strip()[-600:]
                raise NotRun(f"feature missing: cannot start a rollout with a shadow lane here ({tail})")
    return urls


def batching(ctx: Context) -> Rows:
    """(4) dynamic batching against none, at 64 connections: the gateway of (2), then the same with
    ``--batch-max-size 64 --batch-max-wait-us 500``; 4c and 4d the same on a model of 200 boosted
    trees, whose call costs more than its request's HTTP (MEASUREMENTS.md: batching the light model
    gains little, since HTTP and JSON are most of its request)."""
    rows: Rows = {}
    boosted = ctx.heavier()
    for label, extra, prepared in (
        ("4a gateway unbatched, 64 conns", [], ctx.prepared),
        ("4b gateway batched, 64 conns", BATCHING, ctx.prepared),
        ("4c gateway unbatched, 64 conns, boosted trees", [], boosted),
        ("4d gateway batched, 64 conns, boosted trees", BATCHING, boosted),
    ):

        def measure(s: Server, label: str = label) -> Rows:
            return {label: ctx.closed(s, connections=64)}

        server = servers.gateway(prepared.store_url, prepared.registry_uri, ctx.folder, name=label[:2], extra=extra)
        rows |= _running(server, measure)
    return rows


def mlserver(ctx: Context) -> Rows:
    """(5) MLServer 1.7, sklearn runtime, V2; with and without its adaptive batching."""
    rows: Rows = {}
    path = ctx.prepared.joblib_path
    rows |= _running(
        servers.mlserver(path, ctx.folder, install=ctx.install), lambda s: {"5 MLServer": ctx.closed(s, outputs=PROBA)}
    )
    server = servers.mlserver(path, ctx.folder, install=ctx.install, adaptive_batching=True)
    rows |= _running(server, lambda s: {"5b MLServer adaptive batching": ctx.closed(s, outputs=PROBA)})
    return rows


RAY_MAX_ONGOING = 64  # at least the connections of every closed-loop setup, so Ray's router never holds one


def ray(ctx: Context) -> Rows:
    """(6) Ray Serve, default settings; (6b) with the replica's ``max_ongoing_requests`` above the
    connection count. Ray's default of 5 makes its router hold and retry the other 27 of the 32
    connections' requests with backoff (bench/gateway/ray_app.py), so (6) alone would compare the
    gateway with a Ray Serve no one would run at this load."""
    rows: Rows = {}
    path = ctx.prepared.joblib_path
    rows |= _running(servers.ray_serve(path, ctx.folder, install=ctx.install), lambda s: {"6 Ray Serve": ctx.closed(s)})
    server = servers.ray_serve(path, ctx.folder, install=ctx.install, max_ongoing=RAY_MAX_ONGOING)
    label = f"6b Ray Serve, max_ongoing_requests {RAY_MAX_ONGOING}"
    rows |= _running(server, lambda s: {label: ctx.closed(s)})
    return rows


def remote(ctx: Context) -> Rows:
    """(7) the gateway forwarding to a remote V2 server, against the client calling it directly.
    The remote server is the bare app of (1) (the fastest V2 server here, so forwarding's own cost
    is what shows); the gateway serves it as a static endpoint (``--endpoint
    fraud=v2+http://HOST:PORT/models/fraud``), no store."""
    rows: Rows = {}
    server = servers.bare(ctx.prepared.joblib_path, ctx.folder)
    try:
        rows["7a direct to the V2 server"] = ctx.closed(server)
        base = server.url.removesuffix("/v2/models/fraud/infer")
        extra = ["--endpoint", f"fraud=v2+{base}/models/fraud"]
        forwarding = servers.gateway(None, ctx.prepared.registry_uri, ctx.folder, name="gateway-remote", extra=extra)
        rows |= _running(forwarding, lambda s: {"7b via gateway to the V2 server": ctx.closed(s)})
    finally:
        server.stop()
    return rows


SETUPS: dict[str, Callable[[Context], Rows]] = {
    "0": hello,
    "1": bare,
    "2": gateway,
    "3": shadow,
    "4": batching,
    "5": mlserver,
    "6": ray,
    "7": remote,
}
