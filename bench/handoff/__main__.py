"""``python -m bench.handoff``: what a stopping gateway's hand-off costs (its predictions and waiting
labels written to the store, ``Labels.hand_off``) and what adopting them costs the gateway that
takes them over, on SQLite and PostgreSQL: reading them from the store (``adopt_handoffs``, on a
thread) and taking them into its recorder (``Recorder.adopting``, in parts, on the event loop: the
longest part is the longest the loop stops serving). Before, the gateway's heap is frozen, as the
gateway freezes it at start.

    python -m bench.handoff --repeat 3 --markdown bench/results/handoff-latest.md

A gateway holds 200,000 predictions by default (``--max-predictions``); a stopping one has its
shutdown's time to hand them off. PostgreSQL is skipped with a note where it does not answer
(``MODELCANARY_TEST_POSTGRES``, default ``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from modelcanary.adapters.store.schema import normalise_url
from modelcanary.adapters.store.sql import SqlStore
from modelcanary.domain.telemetry import Variant
from modelcanary.gateway.recorder import Recorder

POSTGRES = os.environ.get("MODELCANARY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


class Sink:
    endpoint = "fraud"

    def label(self, label: int) -> None:
        pass


def filled(predictions: int) -> Recorder:
    """A recorder holding ``predictions``, a tenth of them labelled and waiting to mature."""
    recorder = Recorder(max_predictions=predictions)
    ids = []
    for n in range(predictions):
        variant = Variant.CANDIDATE if n % 2 else Variant.BASELINE
        ids += recorder.record(
            "r-1", variant, latency_ms=5.0, error=False, scores=[(n % 100) / 100], sink=Sink(), mature_s=3600.0
        )
    recorder.label([(each, 1) for each in ids[: predictions // 10]])
    return recorder


def once(url: str, predictions: int) -> tuple[float, float, float, float]:
    """Seconds to hand off ``predictions``, to read them back, to adopt them on the loop, and the
    longest step of that adoption, on a fresh store at ``url``."""
    store = SqlStore(url)
    try:
        stopping, adopter = filled(predictions), Recorder(max_predictions=predictions)
        started = time.perf_counter()
        store.hand_off("stopping", stopping.hand_off())
        handed = time.perf_counter() - started
        started = time.perf_counter()
        rows = store.adopt_handoffs()
        read = time.perf_counter() - started
        steps, parts = [], adopter.adopting(rows, lambda endpoint, variant: Sink())
        while True:  # each step is what the gateway does between two turns of its event loop
            started = time.perf_counter()
            done = next(parts, True)
            steps.append(time.perf_counter() - started)
            if done:
                break
        assert len(rows) == predictions and adopter.adopted_predictions == predictions
    finally:
        store.close()
    return handed, read, sum(steps), max(steps)


def stores() -> list[tuple[str, str | None]]:
    """(engine, a fresh store's URL, or None where PostgreSQL does not answer)."""
    found: list[tuple[str, str | None]] = [("sqlite", "sqlite")]
    try:
        with sa.create_engine(normalise_url(POSTGRES)).connect():
            found.append(("postgresql", POSTGRES))
    except sa.exc.OperationalError:
        found.append(("postgresql", None))
    return found


def fresh(engine: str, base: str, tmp: Path) -> tuple[str, str | None]:
    """A store URL of its own, and the PostgreSQL schema to drop after."""
    if engine == "sqlite":
        return f"sqlite:///{tmp / f'{uuid.uuid4().hex}.db'}", None
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with sa.create_engine(normalise_url(base)).begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{schema}", schema


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.handoff")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--predictions", type=int, nargs="+", default=[10_000, 200_000])
    parser.add_argument("--markdown", type=Path)  # medians of --repeat runs
    args = parser.parse_args(argv)
    rows = [
        "| store | predictions | hand-off (s) | adoption: store read, off the loop (s) | on the loop (s) "
        "| longest loop step (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    gc.collect()
    gc.freeze()  # as the gateway does once its models are loaded (following._settle_heap)
    with tempfile.TemporaryDirectory() as tmp:
        for engine, base in stores():
            if base is None:
                rows.append(f"| {engine} | - | not reachable at {POSTGRES} | | | |")
                continue
            for predictions in args.predictions:
                runs = []
                for _ in range(args.repeat):
                    url, schema = fresh(engine, base, Path(tmp))
                    try:
                        runs.append(once(url, predictions))
                    finally:
                        if schema is not None:
                            with sa.create_engine(normalise_url(base)).begin() as conn:
                                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
                handed, read, loop, longest = (statistics.median(run[i] for run in runs) for i in range(4))
                rows.append(
                    f"| {engine} | {predictions:,} | {handed:.2f} | {read:.2f} | {loop:.2f} | {1000 * longest:.0f} |"
                )
    table = "\n".join(rows)
    print(table)
    if args.markdown:
        args.markdown.write_text(f"`python -m bench.handoff --repeat {args.repeat}`\n\n{table}\n")


if __name__ == "__main__":
    main()
