"""Binary-classification measures from score histograms split by ground-truth label."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def measure(self, name: str) -> tuple[float | None, int]:
        """``(value, denominator)`` of accuracy, precision or recall; ``None`` when the denominator is 0.

        >>> Confusion(tp=8, fp=2, tn=85, fn=5).measure("recall")
        (0.6153846153846154, 13)
        """
        numerator, denominator = {
            "accuracy": (self.tp + self.tn, self.n),
            "precision": (self.tp, self.tp + self.fp),
            "recall": (self.tp, self.tp + self.fn),
        }[name]
        return (numerator / denominator if denominator else None), denominator


def confusion(positive: Sequence[int], negative: Sequence[int], threshold_bucket: int) -> Confusion:
    """Counts at a threshold: buckets at or above ``threshold_bucket`` are predicted positive.

    >>> confusion([0, 1, 4], [3, 1, 0], threshold_bucket=2)
    Confusion(tp=4, fp=0, tn=4, fn=1)
    """
    tp = sum(positive[threshold_bucket:])
    fp = sum(negative[threshold_bucket:])
    return Confusion(tp=tp, fp=fp, tn=sum(negative) - fp, fn=sum(positive) - tp)
