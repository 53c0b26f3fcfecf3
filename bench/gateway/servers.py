"""Starting and stopping each server as its own process group, and the separate venv that holds
MLServer and Ray Serve (neither is a project dependency): ``bench/.venv-servers/{mlserver,ray}``,
made on demand with pip, git-ignored."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.gateway.load import wait_ready

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SERVER_VENVS = HERE.parent / ".venv-servers"
# with the pins of ``_pins``
SERVER_PACKAGES = {
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1"],
    "ray": ["ray[serve]", "orjson"],
}


class NotRun(Exception):
    """A setup that cannot run here, and why (reported as such, never faked)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    url: str  # the infer URL the load generator posts to
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self.processes.clear()


def spawn(
    command: list[str], log: Path, *, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.Popen[Any]:
    return subprocess.Popen(
        command,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})},
        start_new_session=True,  # its own process group: stop() ends it and whatever it started
    )


def start(
    name: str,
    command: list[str],
    ready_url: str,
    infer_url: str,
    folder: Path,
    *,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout_s: float = 180.0,
) -> Server:
    log = folder / f"{name}.log"
    process = spawn(command, log, cwd=cwd, env=env)
    server = Server(name, infer_url, [process], [log])
    try:
        wait_ready(ready_url, process=process, timeout_s=timeout_s)
    except RuntimeError as exc:
        server.stop()
        raise NotRun(f"{exc}; log tail: {log.read_text()[-600:]!r}") from exc
    return server


def venv_python(kind: str) -> Path:
    return SERVER_VENVS / kind / "bin" / "python"


def _pins() -> list[str]:
    """What every server venv shares with the project's: scikit-learn and numpy, so the joblib
    pickle loads the same model everywhere, and uvloop, so every server runs on the same event loop
    (MLServer 1.7.1's inference workers also need uvloop < 0.22: with 0.22 they fail to start)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("scikit-learn", "numpy", "uvloop")]


def _ready(python: Path, kind: str) -> bool:
    """Whether the venv has ``kind`` and the project's pins."""
    if not python.exists():
        return False
    pins = dict(pin.split("==") for pin in _pins())
    check = f"import {kind}, importlib.metadata as m; assert all(m.version(p) == v for p, v in {pins!r}.items())"
    return subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0


def setup_venv(kind: str) -> Path:
    """Make (once) the venv for ``kind`` and install its server into it, with the project's pins
    (again, where an older venv has other versions of them)."""
    python = venv_python(kind)
    if _ready(python, kind):
        return python
    base = getattr(sys, "_base_executable", sys.executable)
    if not python.exists():
        subprocess.run([base, "-m", "venv", str(SERVER_VENVS / kind)], check=True)
    pins = _pins()
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *SERVER_PACKAGES[kind], *pins], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise NotRun(f"pip could not install {kind}: {done.stderr.strip()[-400:]}")
    return python


def server_python(kind: str, *, install: bool) -> Path:
    python = venv_python(kind)
    if _ready(python, kind):
        return python
    if not install:
        raise NotRun(f"{kind} is not installed in {SERVER_VENVS / kind} (run with --setup-servers)")
    return setup_venv(kind)


# -- the servers ---------------------------------------------------------------------------------


def bare(joblib_path: Path, folder: Path, *, hello: bool = False, granian: bool = False) -> Server:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "bench.gateway.bare_app", str(joblib_path), str(port)]
    command += (["hello"] if hello else []) + (["granian"] if granian else [])
    name = ("hello" if hello else "bare") + ("-granian" if granian else "")
    return start(name, command, f"{base}/", f"{base}/v2/models/fraud/infer", folder)


def python_path() -> str:
    return str(ROOT)  # bench/ is a top-level package beside src/


def gateway(
    store_url: str | None,
    registry_uri: str,
    folder: Path,
    *,
    name: str = "gateway",
    extra: list[str] | None = None,
) -> Server:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "modelcanary", "gateway", "--registry", registry_uri, "--port", str(port)]
    command += ["--store", store_url] if store_url else []
    command += extra or []
    workdir = folder / f"{name}-cwd"  # no store unless given: nothing in the environment names one
    workdir.mkdir(exist_ok=True)
    env = {"MODELCANARY_WORKDIR": "", "MODELCANARY_STORE": "", "PYTHONPATH": python_path()}
    return start(
        name, command, f"{base}/v2/health/ready", f"{base}/v2/models/fraud/infer", folder, cwd=workdir, env=env
    )


def mlserver(
    joblib_path: Path, folder: Path, *, install: bool, adaptive_batching: bool = False, parallel_workers: int = 0
) -> Server:
    python = server_python("mlserver", install=install)
    name = ("mlserver-batching" if adaptive_batching else "mlserver") + f"-w{parallel_workers}"
    root = folder / name
    (root / "fraud").mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "host": "127.0.0.1",
        "parallel_workers": parallel_workers,  # 0: inference in the server process
        "debug": False,
    }
    (root / "settings.json").write_text(json.dumps(settings))
    model: dict[str, Any] = {
        "name": "fraud",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(joblib_path), "version": "v1"},
    }
    if adaptive_batching:
        model |= {"max_batch_size": 64, "max_batch_time": 0.002}
    (root / "fraud" / "model-settings.json").write_text(json.dumps(model))
    base = f"http://127.0.0.1:{port}"
    command = [str(python.parent / "mlserver"), "start", str(root)]
    return start(name, command, f"{base}/v2/models/fraud/ready", f"{base}/v2/models/fraud/infer", folder, cwd=root)


def ray_serve(joblib_path: Path, folder: Path, *, install: bool, max_ongoing: int | None = None) -> Server:
    """Ray Serve with its defaults, or with the replica's ``max_ongoing_requests`` set."""
    python = server_python("ray", install=install)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(python), str(HERE / "ray_app.py"), str(joblib_path), str(port)]
    command += [str(max_ongoing)] if max_ongoing else []
    env = {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": ""}
    name = f"ray-{max_ongoing}" if max_ongoing else "ray"
    return start(name, command, f"{base}/", f"{base}/v2/models/fraud/infer", folder, env=env)


def wait_free(seconds: float = 1.0) -> None:
    """A breath between setups, so one's exit is not the next one's noise."""
    time.sleep(seconds)
