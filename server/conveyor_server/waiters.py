"""In-memory waiters for long polls: Lease waits for a queue, GetResult for a task to finish.

Nothing here polls: the engine calls `notify_*` after the commit that made a
task READY or final, and that completes the parked futures.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable

from conveyor_server.core.errors import ResourceExhausted
from conveyor_server.core.model import Task


class Waiters:
    """Parked Lease and GetResult calls, bounded in number."""

    def __init__(self, max_waiters: int = 10_000) -> None:
        self._max = max_waiters
        self._by_queue: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._by_task: dict[str, set[asyncio.Future[Task | None]]] = defaultdict(set)
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def _reserve(self) -> None:
        if self._count >= self._max:
            raise ResourceExhausted(
                f"too many waiting calls ({self._max}); retry later or wait less"
            )
        self._count += 1

    def for_queues(self, queues: Iterable[str]) -> asyncio.Future[None]:
        """A future completed when any of the queues gets a READY task (register before looking)."""
        self._reserve()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        names = tuple(queues)
        for queue in names:
            self._by_queue[queue].add(future)

        def forget(_: asyncio.Future[None]) -> None:
            self._count -= 1
            for queue in names:
                parked = self._by_queue.get(queue)
                if parked is not None:
                    parked.discard(future)
                    if not parked:
                        del self._by_queue[queue]

        future.add_done_callback(forget)
        return future

    def for_task(self, task_id: str) -> asyncio.Future[Task | None]:
        """A future completed with the task when it reaches a final state."""
        self._reserve()
        future: asyncio.Future[Task | None] = asyncio.get_running_loop().create_future()
        self._by_task[task_id].add(future)

        def forget(_: asyncio.Future[Task | None]) -> None:
            self._count -= 1
            parked = self._by_task.get(task_id)
            if parked is not None:
                parked.discard(future)
                if not parked:
                    del self._by_task[task_id]

        future.add_done_callback(forget)
        return future

    def notify_queues(self, queues: Iterable[str]) -> None:
        for queue in queues:
            for future in list(self._by_queue.get(queue, ())):
                if not future.done():
                    future.set_result(None)

    def notify_finished(self, tasks: Iterable[Task]) -> None:
        for task in tasks:
            for future in list(self._by_task.get(task.id, ())):
                if not future.done():
                    future.set_result(task)

    def release_all(self) -> None:
        """Complete every parked call (shutdown): Lease answers empty, GetResult answers now."""
        for parked in list(self._by_queue.values()):
            for future in list(parked):
                if not future.done():
                    future.set_result(None)
        for parked_tasks in list(self._by_task.values()):
            for task_future in list(parked_tasks):
                if not task_future.done():
                    task_future.set_result(None)
