"""The async face of the broker: core operations on the store writer, waiters, the timer.

The RPC layer calls one Engine method per RPC. The engine owns the
consequences every write has outside the store: a READY task wakes parked
Lease calls, a final task wakes parked GetResult calls, a new due time pokes
the timer, a notable outcome is logged once with the task id (every outcome at
debug level), and the metrics recorder, if any, hears of every outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from conveyor_server.core import validation
from conveyor_server.core.broker import Broker, LeaseBatch, LeaseGrant
from conveyor_server.core.errors import ShuttingDown
from conveyor_server.core.model import (
    Ack,
    EnqueueOutcome,
    Extension,
    Failure,
    ItemOutcome,
    LeaseRef,
    QueueOrder,
    Task,
    TaskSpec,
    TaskState,
    TickOutcome,
)
from conveyor_server.service.metrics.tasks import TaskMetrics
from conveyor_server.service.settle import settle
from conveyor_server.service.timer import SHARED_STORE_POLL, TaskTimer
from conveyor_server.service.waiters import LeaseWait, Waiters
from conveyor_server.service.workers import WorkerRegistry

log = logging.getLogger("conveyor.tasks")


def slot_channel(queue: str) -> str:
    """The waiters' name for "a slot of this queue freed": a Lease held back by the
    queue's concurrency or rate limit parks on it, so new READY tasks (which it could not
    take) do not wake it, while an ack does. No queue name holds a NUL."""
    return "\x00" + queue


def _due_time(task: Task) -> float | None:
    """The earliest time the timer must look at this task again."""
    state = task.state
    if state is TaskState.SCHEDULED:
        due: float | None = task.run_at
    elif state is TaskState.LEASED:
        due = task.lease_expires_at
    elif state.is_final:
        return task.remove_at
    else:
        due = None
    if task.deadline is not None and state in (TaskState.SCHEDULED, TaskState.READY):
        due = task.deadline if due is None else min(due, task.deadline)
    return due


class Engine:
    def __init__(
        self, broker: Broker, max_waiters: int = 10_000, metrics: TaskMetrics | None = None
    ) -> None:
        self.broker = broker
        self.metrics = metrics
        self.settings = broker.settings
        self.waiters = Waiters(max_waiters)
        self.timer = TaskTimer(broker, self._after_tick)
        self.workers = WorkerRegistry(broker.clock)  # for ListWorkers (service/queue_ops.py)
        self.is_stopping = False
        self._background: set[asyncio.Future[Any]] = set()
        #: Told (queue, reason) for each limit that held back a lease (metrics hook).
        self.on_throttled: Callable[[Sequence[tuple[str, str]]], None] | None = None
        #: Per limited queue, how many times its slots were freed (or its limits changed):
        #: a held-back Lease that sees it move between its look and its parking looks again.
        self._slot_turns: dict[str, int] = {}

    async def start(self) -> None:
        self.broker.store.watch(self)
        self.timer.start()

    async def stop(self) -> None:
        """Refuse new work, answer every parked long poll, stop the timer."""
        self.is_stopping = True
        self.waiters.release_all()
        await self.timer.stop()

    # -- producers -----------------------------------------------------------

    async def enqueue(self, spec: TaskSpec, reject_duplicate: bool) -> EnqueueOutcome:
        """Create a task; if a Lease is parked on its queue, lease it to that one at once.

        The hand-over saves the waiting worker a second commit (and a wake-up) on
        the way from producer to worker: the task's latency is one commit.
        """
        is_due_now = spec.run_at is None and not spec.delay
        if is_due_now and self.broker.is_limited(spec.queue):
            is_due_now = False  # no hand-over past a limit: the woken Lease leases itself
        claim = self.waiters.claim_lease(spec.queue) if is_due_now else None
        if claim is None:
            return await settle(
                self.broker.enqueue(spec, reject_duplicate=reject_duplicate),
                self._after_enqueue,
            )

        def hand_over(outcome: EnqueueOutcome) -> None:
            task = outcome.task
            self._after_enqueue(outcome)
            is_handed = not outcome.duplicate and task.state is TaskState.LEASED
            self._hand_over(claim.future, [task] if is_handed else None)

        grant = claim.grant
        try:
            return await settle(
                self.broker.enqueue(spec, reject_duplicate=reject_duplicate, lease_to=grant),
                hand_over,
            )
        except BaseException:
            # No task for the claimed Lease (yet): it looks for itself. If the write still
            # commits (this call was cancelled), hand_over finds it done and releases the task.
            self._hand_over(claim.future, None)
            raise

    def _hand_over(self, parked: LeaseWait, tasks: list[Task] | None) -> None:
        """Complete a claimed Lease; if it went away meanwhile, give its task back."""
        if not parked.done():
            parked.set_result(tasks)
        else:
            self._give_back(tasks)

    async def enqueue_batch(
        self, specs: Sequence[TaskSpec], reject_duplicate: bool
    ) -> list[EnqueueOutcome]:
        return await settle(
            self.broker.enqueue_batch(specs, reject_duplicate=reject_duplicate),
            self._after_enqueue_batch,
        )

    def _after_enqueue(self, outcome: EnqueueOutcome) -> None:
        self._after_write([outcome.task])
        if not outcome.duplicate:
            if self.metrics is not None:
                self.metrics.enqueued([outcome.task])
            _log_outcomes("enqueued", [outcome.task])

    def _after_enqueue_batch(self, outcomes: Sequence[EnqueueOutcome]) -> None:
        tasks = [o.task for o in outcomes if not o.duplicate]
        self._after_write(tasks)
        if self.metrics is not None:
            self.metrics.enqueued(tasks)
        _log_outcomes("enqueued", tasks)

    def get_task(self, task_id: str) -> Task:
        return self.broker.get_task(task_id)

    async def get_result(self, task_id: str, wait: float) -> Task:
        """The task once final, or as it is when the (bounded) wait ends."""
        wait = min(wait, self.settings.max_wait)
        task = self.broker.get_task(task_id)
        if task.state.is_final or wait <= 0 or self.is_stopping:
            return task
        # No await since the read: a finish committed from here on wakes this waiter.
        finished = self.waiters.for_task(task_id)
        # The future is this call's alone, so a timer can end the wait by completing it
        # (None: read the task as it is): cheaper than wait_for(shield(...)) on every call.
        timer = asyncio.get_running_loop().call_later(wait, _complete, finished, None)
        try:
            final = await finished
            return final if final is not None else self.broker.get_task(task_id)
        finally:
            timer.cancel()
            finished.cancel()

    async def cancel(self, task_id: str) -> Task:
        metrics = self.metrics
        if metrics is None:
            return await settle(self.broker.cancel(task_id), lambda task: self._after_write([task]))
        # Cancel is idempotent: count only a task this call moved to CANCELLED. The id is
        # checked first, as cancel() would, so the read never sees an id a key cannot hold.
        validation.check_task_id(task_id, "task_id", self.settings)
        before = self.broker.store.read(lambda txn: txn.get_task(task_id))
        was_cancelled = before is not None and before.state is TaskState.CANCELLED

        def after(task: Task) -> None:
            self._after_write([task])
            if not was_cancelled:
                metrics.cancelled([task])

        return await settle(self.broker.cancel(task_id), after)

    # -- workers -------------------------------------------------------------

    async def lease(
        self,
        queues: Sequence[str],
        max_tasks: int,
        lease_duration: float | None,
        worker_id: str,
        order: QueueOrder,
        wait: float,
    ) -> list[Task]:
        """Lease now, or park until a queue gets a READY task or the (bounded) wait ends."""
        validation.check_lease_request(queues, max_tasks, lease_duration, worker_id, self.settings)
        if self.metrics is not None:
            self.metrics.saw_worker(worker_id)
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + min(max(wait, 0.0), self.settings.max_wait)
        grant = LeaseGrant(lease_duration, worker_id)  # what an Enqueue may hand over on
        while True:
            if self.is_stopping:
                raise ShuttingDown("the broker is shutting down")
            # A read first: an empty queue costs no write transaction.
            is_empty_now = not self.broker.has_leasable(queues)
            throttled: LeaseBatch | None = None
            turns = self._turns(queues)
            if not is_empty_now:
                batch = await self._lease_once(queues, max_tasks, lease_duration, worker_id, order)
                if batch.tasks:
                    return batch.tasks
                if batch.throttled:
                    throttled = batch
            remaining = give_up_at - loop.time()
            if remaining <= 0:
                return []
            # A waiter registered with no await since the last look is woken by anything
            # committed after that look; after the lease's await, look once more.
            names, watched, wake_in = _parking(queues, throttled, self.broker)
            ready = self.waiters.for_queues(names, grant)
            try:
                if throttled is None:
                    if not is_empty_now and self.broker.has_leasable(queues):
                        continue
                elif self._turns(queues) != turns or (
                    watched and self.broker.has_leasable(watched)
                ):
                    continue  # a slot freed, or another queue got a task, meanwhile
                answer = await self._park(ready, remaining, wake_in)
                if answer is not None:
                    return answer
            finally:
                ready.cancel()

    async def _lease_once(
        self,
        queues: Sequence[str],
        max_tasks: int,
        lease_duration: float | None,
        worker_id: str,
        order: QueueOrder,
    ) -> LeaseBatch:
        leasing = settle(
            self.broker.lease(
                queues, max_tasks, lease_duration=lease_duration, worker_id=worker_id, order=order
            ),
            self._after_lease,
        )
        try:
            batch = await asyncio.shield(leasing)
        except asyncio.CancelledError:
            # The caller went away while the lease was being committed: give
            # those tasks back at once instead of letting their leases run out.
            leasing.add_done_callback(self._release_orphans)
            raise
        return batch

    async def _park(
        self, ready: LeaseWait, timeout: float, wake_in: float | None = None
    ) -> list[Task] | None:
        """Wait for a wake-up (None: look again) or the answer: the tasks an Enqueue
        handed over, or [] when the wait ran out or shutdown released it.

        The wait ends by a timer completing `ready` with _TIMED_OUT. Whatever
        completes it first wins: a hand-over that finds it done (timed out or
        cancelled with the caller) gives its task back (Engine._hand_over).
        """
        self.waiters.allow_claim(ready)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, _complete, ready, _TIMED_OUT)
        # a throttled Lease also looks again when its bucket has a token (wake_in)
        refill = None if wake_in is None else loop.call_later(wake_in, _complete, ready, None)
        try:
            handed = await ready
        except asyncio.CancelledError:
            # Cancelled after a hand-over completed `ready` but before this resumed.
            self._give_back(_handed_over(ready))
            raise
        finally:
            timer.cancel()
            if refill is not None:
                refill.cancel()
        if handed is _TIMED_OUT or (handed is None and self.is_stopping):
            return []
        return handed

    def _give_back(self, leased: Sequence[Task] | None) -> None:
        """Tasks leased for a caller that went away: release them at once."""
        if leased:
            self.release_soon([LeaseRef(t.id, t.lease_token) for t in leased])

    # Outcome writes return the settled future itself (awaitable like a coroutine), so a
    # StreamWork session can take the outcomes in a callback instead of a task per request.

    def extend(self, extensions: Sequence[Extension]) -> asyncio.Future[list[ItemOutcome]]:
        return settle(self.broker.extend(extensions), self._after_items)

    def ack(self, acks: Sequence[Ack]) -> asyncio.Future[list[ItemOutcome]]:
        return settle(self.broker.ack(acks), partial(self._after_outcomes, "acked"))

    def fail(self, failures: Sequence[Failure]) -> asyncio.Future[list[ItemOutcome]]:
        return settle(self.broker.fail(failures), partial(self._after_outcomes, "failed"))

    def release(self, leases: Sequence[LeaseRef]) -> asyncio.Future[list[ItemOutcome]]:
        return settle(self.broker.release(leases), partial(self._after_outcomes, "released"))

    def _release_orphans(self, leasing: asyncio.Future[LeaseBatch]) -> None:
        if leasing.cancelled() or leasing.exception() is not None:
            return
        self._give_back(leasing.result().tasks)

    def release_soon(self, leases: Sequence[LeaseRef]) -> None:
        """Release leases in the background: tasks leased for a caller that went away."""
        releasing = asyncio.ensure_future(self.release(leases))
        self._background.add(releasing)
        releasing.add_done_callback(self._background.discard)
        releasing.add_done_callback(_log_failure)

    # -- consequences of writes ----------------------------------------------

    # -- changes other brokers made to a shared store (core/store.py ChangeListener) --

    def tasks_ready(self, queues: Sequence[str]) -> None:
        self.waiters.notify_queues(queues)

    def tasks_finished(self, task_ids: Sequence[str]) -> None:
        self.waiters.notify_finished_ids(task_ids)

    def slots_freed(self, queues: Sequence[str]) -> None:
        """Another broker's LEASED tasks of these queues left that state."""
        self._wake_slots(queues)

    def _wake_slots(self, queues: Iterable[str]) -> None:
        broker, turns = self.broker, self._slot_turns
        freed = [q for q in queues if broker.holds_slots(q)]
        for queue in freed:
            turns[queue] = turns.get(queue, 0) + 1
        self.waiters.notify_queues([slot_channel(q) for q in freed])

    def _turns(self, queues: Sequence[str]) -> int:
        """A number that changes when a slot of any of these queues frees."""
        turns = self._slot_turns
        return sum(turns.get(q, 0) for q in queues) if turns else 0

    def wake_queue(self, queue: str) -> None:
        """The queue's limits or pause changed: every Lease parked on it looks again."""
        self._slot_turns[queue] = self._slot_turns.get(queue, 0) + 1
        self.waiters.notify_queues([queue, slot_channel(queue)])

    def notify_written(self, tasks: Sequence[Task]) -> None:
        """Tasks the scheduler created (cron fires, triggers): wake waiters, poke the timer."""
        self._after_write(tasks)
        if self.metrics is not None:
            self.metrics.enqueued(tasks)
        _log_outcomes("enqueued", tasks)

    def _after_items(self, outcomes: Iterable[ItemOutcome]) -> None:
        self._after_write([o.task for o in outcomes if o.task is not None])

    def _after_outcomes(self, what: str, outcomes: Iterable[ItemOutcome]) -> None:
        """After Ack, Fail or Release: wake waiters, count and log `what` ("acked", ...)."""
        tasks = [o.task for o in outcomes if o.task is not None]
        self._after_write(tasks)
        if self.broker.flow_limits:  # each of them left LEASED: a slot of its queue is free
            self._wake_slots({t.queue for t in tasks})
        if self.metrics is not None:
            getattr(self.metrics, what)(tasks)
        _log_outcomes(what, tasks)

    def _after_lease(self, batch: LeaseBatch) -> None:
        if batch.throttled and self.on_throttled is not None:
            self.on_throttled(batch.throttled)
        if batch.tasks:
            self.timer.poke(min(t.lease_expires_at or 0.0 for t in batch.tasks))
            if self.metrics is not None:
                self.metrics.leased(batch.tasks)
            _log_outcomes("leased", batch.tasks)
        if batch.expired:
            self._after_write(batch.expired)
            if self.metrics is not None:
                self.metrics.expired(batch.expired)
        if batch.promoted.ready_queues:  # due tasks of any queue, not only the leased ones
            self.waiters.notify_queues(batch.promoted.ready_queues)

    def _after_write(self, tasks: Sequence[Task]) -> None:
        ready: set[str] = set()
        finished: list[Task] = []
        earliest: float | None = None
        for task in tasks:
            if task.state is TaskState.READY:
                ready.add(task.queue)
                if task.deadline is None:  # nothing for the timer (the common case)
                    continue
            elif task.state.is_final:
                finished.append(task)
                if task.state is not TaskState.SUCCEEDED:
                    _log_final(task)
            due = _due_time(task)
            if due is not None and (earliest is None or due < earliest):
                earliest = due
        if ready:
            self.waiters.notify_queues(ready)
        if finished:
            self.waiters.notify_finished(finished)
        self.timer.poke(earliest)

    def _after_tick(self, outcome: TickOutcome) -> None:
        if self.metrics is not None:
            self.metrics.ticked(outcome)
        _log_outcomes("lease expired", outcome.lease_expired)
        if outcome.ready_queues:
            self.waiters.notify_queues(outcome.ready_queues)
        if outcome.finished:
            self.waiters.notify_finished(outcome.finished)
            for task in outcome.finished:
                _log_final(task)
        if outcome.lease_expired and self.broker.flow_limits:
            self._wake_slots({t.queue for t in outcome.lease_expired})


#: What a parked Lease's future holds when its wait ran out (no Enqueue hands over an
#: empty list: a hand-over is one task, a wake-up None).
_TIMED_OUT: list[Task] = []


def _parking(
    queues: Sequence[str], throttled: LeaseBatch | None, broker: Broker
) -> tuple[list[str], list[str], float | None]:
    """Where a Lease parks (waiter names), the queues it watches for new READY tasks, and
    when it must look again by itself (None: only when woken).

    A queue held back by its concurrency or rate limit is watched for a freed slot
    instead of for new READY tasks (it could take none); one held back by key_concurrency
    for both (a task of another key could go). A rate limit wakes it at the next token; a
    store other brokers share also every SHARED_STORE_POLL (a bounded re-check besides
    their notifications)."""
    if throttled is None:
        return list(queues), list(queues), None
    held = {queue for queue, reason in throttled.throttled if reason != "key_concurrency"}
    limited = {queue for queue, _ in throttled.throttled}
    names, watched = [], []
    for queue in queues:
        if queue in held:
            names.append(slot_channel(queue))
            continue
        names.append(queue)
        if queue not in limited:
            # looked at again at once if it got a task during the lease (one held back by
            # key_concurrency would always look leasable: its slot channel wakes it instead)
            watched.append(queue)
        if broker.is_limited(queue):
            names.append(slot_channel(queue))
    wake_in = None
    if throttled.refill_at is not None:
        wake_in = max(throttled.refill_at - broker.clock.now(), 0.001)
    if broker.store.is_shared:
        wake_in = SHARED_STORE_POLL if wake_in is None else min(wake_in, SHARED_STORE_POLL)
    return names, watched, wake_in


def _complete(future: asyncio.Future[Any], value: object) -> None:
    if not future.done():
        future.set_result(value)


def _handed_over(ready: LeaseWait) -> list[Task] | None:
    if ready.done() and not ready.cancelled():
        return ready.result()
    return None


def _log_failure(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("could not release orphaned leases: %s", done.exception())


def _log_outcomes(what: str, tasks: Sequence[Task]) -> None:
    """Every task outcome, at debug level (one check per batch when debug is off)."""
    if tasks and log.isEnabledFor(logging.DEBUG):
        for task in tasks:
            log.debug(
                "task %s (%s/%s) %s: now %s, attempt %d",
                task.id, task.queue, task.kind, what, task.state.name, task.attempt,
            )  # fmt: skip


def _log_final(task: Task) -> None:
    error = task.last_error
    reason = f": {error.type}: {error.message}" if error is not None else ""
    log.info(
        "task %s (%s/%s) ended %s after %d attempt(s)%s",
        task.id,
        task.queue,
        task.kind,
        task.state.name,
        task.attempt,
        reason,
    )
