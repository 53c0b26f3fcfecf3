"""The gateway's memory of the sticky keys it has seen at a weight (``SeenKeys``)."""

from __future__ import annotations

import numpy as np

from modelcanary.gateway.keys import BITS, SeenKeys
from modelcanary.gateway.router import BUCKETS, bucket


def test_a_key_is_new_once_and_never_again() -> None:
    seen = SeenKeys()
    keys = [f"user-{i}" for i in range(20_000)]
    assert sum(seen.first(key) for key in keys) >= 20_000 - 2  # a false positive is possible, not likely
    assert not any(seen.first(key) for key in keys)


def test_the_new_keys_it_takes_for_seen_are_as_many_on_either_side_of_the_split() -> None:
    """Its bits set as a million keys set them (three each, at random), it takes about 1 in 37 new
    keys for seen, as the module says, and as many of the router's candidate keys (weight 30%)
    as of its baseline keys: the keys it counts still split at the weight. The 100,000 keys it is
    asked about fill it further as they go (0.027 of them taken at the start, 0.034 at the end,
    0.031 on average), and ``hash`` is seeded anew in each process: the bounds are five standard
    deviations of the candidate's 30,000 keys around that (0.033 failed once in CI)."""
    positions = np.random.default_rng(7).integers(0, BITS, 3_000_000)
    bits = np.zeros(BITS, dtype=bool)
    bits[positions] = True
    seen = SeenKeys()
    seen._bits = bytearray(np.packbits(bits, bitorder="little").tobytes())
    missed = {"candidate": 0, "baseline": 0}
    total = {"candidate": 0, "baseline": 0}
    for index in range(100_000):
        key = f"new-{index}"
        side = "candidate" if bucket("rollout-1", key) < 0.3 * BUCKETS else "baseline"
        total[side] += 1
        missed[side] += not seen.first(key)
    rates = {side: missed[side] / total[side] for side in total}
    assert 0.026 < rates["candidate"] < 0.036 and 0.026 < rates["baseline"] < 0.036, rates
    assert abs(rates["candidate"] - rates["baseline"]) < 0.006, rates
