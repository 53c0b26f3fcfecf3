"""Open-loop load at a fixed rate (wrk2 is not in Debian): request ``i`` is due at ``start + i /
rate`` whatever happened to the earlier ones, and its latency counts from when it was due, so a
stalled server shows up in the tail instead of slowing the generator (no coordinated omission).
At most ``connections`` requests are in flight on keep-alive connections; a request waiting for
a connection is late, and that wait is in its latency too.

The client is the gateway's own lean HTTP/1.1 one (``modelcanary.adapters.backends.http1``), on
uvloop: with aiohttp's client this process took ~40% of a core at 3,200 requests a second, on the
same two cores as the server it measures, and its own scheduling delays went into every latency.

    python -m bench.gateway.paced URL RATE SECONDS CONNECTIONS BODIES.json   -> one JSON line
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from urllib.parse import urlsplit

from bench.gateway import STICKY_HEADER
from modelcanary.adapters.backends.http1 import Http1Pool, HttpError


async def run(url: str, rate: float, seconds: float, connections: int, payloads: list[bytes]) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    where = urlsplit(url)
    pool = Http1Pool(where.hostname or "127.0.0.1", where.port or 80, tls=False, limit=connections)
    headers = [{STICKY_HEADER: f"user-{i}"} for i in range(len(payloads))]

    async def one(index: int, due: float) -> None:
        nonlocal errors
        slot = index % len(payloads)
        try:
            status, _body = await pool.post(where.path, payloads[slot], headers=headers[slot])
        except HttpError:
            errors += 1
            return
        if status != 200:
            errors += 1
            return
        latencies.append(time.perf_counter() - due)

    # warm the pool: every connection opened before the clock starts
    await asyncio.gather(*(one(i, time.perf_counter()) for i in range(connections)))
    latencies.clear()
    errors = 0  # the warm-up's are not the run's
    # No garbage collection while the clock runs: full collections of this process paused it for
    # up to 170 ms, and every request due meanwhile went out late and counted that in its latency
    # (one such pause per 10 s run set its p99 at 3,100 requests a second). What the run
    # allocates is bounded by its requests.
    gc.disable()
    # only the requests still in flight are held: gathering every task of the run at the end
    # queued a callback per finished one ahead of the last few, which then went out ~20 ms late
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for index in range(total):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # Counted from when it was due, or from when it left if that was earlier: uvloop's timers
        # are in whole milliseconds, so a sleep under 0.5 ms is none and about 4 requests in 10 go
        # out up to 0.5 ms early (3,000 a second); timed from their due time, those latencies
        # read up to 0.5 ms short.
        task = asyncio.create_task(one(index, min(due, time.perf_counter())))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - start
    gc.enable()
    pool.close()
    latencies.sort()

    def quantile(q: float) -> float:
        return 1e3 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "errors": errors,
    }


def main() -> None:
    url, rate, seconds, connections, source = sys.argv[1:6]
    with open(source) as handle:
        payloads = [payload.encode() for payload in json.load(handle)]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(url, float(rate), float(seconds), int(connections), payloads))))


if __name__ == "__main__":
    main()
