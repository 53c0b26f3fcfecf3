"""Which variant serves a request: a pure function of (salt, sticky key, weight).

A key hashes to one of 10,000 buckets; the candidate takes the buckets below ``weight * 100``. So a
key always lands on the same variant at a given weight, and raising the weight only moves keys
from the baseline to the candidate, never back.

>>> choose("rollout-1", "user-42", 0.0), choose("rollout-1", "user-42", 100.0)
(<Variant.BASELINE: 'baseline'>, <Variant.CANDIDATE: 'candidate'>)
"""

from __future__ import annotations

import random
from zlib import crc32

from modelcanary.domain.telemetry import Variant

BUCKETS = 10_000


def bucket(salt: str, key: str) -> int:
    """The key's bucket; the salt (the rollout id) reshuffles users between rollouts."""
    return crc32(f"{salt}\x00{key}".encode()) % BUCKETS


def choose(salt: str, key: str | None, weight: float, *, rng: random.Random | None = None) -> Variant:
    """The variant for a request; without a key the split is random at the same weight."""
    draw = (rng or random).random() * BUCKETS if key is None else bucket(salt, key)
    return Variant.CANDIDATE if draw < weight * (BUCKETS / 100) else Variant.BASELINE
