"""In-memory waiters for long polls: Lease waits for a queue, GetResult for a task to finish.

Nothing here polls: the engine calls `notify_*` after the commit that made a
task READY or final, and that completes the parked futures.

A Lease that has looked and found nothing can also be *claimed* while it
waits (`allow_claim`): an Enqueue for one of its queues takes it
(`claim_lease`), leases the new task to it in the enqueue's own transaction,
and completes the future with that task. A woken Lease gets None and looks
for tasks itself.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from conveyor_server.core.broker import LeaseGrant
from conveyor_server.core.errors import ResourceExhausted
from conveyor_server.core.model import Task

#: A parked Lease's future: None when woken to look again, or the tasks handed to it.
LeaseWait = asyncio.Future[list[Task] | None]


@dataclass(frozen=True, slots=True)
class LeaseClaim:
    """What a parked Lease asked for, so an Enqueue can lease a task to it directly."""

    future: LeaseWait
    queues: tuple[str, ...]
    grant: LeaseGrant


class Waiters:
    """Parked Lease and GetResult calls, bounded in number."""

    def __init__(self, max_waiters: int = 10_000) -> None:
        self._max = max_waiters
        # Insertion-ordered, so the longest-parked Lease is claimed first.
        self._by_queue: dict[str, dict[LeaseWait, LeaseClaim]] = defaultdict(dict)
        self._by_task: dict[str, set[asyncio.Future[Task | None]]] = defaultdict(set)
        self._claimable: set[LeaseWait] = set()
        self._count = 0

    @property
    def parked(self) -> int:
        """Calls parked here now (Lease and GetResult long polls, streams' leasers)."""
        return self._count

    def _reserve(self) -> None:
        if self._count >= self._max:
            raise ResourceExhausted(
                f"too many waiting calls ({self._max}); retry later or wait less"
            )
        self._count += 1

    def for_queues(self, queues: Iterable[str], grant: LeaseGrant) -> LeaseWait:
        """A future completed when any of the queues gets a READY task.

        Register it with no await since the last look at those queues: anything committed
        after that look then wakes it (the engine's lease loop keeps to this)."""
        self._reserve()
        future: LeaseWait = asyncio.get_running_loop().create_future()
        names = tuple(queues)
        claim = LeaseClaim(future, names, grant)
        for queue in names:
            self._by_queue[queue][future] = claim

        def forget(_: LeaseWait) -> None:
            self._count -= 1
            self._claimable.discard(future)
            self._unpark(future, names)

        future.add_done_callback(forget)
        return future

    def _unpark(self, future: LeaseWait, queues: Iterable[str]) -> None:
        for queue in queues:
            parked = self._by_queue.get(queue)
            if parked is not None:
                parked.pop(future, None)
                if not parked:
                    del self._by_queue[queue]

    def allow_claim(self, future: LeaseWait) -> None:
        """The Lease has looked, found nothing and now waits: an Enqueue may claim it.

        Not before: a Lease still committing its own lease write would get a
        task handed over as well, only to give it back.
        """
        if not future.done():
            self._claimable.add(future)

    def claim_lease(self, queue: str) -> LeaseClaim | None:
        """Take the longest-waiting claimable Lease on `queue` out of reach of `notify_queues`.

        The caller must complete the claim's future: with the tasks it leased to
        it, or None (nothing to hand over) so that the Lease looks for itself.
        """
        if not self._claimable:
            return None
        parked = self._by_queue.get(queue)
        if not parked:
            return None
        claim = next((c for f, c in parked.items() if f in self._claimable and not f.done()), None)
        if claim is not None:  # off every list at once: one claim, one hand-over
            self._claimable.discard(claim.future)
            self._unpark(claim.future, claim.queues)
        return claim

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

    def notify_finished_ids(self, task_ids: Iterable[str]) -> None:
        """Another process finished these tasks: the parked calls read them again."""
        for task_id in task_ids:
            for future in list(self._by_task.get(task_id, ())):
                if not future.done():
                    future.set_result(None)

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
