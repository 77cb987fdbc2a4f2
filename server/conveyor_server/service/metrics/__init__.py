"""Metrics: what the service layer observes (task outcomes, RPCs, commits, cron), kept as
plain numbers on the hot path and turned into Prometheus metrics only when scraped.

Recorders (`tasks.py`, `rpc.py`, `store.py`, `schedules.py`) are called from the engine's,
the RPC guard's, the group committer's and the cron loop's outcome hooks; `exporter.py`
reads them, the store's depth counts and sizes, and serves `/metrics`. None of them is
called from the core or the store (their hooks are plain callbacks the wiring sets).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor_server.service.metrics.rpc import RpcMetrics
from conveyor_server.service.metrics.schedules import ScheduleMetrics
from conveyor_server.service.metrics.store import CommitMetrics
from conveyor_server.service.metrics.tasks import TaskMetrics


@dataclass(slots=True)
class Metrics:
    """Every recorder one broker feeds."""

    tasks: TaskMetrics = field(default_factory=TaskMetrics)
    rpc: RpcMetrics = field(default_factory=RpcMetrics)
    commits: CommitMetrics = field(default_factory=CommitMetrics)
    schedules: ScheduleMetrics = field(default_factory=ScheduleMetrics)


__all__ = ["CommitMetrics", "Metrics", "RpcMetrics", "ScheduleMetrics", "TaskMetrics"]
