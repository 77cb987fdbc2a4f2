"""A histogram and a label cap as plain Python: an observation is a bisect and two adds.

prometheus_client's own Histogram takes a lock and walks its buckets on every
observation; the broker observes several values per task, so it keeps its own
counts and hands them to prometheus_client as metric families at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

#: Bucket upper bounds in seconds for task waits, run times and turnaround.
TASK_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)  # fmt: skip
#: Bucket upper bounds in seconds for one RPC.
RPC_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
               10.0, 30.0, 60.0, 300.0)  # fmt: skip
#: Bucket upper bounds in seconds for one store commit.
COMMIT_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                  0.5, 1.0, 5.0)  # fmt: skip
#: Bucket upper bounds for the number of writes in one group commit.
COMMIT_WRITES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0)

#: The label value for everything past a label's cap of distinct values.
OTHER = "other"


class Histogram:
    """Counts per bucket (not cumulative) and the sum; observed from one thread."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """Prometheus buckets ("le", count so far, ending with +Inf) and the sum."""
        counts = list(self.counts)  # one copy: the loop thread may observe meanwhile
        total = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*map(_le, self.bounds), "+Inf"), counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets, self.sum


def _le(bound: float) -> str:
    return repr(float(bound))


class LabelCap:
    """Admits the first `limit` distinct values of a label; later ones become "other"."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self._limit and value != OTHER:
            self._seen.add(value)
            return value
        return OTHER
