"""A new SQLite store opened by several processes at once: every connection switches the file to
WAL mode, and one that asks while another switches is told "locked" at once (no busy wait). It
must wait its turn, not fail (``schema._write_ahead_log``)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import sqlalchemy as sa

from modelcanary.adapters.store.schema import _write_ahead_log, engine_for


def test_a_switch_that_finds_the_file_locked_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")  # as a connection mid-switch holds it
    releasing = threading.Event()

    def commit() -> None:
        releasing.set()
        holder.execute("COMMIT")

    release = threading.Timer(0.3, commit)
    release.start()
    waiting = sqlite3.connect(path, timeout=0, isolation_level=None)  # no busy wait of SQLite's own
    _write_ahead_log(waiting.cursor(), wait_s=10)
    assert releasing.is_set()  # it waited for the lock (it was not told "locked" and gave up), then switched
    assert waiting.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    release.join()
    holder.close()
    waiting.close()


def test_many_first_connections_at_once_all_open_the_store(tmp_path: Path) -> None:
    for trial in range(20):
        url = f"sqlite:///{tmp_path / f'store-{trial}.db'}"
        errors: list[Exception] = []
        barrier = threading.Barrier(8)

        def connect(url: str = url, errors: list[Exception] = errors, barrier: threading.Barrier = barrier) -> None:
            engine = engine_for(url)
            barrier.wait()
            try:
                with engine.connect() as connection:
                    connection.execute(sa.text("SELECT 1"))
            except Exception as exc:
                errors.append(exc)
            finally:
                engine.dispose()

        threads = [threading.Thread(target=connect) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], f"trial {trial}: {errors[0]}"


def test_every_connection_syncs_each_commit(tmp_path: Path) -> None:
    """``synchronous=FULL``: a commit the controller acts on (a promotion, then the alias move) is
    on disk before the action runs, power cut or not; NORMAL kept it through a process crash only."""
    engine = engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    engine.dispose()
