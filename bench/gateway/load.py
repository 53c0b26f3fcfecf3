"""The load generators. Every setup gets the same requests: one V2 infer body per row of the
model's input (one [1, 4] FP64 tensor), each with its own ``x-user-id`` sticky key. MLServer's
bodies also ask for the ``predict_proba`` output (what the others return anyway; the gateway
refuses an output it does not have, as the protocol says it should).

Closed loop: ``wrk`` (Debian's), a Lua script cycling through requests formatted once, results from
its ``done`` hook; its own CPU time is measured (``wait4``) so its share of the machine is on record.
Open loop at a fixed rate: ``paced.py`` in its own process, since wrk2 is not in Debian.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.gateway import STICKY_HEADER

LUA = """\
local bodies = {BODIES}
local path = "PATH"
local requests = {}
function init(args)
  for i = 1, #bodies do
    local headers = {["Content-Type"] = "application/json", ["HEADER"] = "user-" .. i}
    requests[i] = wrk.format("POST", path, headers, bodies[i])
  end
end
local i = 0
function request()
  i = i % #requests + 1
  return requests[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"mean_us": %f, "errors": %d, "non_2xx": %d}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def bodies(rows: np.ndarray, count: int = 500, *, outputs: list[str] | None = None) -> list[str]:
    out = []
    for index in range(min(count, len(rows))):
        body: dict[str, Any] = {
            "id": str(index),
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": rows[index].tolist()}],
        }
        if outputs:
            body["outputs"] = [{"name": name} for name in outputs]
        out.append(json.dumps(body, separators=(",", ":")))
    return out


def lua_script(path: str, payloads: list[str], folder: Path) -> Path:
    quoted = ",\n".join("[[" + payload + "]]" for payload in payloads)
    script = folder / f"wrk-{abs(hash((path, tuple(payloads))))}.lua"
    script.write_text(
        LUA.replace("{BODIES}", "{" + quoted + "}").replace("PATH", path).replace("HEADER", STICKY_HEADER)
    )
    return script


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors, timeouts and non-2xx answers together
    generator_cpu_s: float  # CPU the load generator itself used
    offered_rps: float | None = None  # open loop only

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def wrk(url: str, script: Path, *, connections: int, seconds: float, threads: int = 1) -> Load:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script), url]
    before = _children_cpu()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate(timeout=seconds + 60)
    usage = _children_cpu() - before
    line = next((line for line in stdout.splitlines() if line.startswith("WRK_RESULT ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.strip() or stdout.strip()}")
    result = json.loads(line.removeprefix("WRK_RESULT "))
    duration = result["duration_us"] / 1e6
    return Load(
        requests=result["requests"],
        seconds=duration,
        rps=result["requests"] / duration,
        p50_ms=result["p50_us"] / 1e3,
        p99_ms=result["p99_us"] / 1e3,
        errors=result["errors"] + result["non_2xx"],
        generator_cpu_s=usage,
    )


def _children_cpu() -> float:
    """CPU seconds of every reaped child so far: around one generator run (during which no server
    stops), its difference is that generator's own CPU time."""
    times = os.times()
    return times.children_user + times.children_system


def paced(url: str, payloads: list[str], *, rate: float, seconds: float, connections: int, folder: Path) -> Load:
    """Open-loop load at ``rate`` requests a second from ``paced.py`` in its own process."""
    source = folder / "paced-bodies.json"
    source.write_text(json.dumps(payloads))
    command = [
        sys.executable,
        "-m",
        "bench.gateway.paced",
        url,
        str(rate),
        str(seconds),
        str(connections),
        str(source),
    ]
    root = Path(__file__).resolve().parents[2]
    before = _children_cpu()
    process = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    usage = _children_cpu() - before
    if process.returncode != 0:
        raise RuntimeError(f"paced load failed: {process.stderr.strip()[-2000:]}")
    result = json.loads(process.stdout.strip().splitlines()[-1])
    return Load(
        requests=result["requests"],
        seconds=result["seconds"],
        rps=result["requests"] / result["seconds"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        errors=result["errors"],
        generator_cpu_s=usage,
        offered_rps=rate,
    )


def wait_ready(url: str, *, timeout_s: float = 120.0, process: subprocess.Popen[Any] | None = None) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s ({last})")
