"""The ``modelcanary`` command line."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time

import click

from modelcanary.cli.admin import register
from modelcanary.cli.audit import audit
from modelcanary.cli.options import (
    POLICY_DIR,
    PORT,
    errors_to_exit,
    listen_host,
    local_actor,
    output_file,
    read_spec,
    workspace_options,
    write_output,
)
from modelcanary.cli.rollouts import rollout
from modelcanary.cli.workspace import Workspace
from modelcanary.domain.errors import ModelcanaryError


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log what the gateway and controller do")
def cli(verbose: bool) -> None:
    """modelcanary: canary rollouts for ML models, judged on live traffic."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


_SECONDS = click.FloatRange(min=0, min_open=True)  # a wait of 0 busy-loops, a negative one is no wait

_SERVER_OPTION = click.option(
    "--server",
    "http_server",
    type=click.Choice(["uvicorn", "granian"]),
    default="uvicorn",
    show_default=True,
    help="the HTTP server: granian carries ~18% more at saturation, uvicorn has half the p50 at 60% "
    "load (docs/gateway.md)",
)

_PREDICTIONS_OPTION = click.option(
    "--max-predictions",
    default=200_000,
    show_default=True,
    type=click.IntRange(1),
    help="predictions held for their labels, and labels held until they mature (about 200 bytes each); "
    "a label for a prediction forgotten is refused",
)


@cli.command()
@workspace_options
@click.option("--host", default="127.0.0.1", show_default=True, callback=listen_host)
@click.option("--port", default=8080, show_default=True, type=PORT)
@click.option(
    "--tick",
    default=1.0,
    show_default=True,
    type=_SECONDS,
    help="seconds from one controller tick's start to the next's",
)
@_SERVER_OPTION
@_PREDICTIONS_OPTION
@POLICY_DIR
@errors_to_exit
def serve(
    workdir: str | None,
    store: str | None,
    registry: str | None,
    host: str,
    port: int,
    tick: float,
    http_server: str,
    max_predictions: int,
    policy_dir: str | None,
) -> None:
    """Run the gateway, the controller and the control API (under /api/v1) in one process (the
    embedded default)."""
    from modelcanary.adapters.backends.refs import default_backend
    from modelcanary.api.app import create_api
    from modelcanary.controller.loop import Controller
    from modelcanary.gateway import server
    from modelcanary.gateway.app import Gateway, create_app

    space = Workspace.at(workdir, store=store, registry=registry)
    state_store, model_registry = space.store(), space.registry()
    gateway = Gateway(
        routes=state_store,
        backend=default_backend(space.registry_uri),
        telemetry=state_store,
        source=process_name(),
        max_predictions=max_predictions,
    )
    # the lease outlives a few ticks (10 s, the controller command's default, unless ticks are long)
    lease_ttl = max(10.0, 3 * tick)
    controller = Controller(store=state_store, registry=model_registry, holder=process_name(), lease_ttl_s=lease_ttl)
    app = create_app(
        gateway,
        background=[lambda: controller.run(interval_s=tick)],
        beside=create_api(state_store, model_registry, policy_dir=policy_dir),
    )
    click.echo(
        f"modelcanary serving on http://{host}:{port}, control API at /api/v1 (work folder {space.workdir})", err=True
    )
    server.run(app, host, port, server=http_server)


@cli.command("gateway")
@workspace_options
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    metavar="NAME=MODEL_REF",
    help="serve MODEL_REF (models:/fraud@champion, v2+http://HOST:PORT/models/NAME, ray://APP/DEPLOYMENT) "
    "as endpoint NAME with no rollout; repeatable",
)
@click.option("--host", default="127.0.0.1", show_default=True, callback=listen_host)
@click.option("--port", default=8080, show_default=True, type=PORT)
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
@_SERVER_OPTION
@_PREDICTIONS_OPTION
@errors_to_exit
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
    http_server: str,
    max_predictions: int,
) -> None:
    """Run a gateway on its own: the data plane, with no controller. It serves each --endpoint,
    and, given a store (--store or --workdir), follows the store's routing table (rollouts take
    over their endpoints) and writes its telemetry there. Run as many as you like behind a load
    balancer; the controller adds their telemetry up."""
    from modelcanary.adapters.backends.refs import default_backend
    from modelcanary.domain.specbase import check_endpoint_name
    from modelcanary.domain.state import Route, remote_version
    from modelcanary.gateway import server
    from modelcanary.gateway.app import Gateway, StaticRoutes, create_app

    space = Workspace.at(workdir, store=store, registry=registry)
    model_registry = space.registry()
    static = {}
    for entry in endpoints:
        name, _, uri = entry.partition("=")
        if not name or not uri:
            raise click.BadParameter(f"expected NAME=MODEL_REF, got {entry!r}", param_hint="'--endpoint'")
        if name in static:  # the last would win, and the model the first names never answer
            raise click.BadParameter(f"endpoint {name!r} is given twice", param_hint="'--endpoint'")
        try:
            check_endpoint_name(name)
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
        backend=default_backend(space.registry_uri, batching=batching),
        telemetry=state_store,
        source=process_name(),
        max_body_bytes=max_body_bytes,
        max_rows=max_rows,
        max_predictions=max_predictions,
    )
    for name, route in static.items():
        try:
            gateway.preload(route)
        except Exception as exc:  # loading runs the model's own code (its flavor, its pickle)
            why = f"{name}={route.baseline.uri}: its model cannot load: {type(exc).__name__}: {exc}"
            raise click.BadParameter(why, param_hint="'--endpoint'") from exc
    where = f"following {space.store_url}" if state_store is not None else "no store"
    click.echo(
        f"modelcanary gateway on http://{host}:{port} ({where}; endpoints {sorted(static) or 'from the store'})",
        err=True,
    )
    server.run(create_app(gateway), host, port, server=http_server)


@cli.command("controller")
@workspace_options
@click.option(
    "--tick", default=1.0, show_default=True, type=_SECONDS, help="seconds from one tick's start to the next's"
)
@click.option(
    "--lease-ttl",
    default=10.0,
    show_default=True,
    type=_SECONDS,
    help="seconds a silent leader keeps the lease; longer than --tick",
)
@click.option(
    "--name",
    type=click.STRING,
    callback=lambda _ctx, _param, value: _short_name(value),
    help="this controller's name in the lease, which adds a random suffix [default: host-pid]",
)
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="processes that judge and save a share of the rollouts each tick, this one included (one per core)",
)
@errors_to_exit
def controller_command(
    workdir: str | None,
    store: str | None,
    registry: str | None,
    tick: float,
    lease_ttl: float,
    name: str | None,
    processes: int,
) -> None:
    """Run a controller on its own, beside gateways that share its store. Several may run against
    one store: one leads at a time (a lease with a fencing token); if it dies another takes over
    within --lease-ttl seconds. SIGTERM or Ctrl-C hands the lease over at once."""
    import signal

    from modelcanary.controller.actions import ActionThread
    from modelcanary.controller.loop import Controller
    from modelcanary.controller.shards import Shards

    if lease_ttl <= tick:  # the lease would run out between two renewals, and leaders alternate
        raise click.BadParameter(f"{lease_ttl:g} s is not longer than --tick ({tick:g} s)", param_hint="'--lease-ttl'")
    space = Workspace.at(workdir, store=store, registry=registry)
    controller = Controller(
        store=space.store(),
        registry=space.registry(),
        holder=process_name(name),
        lease_ttl_s=lease_ttl,
        shards=Shards(space.store_url, processes) if processes > 1 else None,
    )
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"controller {controller.holder} on {space.store_url}", err=True)
    actions = ActionThread(controller, tick)  # side effects on a thread of their own
    actions.start()
    while not stopping:
        # the next tick is due an interval after this one started, not after it ended: every
        # rollout is judged each --tick seconds as long as a tick takes less
        deadline = time.monotonic() + tick
        controller.decide_or_hold()
        actions.wake()
        while not stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, tick))
    actions.stop(lease_ttl / 2)  # the one in progress may finish before the lease is handed over
    controller.step_down()
    if controller.shards is not None:
        controller.shards.close()


@cli.command("report")
@click.argument("rollout_id")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), callback=output_file, help="the HTML file to write"
)
@workspace_options
@errors_to_exit
def report_command(rollout_id: str, out: str, workdir: str | None, store: str | None, registry: str | None) -> None:
    """Write one self-contained HTML file telling a rollout's whole story, for a post-mortem or an
    audit: spec, timeline with actors and reasons, the evidence behind each decision, the final
    decision, model versions, and the audit events with the chain's verify result."""
    from modelcanary.api.report_html import report_html

    state_store = Workspace.at(workdir, store=store, registry=registry).store()
    page = report_html(state_store, rollout_id, now=time.time())  # NotFound before anything is written
    write_output(out, page)
    phase = state_store.get(rollout_id)[0].phase.value
    click.echo(f"report of {rollout_id} ({phase}) to {out}", err=True)


cli.add_command(rollout)
cli.add_command(audit)


@cli.command("watch")
@click.option(
    "--template",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="the rollout spec to start; its candidate is pinned to each new version",
)
@click.option("--alias", help="the registry alias to follow [default: the template candidate's alias]")
@click.option("--interval", default=30.0, show_default=True, type=_SECONDS, help="seconds between looks")
@click.option("--once", is_flag=True, help="look once and exit (for cron or a CI step)")
@workspace_options
@errors_to_exit
def watch_command(
    template: str,
    alias: str | None,
    interval: float,
    once: bool,
    workdir: str | None,
    store: str | None,
    registry: str | None,
) -> None:
    """Start a rollout from --template whenever the registry alias (models:/NAME@ALIAS, NAME being
    the template candidate's model) moves to a version no rollout of the endpoint has had. Safe to
    restart and to run twice: what was seen is read from the store's rollouts."""
    from modelcanary.controller.watch import Watcher
    from modelcanary.domain.errors import RegistryError

    space = Workspace.at(workdir, store=store, registry=registry)
    watcher = Watcher(
        store=space.store(),
        registry=space.registry(),
        template=read_spec(template),
        alias=alias,
        source=template,
    )
    click.echo(f"watching {watcher.uri} for endpoint {watcher.endpoint} (template {template})", err=True)
    last = ""
    while True:
        try:
            check = watcher.check(actor=f"watch:{watcher.uri}")
        # the alias is not set yet, the registry or the store is down, the start gate refused: look again
        except ModelcanaryError as exc:
            if once:
                raise
            reason = f"{'cannot resolve ' if isinstance(exc, RegistryError) else ''}{watcher.uri}: {exc}"
        else:
            if check.started is not None:
                click.echo(check.started.id)
            reason = check.reason
        if reason != last:
            click.echo(reason, err=True)
            last = reason
        if once:
            return
        _pause(interval)


@cli.command()
@click.option(
    "--scenario",
    type=click.Choice(["drift", "good"]),
    default="drift",
    show_default=True,
    help="drift: the candidate wins offline but loses on drifted live traffic; good: it really is better",
)
@workspace_options
@click.option("--port", default=0, type=PORT, help="gateway port (default: a free one)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), callback=output_file, help="write a summary here")
@errors_to_exit
def demo(
    scenario: str, workdir: str | None, store: str | None, registry: str | None, port: int, json_path: str | None
) -> None:
    """Train two fraud models, roll the candidate out on simulated live traffic, and watch it decide."""
    from modelcanary.sim.demo import run_demo

    summary = run_demo(scenario=scenario, space=Workspace.at(workdir, store=store, registry=registry), port=port)
    if json_path:
        write_output(json_path, json.dumps(summary, indent=2))


def _short_name(name: str | None) -> str | None:
    # the lease's holder column holds 200 characters, the suffix and host-pid included
    if name is not None and not 0 < len(name) <= 150:
        raise click.BadParameter("give 1 to 150 characters", param_hint="'--name'")
    return name


def process_name(name: str | None = None) -> str:
    """A process's name in the store, new at every start: ``name`` (default: host-pid) and a random
    suffix. A gateway's telemetry rows: each flush overwrites the rows of its source with the
    process's totals, so a restarted container (same hostname, pid 1 again) named as before would
    overwrite the counts its previous process flushed. A controller's lease: two controllers of
    one name (every replica started with the same --name) both held it, with one fencing token."""
    return f"{name or f'{socket.gethostname()}-{os.getpid()}'}-{secrets.token_hex(4)}"


register(cli, workspace_options=workspace_options, errors_to_exit=errors_to_exit, actor=local_actor)


# the watch loop's wait, named here so that a test replaces it, not time.sleep for every thread of
# its process (as controller/loop.py names its clock and wait)
_pause = time.sleep


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
