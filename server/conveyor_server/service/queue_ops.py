"""QueueOps: the async face of core/queues.py (QueueService): batches, wake-ups, workers.

Purges and filtered retries run as a loop of store writes of at most
queues.BATCH tasks each, so the RPCs that arrive meanwhile are committed between
them. A resume, or an UpdateQueue, wakes the Lease calls and streams parked on the queue;
retried tasks wake them as any READY task does (through the engine).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from conveyor_server.core.errors import NotFound
from conveyor_server.core.model import Task, TaskState
from conveyor_server.core.queues import (
    BATCH,
    QueueAdmin,
    QueueInfo,
    QueueUpdate,
    TaskFilter,
    TaskPage,
)
from conveyor_server.service.engine import Engine
from conveyor_server.service.settle import settle
from conveyor_server.service.workers import WorkerInfo


@dataclass(slots=True)
class QueueView:
    """A queue for QueueService: the core's view plus the workers leasing from it."""

    info: QueueInfo
    workers: int
    now: float


@dataclass(slots=True)
class WorkerView:
    info: WorkerInfo
    tasks_in_flight: int = 0
    queues: list[str] = field(default_factory=list)


class QueueOps:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.admin = QueueAdmin(engine.broker)

    def queues(self) -> list[QueueView]:
        infos = {info.name: info for info in self.admin.queues()}
        leasing = self._workers_by_queue()
        for name in leasing:
            infos.setdefault(name, QueueInfo(name))
        now = self.engine.broker.clock.now()
        return [QueueView(infos[n], leasing.get(n, 0), now) for n in sorted(infos)]

    def queue(self, name: str) -> QueueView:
        info = self.admin.queue(name)
        workers = self._workers_by_queue().get(name, 0)
        if not info.counts and not info.is_paused and not info.limits.is_limited and not workers:
            raise NotFound(
                f"queue {name!r} not found "
                "(no tasks, not paused, no limits, no worker leases from it)"
            )
        return QueueView(info, workers, self.engine.broker.clock.now())

    async def pause(self, name: str) -> QueueView:
        await settle(self.admin.pause(name))
        return self._view(name)

    async def resume(self, name: str) -> QueueView:
        was_paused = await settle(self.admin.resume(name))
        if was_paused:
            self.engine.wake_queue(name)
        return self._view(name)

    async def update(self, name: str, change: QueueUpdate) -> QueueView:
        """UpdateQueue: store the change, tell the broker's cache, wake the parked Leases
        (a limit raised or removed, or a resume, may let them take tasks)."""
        outcome = await settle(self.admin.update(name, change))
        self.engine.broker.note_limits(name, outcome.limits)
        self.engine.wake_queue(name)
        return self._view(name)

    async def purge(self, name: str, states: Collection[TaskState], limit: int) -> int:
        self.admin.check_purge(name, states, limit)
        total, after = 0, ""
        while True:
            size = BATCH if not limit else min(BATCH, limit - total)
            batch = await settle(self.admin.purge_batch(name, states, after, size))
            total += batch.count
            if batch.is_done or (limit and total >= limit):
                return total
            after = batch.next_after

    def list_tasks(
        self, where: TaskFilter, after: str, page_size: int, newest_first: bool
    ) -> TaskPage:
        return self.admin.list_tasks(where, after, page_size, newest_first=newest_first)

    async def retry_ids(self, task_ids: Sequence[str]) -> int:
        tasks = await settle(self.admin.retry_ids(task_ids), self.engine.notify_written)
        return len(tasks)

    async def retry_matching(self, where: TaskFilter, limit: int) -> int:
        self.admin.check_retry_filter(where, limit)
        total, after = 0, ""
        while True:
            size = BATCH if not limit else min(BATCH, limit - total)
            batch = await settle(
                self.admin.retry_batch(where, after, size),
                lambda b: self.engine.notify_written(b.tasks),
            )
            total += batch.count
            if batch.is_done or (limit and total >= limit):
                return total
            after = batch.next_after

    async def delete(self, task_id: str) -> Task:
        return await settle(self.admin.delete(task_id))

    def workers(self) -> list[WorkerView]:
        in_flight = self.admin.leased_by_worker()
        return [
            WorkerView(info, in_flight.get(info.id, 0), list(info.queues))
            for info in self.engine.workers.workers()
        ]

    def _view(self, name: str) -> QueueView:
        info = self.admin.queue(name)
        workers = self._workers_by_queue().get(name, 0)
        return QueueView(info, workers, self.engine.broker.clock.now())

    def _workers_by_queue(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for info in self.engine.workers.workers():
            for name in info.queues:
                counts[name] = counts.get(name, 0) + 1
        return counts
