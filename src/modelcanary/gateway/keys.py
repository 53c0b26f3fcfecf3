"""Which sticky keys a gateway has seen at the weight it routes at: so it counts each user once per
variant (``VariantTelemetry.keys``), and the sample-ratio check can test the split of users, where
a split of requests is no binomial (one heavy user moves many requests to one side at once).

A Bloom filter of ``BITS`` bits (1 MiB), made on the first key: a key it says it has seen
when it has not (a false positive) is not counted. That happens with a probability fixed by the
key's own hash, drawn independently of the router's (``hash`` is SipHash with this process's
seed, the router's bucket crc32 with the rollout's salt), so the keys left out are left out
whatever their variant, and the keys counted still split at the weight: about 1 in 23,000 is left
out after 100,000 keys, 1 in 37 after a million, 1 in 3.5 after three million.

>>> seen = SeenKeys()
>>> seen.first("user-1"), seen.first("user-1"), seen.first("user-2")
(True, False, True)
"""

from __future__ import annotations

BITS = 1 << 23
_MASK = BITS - 1
_HALF = (1 << 32) - 1


class SeenKeys:
    """The keys seen so far; one per rollout and weight, never emptied (a key counted twice at
    one gateway and weight would be a heavy user's requests counted again)."""

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits: bytearray | None = None

    def first(self, key: str) -> bool:
        """Whether ``key`` is new (and now seen): three bits from one 64-bit hash (double hashing)."""
        bits = self._bits
        if bits is None:
            bits = self._bits = bytearray(BITS >> 3)
        hashed = hash(key)
        low, high = hashed & _HALF, (hashed >> 32) & _HALF | 1
        first, second, third = low & _MASK, (low + high) & _MASK, (low + 2 * high) & _MASK
        # written out, not a loop over the three: this runs on every request with a sticky key
        if (
            bits[first >> 3] & (1 << (first & 7))
            and bits[second >> 3] & (1 << (second & 7))
            and bits[third >> 3] & (1 << (third & 7))
        ):
            return False
        bits[first >> 3] |= 1 << (first & 7)
        bits[second >> 3] |= 1 << (second & 7)
        bits[third >> 3] |= 1 << (third & 7)
        return True
