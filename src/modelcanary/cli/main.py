"""The ``modelcanary`` command line."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from modelcanary.cli.workspace import Workspace
from modelcanary.domain.errors import ModelcanaryError

F = TypeVar("F", bound=Callable[..., Any])


def _workspace_options(fn: F) -> F:
    fn = click.option("--registry", help="MLflow registry URI (default: sqlite in the work folder)")(fn)
    fn = click.option("--store", help="store URL (default: sqlite in the work folder)")(fn)
    return click.option(
        "--workdir",
        type=click.Path(file_okay=False),
        help="work folder [default: $MODELCANARY_WORKDIR or ./.modelcanary]",
    )(fn)


def _errors_to_exit(fn: F) -> F:
    """Known errors become one clear message and exit code 2, not a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ModelcanaryError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log what the gateway and controller do")
def cli(verbose: bool) -> None:
    """modelcanary: canary rollouts for ML models, judged on live traffic."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@cli.command()
@_workspace_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--tick", default=1.0, show_default=True, type=float, help="seconds between controller ticks")
@_errors_to_exit
def serve(workdir: str | None, store: str | None, registry: str | None, host: str, port: int, tick: float) -> None:
    """Run the gateway and the controller in one process (the embedded default)."""
    import uvicorn

    from modelcanary.adapters.backends.refs import default_backend
    from modelcanary.controller.loop import Controller
    from modelcanary.gateway.app import Gateway, create_app

    space = Workspace.at(workdir, store=store, registry=registry)
    state_store, model_registry = space.store(), space.registry()
    gateway = Gateway(
        routes=state_store,
        backend=default_backend(),
        telemetry=state_store,
        source=f"{socket.gethostname()}-{os.getpid()}",
    )
    controller = Controller(store=state_store, registry=model_registry, holder=_holder())
    app = create_app(gateway, background=[lambda: controller.run(interval_s=tick)])
    click.echo(f"modelcanary serving on http://{host}:{port} (work folder {space.workdir})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@cli.command("gateway")
@_workspace_options
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    metavar="NAME=MODEL_REF",
    help="serve MODEL_REF (models:/fraud@champion, v2+http://HOST:PORT/models/NAME, ray://APP/DEPLOYMENT) "
    "as endpoint NAME with no rollout; repeatable",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--max-body-bytes", default=8 * 1024 * 1024, show_default=True, type=click.IntRange(1))
@click.option("--max-rows", default=10_000, show_default=True, type=click.IntRange(1), help="rows per request")
@click.option(
    "--batch-max-size",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="batch concurrent requests to in-process models, up to this many rows per predict call (0: off)",
)
@click.option(
    "--batch-max-wait-us",
    default=500,
    show_default=True,
    type=click.IntRange(0),
    help="how long (microseconds) a batch's first request waits for others",
)
@_errors_to_exit
def gateway_command(
    workdir: str | None,
    store: str | None,
    registry: str | None,
    endpoints: tuple[str, ...],
    host: str,
    port: int,
    max_body_bytes: int,
    max_rows: int,
    batch_max_size: int,
    batch_max_wait_us: int,
) -> None:
    """Run a gateway on its own: the data plane, with no controller. It serves each --endpoint,
    and, given a store (--store or --workdir), follows the store's routing table (rollouts take
    over their endpoints) and writes its telemetry there. Run as many as you like behind a load
    balancer; the controller adds their telemetry up."""
    import uvicorn

    from modelcanary.adapters.backends.refs import default_backend
    from modelcanary.domain.state import Route, remote_version
    from modelcanary.gateway.app import Gateway, StaticRoutes, create_app

    space = Workspace.at(workdir, store=store, registry=registry)
    model_registry = space.registry()
    static = {}
    for entry in endpoints:
        name, _, uri = entry.partition("=")
        if not name or not uri:
            raise click.BadParameter(f"expected NAME=MODEL_REF, got {entry!r}", param_hint="'--endpoint'")
        try:
            remote = remote_version(uri)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--endpoint'") from exc
        static[name] = Route(endpoint=name, baseline=remote or model_registry.resolve(uri))
    given = store or workdir or os.environ.get("MODELCANARY_STORE") or os.environ.get("MODELCANARY_WORKDIR")
    state_store = space.store() if given else None
    if state_store is None and not static:
        raise click.UsageError("give at least one --endpoint, or a store (--store or --workdir) to follow")
    batching = None
    if batch_max_size > 0:
        from modelcanary.adapters.backends.batching import BatchSettings

        batching = BatchSettings(max_batch_size=batch_max_size, max_wait_us=batch_max_wait_us)
    gateway = Gateway(
        routes=StaticRoutes(static, state_store),
        backend=default_backend(batching=batching),
        telemetry=state_store,
        source=_holder(),
        max_body_bytes=max_body_bytes,
        max_rows=max_rows,
    )
    where = f"following {space.store_url}" if state_store is not None else "no store"
    click.echo(
        f"modelcanary gateway on http://{host}:{port} ({where}; endpoints {sorted(static) or 'from the store'})",
        err=True,
    )
    uvicorn.run(create_app(gateway), host=host, port=port, log_level="warning", access_log=False)


@cli.command("controller")
@_workspace_options
@click.option("--tick", default=1.0, show_default=True, type=float, help="seconds between ticks")
@click.option(
    "--lease-ttl", default=10.0, show_default=True, type=float, help="seconds a silent leader keeps the lease"
)
@click.option("--name", help="this controller's name in the lease [default: host-pid]")
@_errors_to_exit
def controller_command(
    workdir: str | None, store: str | None, registry: str | None, tick: float, lease_ttl: float, name: str | None
) -> None:
    """Run a controller on its own, beside gateways that share its store. Several may run against
    one store: one leads at a time (a lease with a fencing token); if it dies another takes over
    within --lease-ttl seconds. SIGTERM or Ctrl-C hands the lease over at once."""
    import signal

    from modelcanary.controller.loop import Controller

    space = Workspace.at(workdir, store=store, registry=registry)
    controller = Controller(
        store=space.store(), registry=space.registry(), holder=name or _holder(), lease_ttl_s=lease_ttl
    )
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"controller {controller.holder} on {space.store_url}", err=True)
    while not stopping:
        try:
            controller.tick()
        except ModelcanaryError as exc:  # the store is unreachable, say: decide nothing until it is back
            logging.getLogger("modelcanary.controller").warning("tick failed, holding: %s", exc)
        deadline = time.monotonic() + tick
        while not stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, tick))
    controller.step_down()


@cli.group()
def audit() -> None:
    """Check and export the hash-chained audit log."""


@audit.command("verify")
@_workspace_options
@_errors_to_exit
def audit_verify(workdir: str | None, store: str | None, registry: str | None) -> None:
    """Recompute every event's hash in order. Exit 0 if the chain holds; 1 with the first broken
    link if any event was edited, deleted or reordered."""
    state_store = Workspace.at(workdir, store=store, registry=registry).store()
    count, broken = state_store.verify_audit()
    if broken is not None:
        click.echo(
            f"audit chain BROKEN at event id {broken.id} (position {broken.position} of {count}): {broken.reason}"
        )
        sys.exit(1)
    events = state_store.audit_events()
    head = events[-1]["hash"] if events else "(empty)"
    click.echo(f"audit chain verified: {count} events, head {head}")


@audit.command("export")
@_workspace_options
@click.option("--out", type=click.Path(dir_okay=False), help="write here instead of standard output")
@click.option("--rollout", "rollout_id", help="only this rollout's events")
@_errors_to_exit
def audit_export(
    workdir: str | None, store: str | None, registry: str | None, out: str | None, rollout_id: str | None
) -> None:
    """Every audit event as JSON Lines, oldest first, with its hashes. The last line's hash is the
    chain's head: keep it elsewhere to detect events cut off the end later."""
    events = Workspace.at(workdir, store=store, registry=registry).store().audit_events(rollout_id)
    lines = "".join(json.dumps(event, sort_keys=True) + "\n" for event in events)
    if out:
        Path(out).write_text(lines)
        click.echo(f"{len(events)} events to {out}; head {events[-1]['hash'] if events else '(empty)'}", err=True)
    else:
        click.echo(lines, nl=False)


@cli.group()
def rollout() -> None:
    """Start, inspect and steer rollouts."""


@rollout.command("start")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@_workspace_options
@_errors_to_exit
def rollout_start(spec: str, workdir: str | None, store: str | None, registry: str | None) -> None:
    """Validate SPEC, resolve its models and start the rollout; prints its id."""
    from modelcanary.controller.operations import start_rollout

    space = Workspace.at(workdir, store=store, registry=registry)
    state = start_rollout(space.store(), space.registry(), Path(spec).read_text(), source=spec, actor=_actor())
    click.echo(
        f"started {state.id}: {state.baseline.uri} -> {state.candidate.uri} on endpoint {state.endpoint}", err=True
    )
    click.echo(state.id)


@rollout.command("list")
@_workspace_options
@click.option("--json", "as_json", is_flag=True)
@_errors_to_exit
def rollout_list(workdir: str | None, store: str | None, registry: str | None, as_json: bool) -> None:
    """Every rollout, newest first."""
    from modelcanary.cli.views import rollouts_table

    states = Workspace.at(workdir, store=store, registry=registry).store().list_rollouts()
    if as_json:
        click.echo(json.dumps([state.model_dump(mode="json", exclude={"judge_memory"}) for state in states], indent=2))
    else:
        from rich.console import Console

        Console().print(rollouts_table(states))


@rollout.command("status")
@click.argument("rollout_id")
@_workspace_options
@click.option("--watch", is_flag=True, help="refresh until the rollout ends")
@click.option("--json", "as_json", is_flag=True)
@_errors_to_exit
def rollout_status(
    rollout_id: str, workdir: str | None, store: str | None, registry: str | None, watch: bool, as_json: bool
) -> None:
    """A rollout's phase, step, evidence per metric and history. Exit code 0 unless it rolled back
    or was aborted (1)."""
    from modelcanary.cli.views import status_view
    from modelcanary.controller.report import rollout_report

    state_store = Workspace.at(workdir, store=store, registry=registry).store()
    report = rollout_report(state_store, rollout_id)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    elif watch:
        from rich.live import Live

        with Live(status_view(report), refresh_per_second=4) as live:
            while not report.state.phase.is_terminal():
                time.sleep(0.5)
                report = rollout_report(state_store, rollout_id)
                live.update(status_view(report))
    else:
        from rich.console import Console

        Console().print(status_view(report))
    sys.exit(1 if report.state.phase.value in ("rolled_back", "aborted") else 0)


def _command(name: str, help_text: str) -> None:
    @rollout.command(name, help=help_text)
    @click.argument("rollout_id")
    @_workspace_options
    @_errors_to_exit
    def command(rollout_id: str, workdir: str | None, store: str | None, registry: str | None) -> None:
        from modelcanary.controller.operations import run_command
        from modelcanary.engine.decide import Command

        space = Workspace.at(workdir, store=store, registry=registry)
        state = run_command(space.store(), rollout_id, Command(name), actor=_actor())
        click.echo(f"{state.id}: {state.reason}")


_command("pause", "Hold the rollout where it is: no step advances until it is resumed.")
_command("resume", "Resume a paused rollout; the current step's clock starts again.")
_command("abort", "End the rollout now: all traffic back to the baseline.")


@cli.command()
@click.option(
    "--scenario",
    type=click.Choice(["drift", "good"]),
    default="drift",
    show_default=True,
    help="drift: the candidate wins offline but loses on drifted live traffic; good: it really is better",
)
@click.option("--workdir", type=click.Path(file_okay=False), default=".modelcanary", show_default=True)
@click.option("--port", default=0, type=int, help="gateway port (default: a free one)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write a summary here")
@_errors_to_exit
def demo(scenario: str, workdir: str, port: int, json_path: str | None) -> None:
    """Train two fraud models, roll the candidate out on simulated live traffic, and watch it decide."""
    from modelcanary.sim.demo import run_demo

    summary = run_demo(scenario=scenario, workdir=Path(workdir), port=port)
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2))


def _holder() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _actor() -> str:
    return f"cli:{os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown'}"


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
