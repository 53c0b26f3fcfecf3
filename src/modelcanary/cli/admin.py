"""Commands for whoever runs the installation: API tokens (``token create|list|revoke``) and the
control API on its own (``api``), beside separately run gateways and controllers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from modelcanary.cli.options import POLICY_DIR, PORT, listen_host
from modelcanary.cli.workspace import Workspace
from modelcanary.domain.access import Role


def register(
    group: click.Group,
    *,
    workspace_options: Callable[[Any], Any],
    errors_to_exit: Callable[[Any], Any],
    actor: Callable[[], str],
) -> None:
    """Add ``token`` and ``api`` to ``group``, with the main CLI's options and error handling."""

    @group.group()
    def token() -> None:
        """Create, list and revoke the control API's bearer tokens."""

    @token.command("create")
    @click.option("--name", required=True, help="unique; the audit log names its actions token:NAME")
    @click.option("--role", required=True, type=click.Choice([role.value for role in Role]), help="what it may do")
    @click.option(
        "--endpoint",
        "endpoints",
        multiple=True,
        help="limit it to this endpoint's rollouts; repeatable [default: every endpoint]",
    )
    @workspace_options
    @errors_to_exit
    def token_create(
        name: str, role: str, endpoints: tuple[str, ...], workdir: str | None, store: str | None, registry: str | None
    ) -> None:
        """Create a token and print it once, on the last line: only its hash is stored."""
        state_store = Workspace.at(workdir, store=store, registry=registry).store()
        info, secret = state_store.create_token(
            name=name, role=Role(role), endpoints=list(endpoints) or None, actor=actor()
        )
        scope = ", ".join(info.endpoints) if info.endpoints is not None else "every endpoint"
        click.echo(f"created token {info.name} ({info.role.value}, {scope}), id {info.id}", err=True)
        click.echo("it is shown this once: keep it somewhere safe", err=True)
        click.echo(secret)

    @token.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @workspace_options
    @errors_to_exit
    def token_list(as_json: bool, workdir: str | None, store: str | None, registry: str | None) -> None:
        """Every token, revoked ones too (never a secret)."""
        tokens = Workspace.at(workdir, store=store, registry=registry).store().list_tokens()
        if as_json:
            click.echo(json.dumps([info.model_dump(mode="json") for info in tokens], indent=2))
            return
        for info in tokens:
            scope = ",".join(info.endpoints) if info.endpoints is not None else "*"
            state = "revoked" if info.revoked_at is not None else "active"
            click.echo(f"{info.id}  {info.name:<24} {info.role.value:<9} {state:<8} endpoints {scope}")

    @token.command("revoke")
    @click.argument("name")
    @workspace_options
    @errors_to_exit
    def token_revoke(name: str, workdir: str | None, store: str | None, registry: str | None) -> None:
        """Revoke the token NAME (or id): it stops working at once."""
        info = Workspace.at(workdir, store=store, registry=registry).store().revoke_token(name, actor=actor())
        click.echo(f"revoked token {info.name} ({info.id})")

    @group.command("api")
    @workspace_options
    @click.option("--host", default="127.0.0.1", show_default=True, callback=listen_host)
    @click.option("--port", default=8081, show_default=True, type=PORT)
    @POLICY_DIR
    @errors_to_exit
    def api_command(
        workdir: str | None, store: str | None, registry: str | None, host: str, port: int, policy_dir: str | None
    ) -> None:
        """Run the control API on its own, on the store that gateways and controllers share."""
        from modelcanary.api.app import create_api
        from modelcanary.gateway import server

        space = Workspace.at(workdir, store=store, registry=registry)
        app = create_api(space.store(), space.registry(), policy_dir=policy_dir)
        click.echo(f"modelcanary control API on http://{host}:{port}/api/v1 ({space.store_url})", err=True)
        server.run(app, host, port)
