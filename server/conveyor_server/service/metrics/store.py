"""CommitMetrics: how long each group commit took and how many writes it carried.

The group committer (store/group_commit.py) calls `committed` after each group,
on whichever thread committed it (the writer thread, or the loop inline), so it
takes a lock; there is one call per group, not per write.
"""

from __future__ import annotations

import threading

from conveyor_server.service.metrics.histogram import COMMIT_SECONDS, COMMIT_WRITES, Histogram


class CommitMetrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds = Histogram(COMMIT_SECONDS)
        self.writes = Histogram(COMMIT_WRITES)

    def committed(self, writes: int, seconds: float) -> None:
        with self.lock:
            self.seconds.observe(seconds)
            self.writes.observe(writes)
