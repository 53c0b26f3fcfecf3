"""Open-loop load at a fixed rate (wrk2 is not in Debian): request ``i`` is due at ``start + i /
rate`` whatever happened to the earlier ones, and its latency counts from when it was due, so a
stalled server shows up in the tail instead of slowing the generator (no coordinated omission).
At most ``connections`` requests are in flight (a pooled keep-alive aiohttp client); a request
waiting for a connection is late, and that wait is in its latency too.

    python -m bench.gateway.paced URL RATE SECONDS CONNECTIONS BODIES.json   -> one JSON line
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp

from bench.gateway import STICKY_HEADER


async def run(url: str, rate: float, seconds: float, connections: int, payloads: list[bytes]) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    headers = [{"content-type": "application/json", STICKY_HEADER: f"user-{i}"} for i in range(len(payloads))]
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(index: int, due: float) -> None:
            nonlocal errors
            slot = index % len(payloads)
            try:
                async with session.post(url, data=payloads[slot], headers=headers[slot]) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        return
            except aiohttp.ClientError:
                errors += 1
                return
            latencies.append(time.perf_counter() - due)

        # warm the pool: every connection opened before the clock starts
        await asyncio.gather(*(one(i, time.perf_counter()) for i in range(connections)))
        latencies.clear()
        tasks = []
        start = time.perf_counter()
        for index in range(total):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
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
