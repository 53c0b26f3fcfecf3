"""``modelcanary audit …``: check and export the hash-chained audit log, locally or through a
control API (``--server``)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from modelcanary.cli.options import EXIT_ENDED_BADLY, output_file, target_options, write_output

if TYPE_CHECKING:
    from modelcanary.cli.operations import Operations


@click.group()
def audit() -> None:
    """Check and export the hash-chained audit log."""


@audit.command("verify", epilog="Exit codes: 0 the chain holds; 1 it is broken; 2 usage or known error.")
@target_options
def audit_verify(ops: Operations) -> None:
    """Recompute every event's hash in order. Exit 0 if the chain holds; 1 with the first broken
    link if any event was edited, deleted or reordered."""
    check = ops.verify_audit()
    if check.count is None:  # a token limited to endpoints: the API says whether the chain holds, no more
        verdict = "verified" if check.ok else "BROKEN"
        click.echo(f"audit chain {verdict} (where, and its head, need a token for every endpoint)")
        sys.exit(0 if check.ok else EXIT_ENDED_BADLY)
    if check.broken is not None:
        broken = check.broken
        click.echo(
            f"audit chain BROKEN at event id {broken.id} (position {broken.position} in id order, from 0; "
            f"the events before it hold): {broken.reason}"
        )
        sys.exit(EXIT_ENDED_BADLY)
    # the head that was verified, the last of its events: any appended since are not vouched for
    verified = ops.audit_events()[: check.count]
    head = verified[-1]["hash"] if verified else "(empty)"
    click.echo(f"audit chain verified: {check.count} events, head {head}")


@audit.command("export")
@click.option(
    "--out", type=click.Path(dir_okay=False), callback=output_file, help="write here instead of standard output"
)
@click.option("--rollout", "rollout_id", help="only this rollout's events")
@target_options
def audit_export(out: str | None, rollout_id: str | None, ops: Operations) -> None:
    """Every audit event as JSON Lines, oldest first, with its hashes. The last line's hash is the
    chain's head: keep it elsewhere to detect events cut off the end later."""
    events = ops.audit_events(rollout_id)
    lines = "".join(json.dumps(event, sort_keys=True) + "\n" for event in events)
    if out:
        write_output(out, lines)
        click.echo(f"{len(events)} events to {out}; head {events[-1]['hash'] if events else '(empty)'}", err=True)
    else:
        click.echo(lines, nl=False)
