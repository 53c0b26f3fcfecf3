"""What the CLI tests share: a target to run commands on, either a local work folder or the control
API served by a real uvicorn server on loopback over a SQLite store and the session's MLflow
registry. (A module, not a conftest.py: pytest's doctest collection imports every conftest.py as
``conftest``, and one in a folder that sorts before ``tests/conftest.py`` clashes with it.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from click.testing import CliRunner, Result

from modelcanary.cli.main import cli

if TYPE_CHECKING:
    from modelcanary.adapters.store.sql import SqlStore

START_TIMEOUT_S = 30.0


@dataclass
class Target:
    """Where the CLI acts: ``run(*args)`` adds ``--workdir``/``--registry`` locally, or ``--server
    URL --token TOKEN`` remotely. ``store`` is the same store, opened here, for the test's own
    setup (a controller tick) and checks."""

    kind: str
    store: SqlStore
    registry_uri: str
    actor: str
    options: list[str]
    env: dict[str, str | None] = field(default_factory=dict)
    server: str | None = None

    def run(self, *args: str, env: dict[str, str | None] | None = None) -> Result:
        return CliRunner().invoke(cli, [*args, *self.options], env={**self.env, **(env or {})})


def serve_app(app: Any) -> tuple[str, Any, threading.Thread]:
    """Serve an ASGI app on a free loopback port in a background thread; its URL, server and thread."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))

    def serve() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        finally:
            sock.close()

    thread = threading.Thread(target=serve, name=f"api-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the control API did not start")
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, thread


@contextlib.contextmanager
def running_api(workdir: Path, registry_uri: str) -> Iterator[tuple[str, SqlStore]]:
    """The control API on a fresh SQLite store in ``workdir``: its URL, and the store."""
    from modelcanary.adapters.registry.mlflow import MlflowRegistry
    from modelcanary.adapters.store.sql import SqlStore
    from modelcanary.api.app import create_api

    store = SqlStore(f"sqlite:///{workdir / 'server.db'}")
    url, server, thread = serve_app(create_api(store, MlflowRegistry(registry_uri)))
    try:
        yield url, store
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()


def new_token(store: SqlStore, name: str, role: str, endpoints: list[str] | None = None) -> str:
    from modelcanary.domain.access import Role

    _info, secret = store.create_token(name=name, role=Role(role), endpoints=endpoints, actor="test")
    return secret


@contextlib.contextmanager
def target_for(kind: str, workdir: Path, registry_uri: str) -> Iterator[Target]:
    """The same commands, on a local work folder (``local``) or through a control API (``remote``)."""
    from modelcanary.cli.workspace import Workspace

    # keep the caller's environment from choosing for the test
    clean: dict[str, str | None] = {name: None for name in os.environ if name.startswith("MODELCANARY_")}
    if kind == "local":
        clean.update(LOGNAME="tester", USER="tester")  # who a local command is audited as
        store = Workspace.at(workdir).store()
        try:
            yield Target(
                kind="local",
                store=store,
                registry_uri=registry_uri,
                actor="cli:tester",
                options=["--workdir", str(workdir), "--registry", registry_uri],
                env=clean,
            )
        finally:
            store.close()
        return
    with running_api(workdir, registry_uri) as (url, store):
        yield Target(
            kind="remote",
            store=store,
            registry_uri=registry_uri,
            actor="token:ci",
            options=["--server", url, "--token", new_token(store, "ci", "approver")],
            env=clean,
            server=url,
        )
