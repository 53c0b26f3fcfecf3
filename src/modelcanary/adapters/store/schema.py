"""The store's schema and connections: the tables (as Alembic's migrations build them), engines
for SQLite (WAL, ``BEGIN IMMEDIATE`` but for readers) and PostgreSQL (psycopg 3), and the upgrade
run whenever a store is opened: in one transaction, under a lock, so two processes opening an old
store at once upgrade it once. When the store is already at ``HEAD``, Alembic is not even imported.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError

from modelcanary.domain.errors import StoreError

metadata = sa.MetaData()

rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("endpoint", sa.String(200), nullable=False),
    sa.Column("phase", sa.String(32), nullable=False),
    # 1 while the rollout is not terminal; the partial unique index allows one active rollout per endpoint
    sa.Column("active", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("spec_json", sa.Text),  # the validated spec (0003); NULL for rows made before it
    sa.Index(
        "one_active_rollout_per_endpoint",
        "endpoint",
        unique=True,
        sqlite_where=sa.text("active = 1"),
        postgresql_where=sa.text("active = 1"),
    ),
)
transitions = sa.Table(
    "transitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rollout_id", sa.String(64), sa.ForeignKey("rollouts.id"), nullable=False, index=True),
    sa.Column("body", sa.Text, nullable=False),
)
routes = sa.Table(
    "routes",
    metadata,
    sa.Column("endpoint", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("route", sa.Text, nullable=False),
)
actions = sa.Table(
    "actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rollout_id", sa.String(64), nullable=False),
    sa.Column("key", sa.String(300), nullable=False, unique=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("done_at", sa.Float),
)
telemetry = sa.Table(
    "telemetry",
    metadata,
    sa.Column("rollout_id", sa.String(64), primary_key=True),
    sa.Column("variant", sa.String(16), primary_key=True),
    sa.Column("source", sa.String(100), primary_key=True),
    sa.Column("counts", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("rollout_id", sa.String(64)),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("token", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
sa.Index("ix_audit_rollout_id", audit.c.rollout_id)
audit_head = sa.Table(  # the chain's length and last hash, moved with every append (0004)
    "audit_head",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)
tokens = sa.Table(  # control API tokens (0005): a hash of each secret, never the secret
    "tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("endpoints", sa.Text),  # a JSON list of endpoint names; NULL for every endpoint
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)
relayed_labels = sa.Table(  # labels that reached a gateway other than the one that made the prediction (0006)
    "relayed_labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("issuer", sa.String(32), nullable=False, index=True),  # the prediction id's prefix
    sa.Column("prediction_id", sa.String(64), nullable=False),
    sa.Column("label", sa.Integer, nullable=False),
    sa.Column("via", sa.String(100), nullable=False),  # the gateway that received it
    sa.Column("received_at", sa.Float, nullable=False),
)
handoffs = sa.Table(  # what a stopping gateway holds for labels to come, until another adopts it (0007)
    "handoffs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("via", sa.String(100), nullable=False),  # the gateway that stopped
    sa.Column("rows", sa.Text, nullable=False),  # a JSON list of Recorder.hand_off rows
    sa.Column("handed_at", sa.Float, nullable=False),
)

handoff_keys = sa.Table(  # each hand-off once, by its key: a retried one stores nothing (0008)
    "handoff_keys",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("handed_at", sa.Float, nullable=False),
)

GENESIS = "0" * 64
HEAD = "0008"  # the newest migration in migrations/versions (tests check that they agree)
MIGRATIONS = Path(__file__).parent / "migrations"
# PostgreSQL advisory-lock keys: one serialises schema upgrades, one the audit chain's appends
MIGRATION_LOCK, AUDIT_LOCK = 0x6D63_0001, 0x6D63_0002
READ_ONLY = "modelcanary_read_only"  # the execution option ``reading`` sets on a SQLite connection


def audit_hash(prev_hash: str, event: dict[str, Any]) -> str:
    """sha256 over the previous hash and the event's canonical JSON."""
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean PostgreSQL through psycopg 3, the driver we ship."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def _write_ahead_log(cursor: Any, *, wait_s: float = 30.0) -> None:
    """Put the database file in WAL mode (it stays so). Switching needs the file to itself, and
    SQLite answers "database is locked" at once, without its busy wait, to a connection that asks
    while another is switching: several processes opening a new store at once hit it. So the mode
    is read first (no lock needed once it is WAL), and a switch that finds the file locked is tried
    again, for as long as the busy timeout."""
    import sqlite3

    deadline = time.monotonic() + wait_s
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


STORE_URLS = "sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DATABASE"


def engine_for(url: str) -> Engine:
    """An engine for a store URL; one of another database (or no URL at all) is a ``StoreError``
    naming it and the two we support, not SQLAlchemy's parse or driver error."""
    _check_supported(url)
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself, as IMMEDIATE, so that two writers queue on the lock
        # instead of failing on a read-to-write upgrade.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _write_ahead_log(cursor)
        # FULL: a commit is on disk before it returns, so a state the controller then acts on (an
        # alias moved after a saved promotion) survives a power cut or an OS crash too; NORMAL, in
        # WAL mode, kept it through a process crash only. ~0.3 ms a commit here (0.01 ms NORMAL),
        # and a tick's saves are one commit (``save_many``)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # a reader (see ``reading``) takes no lock: in WAL mode it reads a snapshot beside the writers
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")

    return engine


def _check_supported(url: str) -> None:
    """SQLite, and PostgreSQL through psycopg 3 (``normalise_url``): the drivers we ship.

    >>> _check_supported("mysql://u:secret@db/canary")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    modelcanary.domain.errors.StoreError: store URL 'mysql://u:***@db/canary' is not one modelcanary opens: give sqlite:///...
    """
    try:
        parsed = sa.engine.make_url(url)
    except ArgumentError:  # not a URL at all ("foo")
        parsed = None
    if parsed is None or parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        shown = url if parsed is None else parsed.render_as_string(hide_password=True)
        raise StoreError(f"store URL {shown!r} is not one modelcanary opens: give {STORE_URLS}")


def reading(conn: Connection) -> Connection:
    """``conn``, set before its first statement to read one snapshot in one transaction and take no
    write lock: a deferred ``BEGIN`` on SQLite (WAL), ``REPEATABLE READ`` on PostgreSQL."""
    if conn.dialect.name == "postgresql":
        return conn.execution_options(isolation_level="REPEATABLE READ")
    return conn.execution_options(**{READ_ONLY: True})


def schema_revision(conn: Connection) -> str | None:
    """The store's Alembic revision; ``"0001"`` for a store made before migrations; None when empty."""
    tables = set(sa.inspect(conn).get_table_names())
    if "alembic_version" in tables:
        revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        return str(revision) if revision else None
    return "0001" if "rollouts" in tables else None


def migrate(conn: Connection) -> None:
    """Upgrade the store on ``conn`` to ``HEAD`` inside the caller's transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    revision = schema_revision(conn)
    if revision == HEAD:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    if revision == "0001" and "alembic_version" not in sa.inspect(conn).get_table_names():
        command.stamp(config, "0001")  # made by 0.1.0's create_all: its tables are revision 0001's
    command.upgrade(config, "head")


def chunks(items: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    """Bound ``IN (...)`` lists: old SQLite builds allow 999 parameters per statement."""
    return [items[start : start + size] for start in range(0, len(items), size)]
