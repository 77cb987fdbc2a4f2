"""TaskMetrics: task outcomes by queue and kind, and the wait, run and turnaround histograms.

Called by the engine (service/engine.py) after each write commits, on the event
loop, with the tasks as they were committed. Each call walks its batch once:
a dict update per task and a histogram observation or two.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from conveyor_server.core.model import Task, TaskState, TickOutcome
from conveyor_server.service.metrics.histogram import TASK_SECONDS, Histogram, LabelCap

#: Every outcome counted, in the order they are exported (conveyor_tasks_<outcome>_total).
OUTCOMES = ("enqueued", "leased", "acked", "failed", "retried", "dead", "cancelled", "expired",
            "lease_expired")  # fmt: skip
#: Distinct queues and kinds labelled by name; past these, "other".
MAX_QUEUES = 100
MAX_KINDS = 100
#: A worker counts as seen for this long after its last Lease (or stream lease).
WORKER_WINDOW_SECONDS = 300.0
_MAX_WORKERS_TRACKED = 10_000

_WAITING = (TaskState.READY, TaskState.SCHEDULED)
_Value = Callable[[Task], float]


class TaskMetrics:
    """Counters keyed (outcome, queue, kind); histograms keyed by queue."""

    def __init__(self, max_queues: int = MAX_QUEUES, max_kinds: int = MAX_KINDS) -> None:
        self.queue_label = LabelCap(max_queues)
        self.kind_label = LabelCap(max_kinds)
        self.counts: dict[tuple[str, str, str], int] = {}
        self.queue_wait: dict[str, Histogram] = {}
        self.run_time: dict[str, Histogram] = {}
        self.turnaround: dict[str, Histogram] = {}
        self.workers: dict[str, float] = {}
        #: (queue, reason) -> lease passes a flow limit held back (conveyor_lease_throttled)
        self.throttled_counts: dict[tuple[str, str], int] = {}

    # -- what the engine reports ----------------------------------------------

    def enqueued(self, tasks: Sequence[Task]) -> None:
        """New tasks (not duplicates). One handed to a parked Lease is leased as well."""
        self._count("enqueued", tasks)
        handed = [t for t in tasks if t.state is TaskState.LEASED]
        if handed:
            self.leased(handed)

    def leased(self, tasks: Sequence[Task]) -> None:
        self._count("leased", tasks)
        self._observe(self.queue_wait, tasks, _wait)

    def expired(self, tasks: Sequence[Task]) -> None:
        """Tasks whose deadline passed before a worker took them."""
        self._count("expired", tasks)
        self._observe(self.turnaround, tasks, _turnaround)

    def acked(self, tasks: Sequence[Task]) -> None:
        self._count("acked", tasks)
        self._observe(self.run_time, tasks, _run)
        self._observe(self.turnaround, tasks, _turnaround)

    def failed(self, tasks: Sequence[Task]) -> None:
        """Fail reports a worker made: each is retried, dead, or cancelled (asked to stop)."""
        self._count("failed", tasks)
        self._observe(self.run_time, tasks, _run)
        self._after_attempt(tasks)

    def released(self, tasks: Sequence[Task]) -> None:
        """Leases given back: only a task that was asked to stop ends (cancelled) here."""
        self._ended(tasks, TaskState.CANCELLED, "cancelled")

    def cancelled(self, tasks: Sequence[Task]) -> None:
        self._ended(tasks, TaskState.CANCELLED, "cancelled")

    def ticked(self, outcome: TickOutcome) -> None:
        """A timer pass: deadlines that passed, leases that ran out."""
        if outcome.finished:
            self._ended(outcome.finished, TaskState.EXPIRED, "expired")
        if outcome.lease_expired:
            self._count("lease_expired", outcome.lease_expired)
            self._after_attempt(outcome.lease_expired)

    def throttled(self, held: Iterable[tuple[str, str]]) -> None:
        """LeaseBatch.throttled: (queue, reason) for each queue a limit held back in a lease
        pass; reason is the limit ("rate", "concurrency", "key_concurrency")."""
        counts = self.throttled_counts
        for queue, reason in held:
            key = (queue, reason)
            count = counts.get(key)
            if count is None:  # first sight of this queue and reason: cap the queue label
                key = (self.queue_label(queue), reason)
                count = counts.get(key, 0)
            counts[key] = count + 1

    def saw_worker(self, worker_id: str) -> None:
        if worker_id:
            workers = self.workers
            workers[worker_id] = time.monotonic()
            if len(workers) > _MAX_WORKERS_TRACKED:
                self.workers_seen()

    def workers_seen(self) -> int:
        """Distinct worker ids that leased within the window; forgets older ones."""
        horizon = time.monotonic() - WORKER_WINDOW_SECONDS
        workers = self.workers
        for worker_id, seen in list(workers.items()):
            if seen < horizon:
                workers.pop(worker_id, None)
        if len(workers) > _MAX_WORKERS_TRACKED:  # all recent: keep the newest
            newest = sorted(workers.items(), key=lambda item: item[1])[-_MAX_WORKERS_TRACKED:]
            self.workers = dict(newest)
        return len(self.workers)

    # -- helpers ----------------------------------------------------------------

    def _after_attempt(self, tasks: Iterable[Task]) -> None:
        """An attempt that ended without success: retried, dead or cancelled."""
        retried = [t for t in tasks if t.state in _WAITING]
        dead = [t for t in tasks if t.state is TaskState.DEAD]
        cancelled = [t for t in tasks if t.state is TaskState.CANCELLED]
        if retried:
            self._count("retried", retried)
        if dead:
            self._count("dead", dead)
            self._observe(self.turnaround, dead, _turnaround)
        if cancelled:
            self._count("cancelled", cancelled)
            self._observe(self.turnaround, cancelled, _turnaround)

    def _ended(self, tasks: Sequence[Task], state: TaskState, outcome: str) -> None:
        ended = [t for t in tasks if t.state is state]
        if ended:
            self._count(outcome, ended)
            self._observe(self.turnaround, ended, _turnaround)

    def _count(self, outcome: str, tasks: Iterable[Task]) -> None:
        counts = self.counts
        for task in tasks:
            key = (outcome, task.queue, task.kind)
            count = counts.get(key)
            if count is None:  # first sight of this key: cap its labels
                key = (outcome, self.queue_label(task.queue), self.kind_label(task.kind))
                count = counts.get(key, 0)
            counts[key] = count + 1

    def _observe(
        self, histograms: dict[str, Histogram], tasks: Iterable[Task], value_of: _Value
    ) -> None:
        queue: str | None = None
        histogram: Histogram | None = None
        for task in tasks:
            if task.queue != queue:
                queue = task.queue
                histogram = histograms.get(queue)
                if histogram is None:
                    label = self.queue_label(queue)
                    histogram = histograms.get(label)
                    if histogram is None:
                        histogram = histograms[label] = Histogram(TASK_SECONDS)
            value = value_of(task)
            histogram.observe(value if value > 0.0 else 0.0)  # type: ignore[union-attr]


def _wait(task: Task) -> float:
    """Ready -> leased: from the time it was due (its run time) to its lease."""
    return (task.leased_at or task.run_at) - task.run_at


def _run(task: Task) -> float:
    """Leased -> the worker's ack or fail of that attempt."""
    return task.updated_at - (task.leased_at or task.updated_at)


def _turnaround(task: Task) -> float:
    """Enqueued -> final."""
    return (task.finished_at or task.updated_at) - task.created_at
