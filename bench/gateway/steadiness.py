"""``python -m bench.gateway.steadiness``: does this machine run a thread at a steady speed?

A thread repeats one fixed piece of pure-Python work (a chunk, about half a millisecond) and
times each repetition by the wall clock and by its own CPU time. A chunk that took much longer
than the median *while its thread was on the CPU the whole time* was not preempted and did not
wait: the CPU itself ran it slower (on a VM, perhaps a busy sibling hyperthread on the host or a
change of clock speed; this cannot tell which).
Such slow periods set the gateway benchmark's open-loop p99 (setup 3): a gateway at 70% of its
capacity that runs at half speed for 50 ms is at 140% for that time, and its queue grows.

    python -m bench.gateway.steadiness --seconds 15 [--together 2] [--json PATH]

``--together N`` runs N such threads in N processes at once (as the benchmark's gateway and load
generator are), each reported on its own row.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.gateway import write_record

RESULTS = Path(__file__).resolve().parent.parent / "results"
SLOW = 1.5  # a chunk this many times the median is slow
ON_CPU = 0.9  # ... when its thread's CPU time was at least this share of its wall time
WINDOW = 20  # chunks in a slow period: about 10 ms


@dataclass(frozen=True)
class Steadiness:
    chunks: int
    median_ms: float
    p99_ms: float
    max_ms: float
    slow_on_cpu_share: float  # chunks > SLOW x median with the thread on the CPU throughout
    longest_slow_run: int  # consecutive such chunks
    slow_periods: int  # disjoint windows of WINDOW chunks, each on the CPU, whose mean is > 1.4x median
    worst_period_slowdown: float  # the slowest such window's mean / the median


def _chunk() -> int:
    total = 0
    for i in range(20_000):
        total += i * i
    return total


def measure(seconds: float) -> Steadiness:
    times: list[tuple[float, float]] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        cpu, wall = time.thread_time(), time.perf_counter()
        _chunk()
        times.append((time.perf_counter() - wall, time.thread_time() - cpu))
    return summarise(times)


def summarise(times: list[tuple[float, float]]) -> Steadiness:
    """The figures of (wall seconds, thread CPU seconds) per chunk."""
    walls = sorted(wall for wall, _ in times)
    median = statistics.median(walls)
    slow = [wall > SLOW * median and cpu > ON_CPU * wall for wall, cpu in times]
    run = longest = 0
    for is_slow in slow:
        run = run + 1 if is_slow else 0
        longest = max(longest, run)
    periods, worst, i = 0, 1.0, 0
    while i + WINDOW <= len(times):
        window = times[i : i + WINDOW]
        mean = sum(wall for wall, _ in window) / WINDOW
        if mean > 1.4 * median and all(cpu > ON_CPU * wall for wall, cpu in window):
            periods, worst, i = periods + 1, max(worst, mean / median), i + WINDOW
        else:
            i += 1
    return Steadiness(
        chunks=len(times),
        median_ms=median * 1e3,
        p99_ms=walls[int(len(walls) * 0.99)] * 1e3,
        max_ms=walls[-1] * 1e3,
        slow_on_cpu_share=sum(slow) / len(times),
        longest_slow_run=longest,
        slow_periods=periods,
        worst_period_slowdown=worst,
    )


def table(rows: list[Steadiness]) -> str:
    lines = [
        "| thread | chunks | median ms | p99 ms | max ms | slow on CPU | longest slow run "
        "| slow ~10 ms periods | worst period |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for n, r in enumerate(rows, 1):
        lines.append(
            f"| {n} | {r.chunks:,} | {r.median_ms:.3f} | {r.p99_ms:.3f} | {r.max_ms:.3f} | {r.slow_on_cpu_share:.1%} "
            f"| {r.longest_slow_run} chunks | {r.slow_periods} | {r.worst_period_slowdown:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway.steadiness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--together", type=int, default=1, help="threads measured at once, one process each")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.together == 1:
        rows = [measure(args.seconds)]
    else:
        with multiprocessing.get_context("spawn").Pool(args.together) as pool:
            rows = pool.map(measure, [args.seconds] * args.together)
    setting = f"{args.together} thread(s) at once for {args.seconds:g} s; {os.cpu_count()} CPUs"
    print(setting + "\n\n" + table(rows))
    record = {
        "setting": setting,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "rows": [asdict(row) for row in rows],
    }
    write_record(args.results_dir, "steadiness", record, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
