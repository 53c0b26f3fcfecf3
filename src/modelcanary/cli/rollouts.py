"""``modelcanary rollout …``: start, inspect and steer rollouts, on a local store or through a
control API (``--server``), with exit codes CI scripts can gate on."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from modelcanary.cli.options import (
    EXIT_CODES_HELP,
    EXIT_ENDED_BADLY,
    EXIT_OK,
    EXIT_STILL_RUNNING,
    read_spec,
    target_options,
)
from modelcanary.domain.access import MAX_REASON_CHARS
from modelcanary.domain.phases import Phase
from modelcanary.domain.state import RolloutState
from modelcanary.engine.decide import Command

if TYPE_CHECKING:
    from modelcanary.cli.operations import Operations


@click.group()
def rollout() -> None:
    """Start, inspect and steer rollouts. Every command acts on a local store (--workdir or
    --store) or, given --server and --token (or MODELCANARY_SERVER and MODELCANARY_TOKEN), through
    that control API."""


def outcome_code(state: RolloutState) -> int:
    """0 promoted, 1 rolled back or aborted, 3 still active.

    >>> from modelcanary.domain.state import ModelVersion
    >>> version = ModelVersion(name="fraud", version="1")
    >>> state = RolloutState(id="r", name="r", endpoint="fraud", phase=Phase.ABORTED, baseline=version,
    ...                      candidate=version, created_at=0, updated_at=0)
    >>> outcome_code(state), outcome_code(state.model_copy(update={"phase": Phase.CANARY}))
    (1, 3)
    """
    if state.phase is Phase.PROMOTED:
        return EXIT_OK
    if state.phase in (Phase.ROLLED_BACK, Phase.ABORTED):
        return EXIT_ENDED_BADLY
    return EXIT_STILL_RUNNING


def _follow(read: Callable[[], RolloutState], *, timeout_s: float | None, interval_s: float) -> RolloutState:
    """Read until the rollout ends or ``timeout_s`` passes. Ctrl-C stops following, as a timeout does."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    state = read()
    try:
        while not state.phase.is_terminal():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            time.sleep(interval_s if left is None else min(interval_s, left))
            state = read()
    except KeyboardInterrupt:
        pass
    return state


def _still_running(state: RolloutState) -> None:
    paused = ", paused" if state.paused else ""
    click.echo(
        f"{state.id} still {state.phase.value}{paused} at {state.weight:g}% (step {state.step + 1}): {state.reason}",
        err=True,
    )


_timeout = click.option(
    "--timeout", type=click.FloatRange(min=0), metavar="S", help="stop waiting after S seconds (exit 3)"
)
_interval = click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    metavar="S",
    help="seconds between reads",
)


@rollout.command("start", epilog=EXIT_CODES_HELP)
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("--wait", is_flag=True, help="wait for the outcome: exit 0 promoted, 1 rolled back or aborted")
@_timeout
@_interval
@target_options
def rollout_start(spec: str, wait: bool, timeout: float | None, interval: float, ops: Operations) -> None:
    """Validate SPEC, resolve its models and start the rollout; prints its id. With --wait, follows
    it (each change on standard error) until it is promoted, rolled back or aborted."""
    state = ops.start(read_spec(spec), source=spec)
    click.echo(
        f"started {state.id}: {state.baseline.uri} -> {state.candidate.uri} on endpoint {state.endpoint}", err=True
    )
    click.echo(state.id)
    if not wait:
        return
    seen = [_progress(state)]

    def read() -> RolloutState:
        current = ops.rollout(state.id)[0]
        if _progress(current) != seen[-1]:
            seen.append(_progress(current))
            click.echo(
                f"{current.phase.value}{' (paused)' if current.paused else ''} at {current.weight:g}%: "
                f"{current.reason}",
                err=True,
            )
        return current

    final = _follow(read, timeout_s=timeout, interval_s=interval)
    code = outcome_code(final)
    if code == EXIT_STILL_RUNNING:
        _still_running(final)
    sys.exit(code)


def _progress(state: RolloutState) -> tuple[object, ...]:
    return state.phase, state.paused, state.step, state.weight, state.reason


@rollout.command("list")
@click.option("--active", is_flag=True, help="only rollouts that have not ended")
@click.option("--json", "as_json", is_flag=True)
@target_options
def rollout_list(active: bool, as_json: bool, ops: Operations) -> None:
    """Rollouts, newest first."""
    states = ops.rollouts(active_only=active)
    if as_json:
        click.echo(json.dumps([state.model_dump(mode="json", exclude={"judge_memory"}) for state in states], indent=2))
    else:
        from rich.console import Console

        from modelcanary.cli.views import rollouts_table

        Console().print(rollouts_table(states))


@rollout.command("status", epilog=EXIT_CODES_HELP)
@click.argument("rollout_id")
@click.option("--watch", is_flag=True, help="a live view, refreshed until the rollout ends (or --timeout)")
@_timeout
@_interval
@click.option("--json", "as_json", is_flag=True, help="the report as JSON (with --watch: once it has ended)")
@target_options
def rollout_status(
    rollout_id: str, watch: bool, timeout: float | None, interval: float, as_json: bool, ops: Operations
) -> None:
    """A rollout's phase, step, weight, each metric's evidence against its 1/alpha line, and its
    history. Exit 1 if it rolled back or was aborted, else 0; with --watch, 0 only once promoted
    (3 if still running at --timeout)."""
    from modelcanary.cli.views import status_view

    report = ops.report(rollout_id)
    if watch:
        from rich.live import Live

        live = None if as_json else Live(status_view(report), auto_refresh=False)

        def read() -> RolloutState:
            nonlocal report
            report = ops.report(rollout_id)
            if live is not None:
                live.update(status_view(report), refresh=True)
            return report.state

        with live or contextlib.nullcontext():
            _follow(read, timeout_s=timeout, interval_s=interval)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    elif not watch:  # a live view leaves its last frame on screen
        from rich.console import Console

        Console().print(status_view(report))
    code = outcome_code(report.state)
    if code == EXIT_STILL_RUNNING:
        if watch:
            _still_running(report.state)
        else:
            code = EXIT_OK
    sys.exit(code)


@rollout.command("spec")
@click.argument("rollout_id")
@target_options
def rollout_spec(rollout_id: str, ops: Operations) -> None:
    """The rollout's spec, as it was submitted."""
    click.echo(ops.rollout(rollout_id)[1], nl=False)


def _reason(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """The reason as the API would take it: bytes that are not UTF-8 (kept by Python as lone
    surrogates) failed the save with a traceback; any length was saved."""
    if value is None:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        raise click.BadParameter("holds bytes that are not UTF-8 text") from None
    if len(value) > MAX_REASON_CHARS:
        raise click.BadParameter(f"{len(value)} characters; at most {MAX_REASON_CHARS}")
    return value


def _command(command: Command, help_text: str) -> None:
    @rollout.command(command.value, help=help_text, epilog="Exit codes: 0 accepted; 2 refused (with why).")
    @click.argument("rollout_id")
    @click.option("--reason", callback=_reason, help="why: recorded in the rollout's history and the audit log")
    @target_options
    def run(rollout_id: str, reason: str | None, ops: Operations) -> None:
        state = ops.command(rollout_id, command, reason=reason)
        click.echo(f"{state.id}: {state.reason}")


_command(Command.PAUSE, "Hold the rollout where it is: no step advances until it is resumed.")
_command(Command.RESUME, "Resume a paused rollout; the current step's clock starts again.")
_command(Command.ABORT, "End the rollout now: all traffic back to the baseline.")
_command(Command.PROMOTE, "Promote the candidate now, whatever step the rollout is at (approver role remotely).")
_command(Command.APPROVE, "Let a rollout awaiting approval go on to its next step (approver role remotely).")
