"""Options and error handling every command shares: where the state lives (a work folder, a store
URL, or a remote control API), ports, the files commands read and write, and known errors as one
line and exit code 2 (an uncaught traceback exits 1, which CI reads as "rolled back")."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from modelcanary.domain.errors import ModelcanaryError, SpecError

if TYPE_CHECKING:
    from modelcanary.cli.operations import Operations

F = TypeVar("F", bound=Callable[..., Any])

# Exit codes CI scripts gate on (docs/cli.md); click's own usage errors exit 2 as well.
EXIT_OK = 0  # promoted, or the command was accepted
EXIT_ENDED_BADLY = 1  # rolled back or aborted
EXIT_ERROR = 2  # usage or known error: nothing was done
EXIT_STILL_RUNNING = 3  # --wait / --watch reached its --timeout with the rollout still active

EXIT_CODES_HELP = (
    "Exit codes: 0 promoted or command accepted; 1 rolled back or aborted; 2 usage or known error; "
    "3 still running when --timeout passed."
)


POLICY_DIR = click.option(
    "--policy-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="the folder whose .rego files specs started through the control API may name (default: built-in "
    "policies only)",
)
PORT = click.IntRange(0, 65535)  # 0: a free one; past 65535 the server hung silently, below 0 failed inside it


def output_file(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: an output file's folder must exist, found out before the command does its
    work (a demo runs for a minute) rather than as a traceback when it writes."""
    if value is not None and not Path(value).parent.is_dir():
        folder = Path(value).parent
        raise click.BadParameter(f"{str(folder)!r} is not a folder here: write {Path(value).name} into one that is")
    return value


def listen_host(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """``--host`` as a name or address a server can listen on: one with an empty or overlong label
    (``not..a..host``) failed inside the event loop with a traceback."""
    try:
        value.encode("idna")
    except UnicodeError as exc:
        raise click.BadParameter(f"{value!r} is not a host name or address: {exc}") from None
    return value


def write_output(path: str, text: str) -> None:
    """Write an output file; a write refused (no permission, a full disk) is a known error, exit 2."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ModelcanaryError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_spec(path: str) -> str:
    """A spec file's text, read as UTF-8 (what YAML files are): a file in another encoding (a
    Latin-1 editor's é, UTF-16) is a spec error naming the line and the byte, not a traceback."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError([("file", f"cannot be read: {exc.strerror or exc}")], source=path) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = f"byte {exc.start} (0x{data[exc.start]:02x}) is not UTF-8 ({exc.reason}): save the file as UTF-8"
        raise SpecError([(f"line {line}", problem)], source=path) from exc


def workspace_options(fn: F) -> F:
    fn = click.option("--registry", help="MLflow registry URI (default: sqlite in the work folder)")(fn)
    fn = click.option("--store", help="store URL (default: sqlite in the work folder)")(fn)
    return click.option(
        "--workdir",
        type=click.Path(file_okay=False),
        help="work folder [default: $MODELCANARY_WORKDIR or ./.modelcanary]",
    )(fn)


def errors_to_exit(fn: F) -> F:
    """Known errors become one clear message and exit code 2, not a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ModelcanaryError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


def target_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adds ``--workdir/--store/--registry`` (act on a store here) and ``--server/--token`` (act
    through a control API), and hands the command one ``ops: Operations`` instead: the command's
    body is the same either way."""

    @wraps(fn)
    def wrapper(
        *args: Any,
        workdir: str | None,
        store: str | None,
        registry: str | None,
        server: str | None,
        token: str | None,
        **kwargs: Any,
    ) -> Any:
        ops = _operations(workdir=workdir, store=store, registry=registry, server=server, token=token)
        try:
            return fn(*args, ops=ops, **kwargs)
        finally:
            ops.close()

    wrapped = errors_to_exit(wrapper)
    wrapped = click.option(
        "--token",
        envvar="MODELCANARY_TOKEN",
        help="bearer token for --server [default: $MODELCANARY_TOKEN]",
    )(wrapped)
    wrapped = click.option(
        "--server",
        envvar="MODELCANARY_SERVER",
        metavar="URL",
        help="act through the control API at URL (http://host:8080) instead of on a local store "
        "[default: $MODELCANARY_SERVER]",
    )(wrapped)
    return workspace_options(wrapped)


def _operations(
    *, workdir: str | None, store: str | None, registry: str | None, server: str | None, token: str | None
) -> Operations:
    if server:
        given = [
            name for name, value in (("--workdir", workdir), ("--store", store), ("--registry", registry)) if value
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} act on a local store; with --server the server's is used")
        token = (token or "").strip()  # a secret file's line ending, "\r\n" from Windows too
        if not token:
            raise click.UsageError("--server needs a token: give --token or set MODELCANARY_TOKEN")
        if not all("!" <= char <= "~" for char in token):
            # not shown: urllib's error for such a header quoted the whole token, as "cannot reach"
            raise click.UsageError(
                "the token (--token or MODELCANARY_TOKEN) holds a character no token has "
                "(a token is printable ASCII without spaces); the token is not shown"
            )
        from modelcanary.cli.remote import RemoteOperations

        return RemoteOperations(server, token)
    from modelcanary.cli.operations import LocalOperations
    from modelcanary.cli.workspace import Workspace

    return LocalOperations(Workspace.at(workdir, store=store, registry=registry), actor=local_actor())


def local_actor() -> str:
    """Who a command run on a local store is audited as (a remote one is audited as its token): the
    user the environment names, or, where it names none (cron, a container), the one the process
    runs as (it was ``cli:unknown`` there)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name in the environment, and no passwd entry for the uid
        return f"cli:uid-{os.getuid()}"
