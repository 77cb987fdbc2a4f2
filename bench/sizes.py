"""Counts per size. `tiny` proves the suite works (CI); `default` gives stable figures in a
few minutes; `full` is the issue's depth of 1,000,000 queued tasks."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sizes:
    enqueue: int  # single enqueues (AsyncClient and raw unary)
    enqueue_many: int  # tasks sent with enqueue_many, 1000 per call
    drain: int  # tasks pre-filled then drained (SDK worker and raw Lease+Ack)
    roundtrip: int  # sequential round trips
    depth: int  # tasks queued before the depth probes
    depth_probe: int  # tasks enqueued and leased by each depth probe
    max_seconds: float  # bound on any one timed loop


SIZES: dict[str, Sizes] = {
    "tiny": Sizes(300, 3_000, 1_000, 50, 2_000, 300, 20),
    "default": Sizes(5_000, 50_000, 20_000, 2_000, 50_000, 5_000, 60),
    "full": Sizes(20_000, 200_000, 100_000, 5_000, 1_000_000, 20_000, 600),
}


def sizes_for(size: str, count: int | None) -> Sizes:
    """The preset, with `--count` (the old flag) overriding the per-task-kind counts."""
    sizes = SIZES[size]
    if count is None:
        return sizes
    return replace(
        sizes,
        enqueue=count,
        enqueue_many=max(1000, count * 10 // 1000 * 1000),
        drain=count * 4,
        roundtrip=max(10, count // 2),
    )
