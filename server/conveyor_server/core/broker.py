"""The broker: what Enqueue, Lease, ExtendLease, Ack, Fail, Release, Cancel and the timer mean.

Every operation validates its input first (raising InvalidArgument before any
write), then hands one write function to the store; the returned future
resolves after the commit that holds the change. Time comes from the injected
clock and is read once per call, so a whole batch sees one "now".
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from conveyor_server.core import fair, flow, validation
from conveyor_server.core.clock import Clock
from conveyor_server.core.errors import (
    AlreadyExists,
    ConveyorError,
    FailedPrecondition,
    InvalidArgument,
    LeaseLost,
    NotFound,
)
from conveyor_server.core.ids import new_task_id
from conveyor_server.core.model import (
    Ack,
    EnqueueOutcome,
    Extension,
    Failure,
    ItemOutcome,
    LeaseRef,
    QueueOrder,
    Task,
    TaskError,
    TaskSpec,
    TaskState,
    TickOutcome,
)
from conveyor_server.core.retry import backoff_delay
from conveyor_server.core.settings import BrokerSettings
from conveyor_server.core.sizes import answer_budget, leased_task_bytes
from conveyor_server.core.transitions import finish, holds_unique_key, requeue, start_lease
from conveyor_server.core.validation import quote

if TYPE_CHECKING:  # the core sees the store only through its protocol
    from conveyor_server.core.store import Store, TaskTxn

T = TypeVar("T")


@dataclass(slots=True)
class LeaseBatch:
    """Tasks handed out by one Lease, tasks found past their deadline on the way, and the
    queues of scheduled tasks it found due and made READY (their waiters need waking).

    `throttled`: (queue, reason) for each limit that kept READY tasks from this lease,
    reason one of flow.THROTTLE_REASONS ("rate", "concurrency", "key_concurrency").
    `refill_at`: when a rate-limited queue among them next has a token (None: none is).
    """

    tasks: list[Task] = field(default_factory=list)
    expired: list[Task] = field(default_factory=list)
    promoted: TickOutcome = field(default_factory=TickOutcome)
    throttled: list[tuple[str, str]] = field(default_factory=list)
    refill_at: float | None = None


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A waiting worker's lease terms: an Enqueue may lease its new task to it at once."""

    lease_duration: float | None
    worker_id: str


class Broker:
    """The task lifecycle over a Store. Thread-compatible: call it from one thread."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: BrokerSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings or BrokerSettings()
        self._rng = rng or random.Random()
        self._round_robin = 0
        #: Queues with stored limits, by name: a hint for the engine (hand-overs, freed
        #: slots), never what a lease obeys. Every lease and every hand-over reads its
        #: queues' stored flows in its own write (queue_flows_for), so a limit set through
        #: another broker, or not yet noted here, binds it at once.
        self.flow_limits: dict[str, flow.QueueLimits] = {}
        #: Queues that may hold READY tasks with a concurrency key (an over-estimate).
        self.keyed_queues: set[str] = set()
        #: Per queue, the key served last: where the next lease's round robin resumes.
        self._key_cursors: dict[str, str] = {}
        self.refresh_flows()

    # -- flow control ----------------------------------------------------------

    def refresh_flows(self) -> None:
        """Load which queues have limits or keyed tasks (at start; on a store other
        brokers share, again every timer pass: service/engine.py)."""

        def look(txn: TaskTxn) -> tuple[dict[str, flow.QueueLimits], list[str]]:
            flows = {name: f.limits for name, f in txn.queue_flows().items()}
            return flows, txn.keyed_queues()

        limits, keyed = self.store.read(look)
        self.flow_limits = {name: lim for name, lim in limits.items() if lim.is_limited}
        self.keyed_queues.update(keyed)

    def _note_stored(self, queues: Sequence[str], flows: dict[str, flow.QueueFlow]) -> None:
        """What a lease read from the store wins over the cache (a hint for the engine)."""
        for queue in queues:
            stored = flows.get(queue)
            self.note_limits(queue, stored.limits if stored is not None else flow.QueueLimits())

    def note_limits(self, queue: str, limits: flow.QueueLimits) -> None:
        """UpdateQueue committed new limits for the queue (core/queues.py)."""
        if limits.is_limited:
            self.flow_limits[queue] = limits
        else:
            self.flow_limits.pop(queue, None)

    def is_limited(self, queue: str) -> bool:
        """Whether the queue has a rate or concurrency limit (as far as this broker knows)."""
        return queue in self.flow_limits

    def holds_slots(self, queue: str) -> bool:
        """Whether a LEASED task of the queue leaving that state may let a Lease go on."""
        limits = self.flow_limits.get(queue)
        return limits is not None and bool(limits.concurrency or limits.key_concurrency)

    def note_ready(self, task: Task) -> None:
        """A task became READY outside enqueue: a keyed one puts its queue on the keyed path."""
        if task.concurrency_key and task.state is TaskState.READY:
            self.keyed_queues.add(task.queue)

    # -- producers -----------------------------------------------------------

    def enqueue(
        self,
        spec: TaskSpec,
        *,
        reject_duplicate: bool = False,
        lease_to: LeaseGrant | None = None,
    ) -> Future[EnqueueOutcome]:
        """Create one task (or find its duplicate).

        With `lease_to` (a worker is waiting for this queue) a new task that is
        due now is leased to that worker in the same transaction: one commit
        instead of two, and the outcome's task is LEASED.

        Raises:
            InvalidArgument: a field is malformed (raised at once, nothing written).
        The future may raise AlreadyExists (reject_duplicate) or StoreFull.
        """
        now = self.clock.now()
        validation.check_spec(spec, self.settings, now)

        def apply(txn: TaskTxn) -> EnqueueOutcome:
            return self._create_checked(txn, spec, now, reject_duplicate, lease_to)

        return self.store.write(apply, is_growth=True)

    def enqueue_batch(
        self, specs: Sequence[TaskSpec], *, reject_duplicate: bool = False
    ) -> Future[list[EnqueueOutcome]]:
        """Create many tasks atomically: all are committed together or none is.

        Raises:
            InvalidArgument: empty, too many, or a malformed task (named "tasks[i].field").
        """
        now = self.clock.now()
        if not specs:
            raise InvalidArgument("tasks: the batch is empty")
        if len(specs) > self.settings.max_batch:
            raise InvalidArgument(
                f"tasks: {len(specs)} tasks is over the limit of {self.settings.max_batch}"
            )
        for index, spec in enumerate(specs):
            validation.check_spec(spec, self.settings, now, prefix=f"tasks[{index}].")
        specs = list(specs)

        def apply(txn: TaskTxn) -> list[EnqueueOutcome]:
            return [self._create_checked(txn, spec, now, reject_duplicate) for spec in specs]

        return self.store.write(apply, is_growth=True)

    def _create_checked(
        self,
        txn: TaskTxn,
        spec: TaskSpec,
        now: float,
        reject_duplicate: bool,
        lease_to: LeaseGrant | None = None,
    ) -> EnqueueOutcome:
        """create_task, refusing a duplicate when asked to (the whole write rolls back)."""
        outcome = self.create_task(txn, spec, now, lease_to)
        if outcome.duplicate and reject_duplicate:
            raise AlreadyExists(f"task {quote(outcome.task.id)} already exists")
        return outcome

    def create_task(
        self, txn: TaskTxn, spec: TaskSpec, now: float, lease_to: LeaseGrant | None = None
    ) -> EnqueueOutcome:
        """Create one task inside a running write function, or find its duplicate.

        For callers that must commit a task together with other changes (the
        scheduler records a fired tick in the same transaction). The spec must
        already be valid; nothing is checked here. See `enqueue` for `lease_to`.
        """
        existing = self._find_duplicate(txn, spec, now)
        if existing is not None:
            return EnqueueOutcome(existing, duplicate=True)
        task = self._new_task(txn, spec, now)
        if task.concurrency_key:
            self.keyed_queues.add(task.queue)
        if (
            lease_to is not None
            and task.state is TaskState.READY
            and (task.deadline is None or task.deadline > now)
            and not txn.is_paused(task.queue)
            and not txn.queue_flows_for([task.queue])  # stored limits: lease() checks them
        ):
            start_lease(task, now, lease_to.lease_duration, lease_to.worker_id)
        txn.put_task(task, is_new=True)  # _find_duplicate looked; a generated id is fresh
        if task.unique_key:
            txn.put_unique(task.queue, task.unique_key, task.id)
        return EnqueueOutcome(task, duplicate=False)

    def _find_duplicate(self, txn: TaskTxn, spec: TaskSpec, now: float) -> Task | None:
        if spec.id:
            existing = txn.get_task(spec.id)
            if existing is not None:
                return existing
        if spec.unique_key:
            task_id = txn.get_unique(spec.queue, spec.unique_key)
            if task_id is not None:
                holder = txn.get_task(task_id)
                if holder is not None and holds_unique_key(holder, now):
                    return holder
        return None

    def _new_task(self, txn: TaskTxn, spec: TaskSpec, now: float) -> Task:
        s = self.settings
        run_at = spec.run_at if spec.run_at is not None else now + (spec.delay or 0.0)
        return Task(
            id=spec.id or new_task_id(now),
            queue=spec.queue,
            kind=spec.kind,
            payload=spec.payload,
            content_type=spec.content_type,
            headers=dict(spec.headers) if spec.headers else {},
            priority=spec.priority,
            run_at=run_at,
            deadline=spec.deadline,
            max_attempts=spec.max_attempts or s.default_max_attempts,
            retry_policy=spec.retry_policy or s.default_retry_policy,
            lease_duration=spec.lease_duration or s.default_lease_duration,
            unique_key=spec.unique_key,
            unique_window=spec.unique_window or 0.0,
            concurrency_key=spec.concurrency_key,
            result_retention=(
                s.default_result_retention
                if spec.result_retention is None
                else spec.result_retention
            ),
            state=TaskState.SCHEDULED if run_at > now else TaskState.READY,
            sequence=txn.next_sequence(),
            created_at=now,
            updated_at=now,
        )

    def has_leasable(self, queues: Sequence[str]) -> bool:
        """Whether a Lease on these queues could find a task now (a read; nothing written).

        Lets a Lease with nothing to take park at once instead of committing an
        empty write: a scheduled task that is due but not yet promoted counts.
        """
        now = self.clock.now()
        # Keyed tasks: only this process writes an unshared store, so `keyed_queues` names
        # every queue that may hold some; a shared one may hold other brokers' (a seek).
        is_shared, keyed_queues = self.store.is_shared, self.keyed_queues

        def look(txn: TaskTxn) -> bool:
            if txn.due_task_ids("scheduled", now, 1):
                return True
            return any(
                (
                    txn.ready_task_ids(queue, 1)
                    or ((is_shared or queue in keyed_queues) and txn.ready_keys(queue, "", 1))
                )
                and not txn.is_paused(queue)
                for queue in queues
            )

        return self.store.read(look)

    def get_task(self, task_id: str) -> Task:
        """The task as stored now.

        Raises:
            InvalidArgument: empty id.
            NotFound: no such task (or removed after its retention).
        """
        validation.check_task_id(task_id, "task_id", self.settings)
        task = self.store.read(lambda txn: txn.get_task(task_id))
        if task is None:
            raise NotFound(f"task {quote(task_id)} not found")
        return task

    def cancel(self, task_id: str) -> Future[Task]:
        """Cancel a waiting task at once, or ask the worker holding it to stop.

        Raises:
            InvalidArgument: empty id.
        The future may raise NotFound or FailedPrecondition (already finished otherwise).
        """
        validation.check_task_id(task_id, "task_id", self.settings)
        now = self.clock.now()

        def apply(txn: TaskTxn) -> Task:
            task = txn.get_task(task_id)
            if task is None:
                raise NotFound(f"task {quote(task_id)} not found")
            if task.state is TaskState.CANCELLED or (
                task.cancel_requested and not task.state.is_final
            ):
                return task  # already cancelled or already asked to stop: idempotent
            if task.state.is_final:
                raise FailedPrecondition(
                    f"task {quote(task_id)} already finished as {task.state.name}"
                )
            if task.state is TaskState.LEASED:
                task.cancel_requested = True
                task.updated_at = now
            else:
                finish(task, TaskState.CANCELLED, now)
            txn.put_task(task)
            return task

        return self.store.write(apply)

    # -- workers -------------------------------------------------------------

    def lease(
        self,
        queues: Sequence[str],
        max_tasks: int,
        *,
        lease_duration: float | None = None,
        worker_id: str = "",
        order: QueueOrder = QueueOrder.STRICT,
    ) -> Future[LeaseBatch]:
        """Lease up to max_tasks READY tasks from the queues, in the order given, as many
        as fit in one answer (sizes.answer_budget; at least one).

        Raises:
            InvalidArgument: no queues, a bad name, a bad duration, too many tasks.
        """
        validation.check_lease_request(queues, max_tasks, lease_duration, worker_id, self.settings)
        now = self.clock.now()
        ordered = list(queues)
        if order is QueueOrder.ROUND_ROBIN and len(ordered) > 1:
            shift = self._round_robin % len(ordered)
            self._round_robin += 1
            ordered = ordered[shift:] + ordered[:shift]

        budget = answer_budget(self.settings)

        keyed_queues, is_shared = self.keyed_queues, self.store.is_shared

        def apply(txn: TaskTxn) -> LeaseBatch:
            batch = LeaseBatch()
            # Every queue's stored limits, read in this write (not the cache: a limit set
            # through another broker, or committed a moment ago, binds this lease), all
            # at once in queue order before any task: brokers listing the queues in other
            # orders (round robin) cannot lock their rows crosswise. A queue without
            # limits has no row: nothing is locked.
            flows = txn.queue_flows_for(ordered)
            self._note_stored(ordered, flows)
            self._promote_scheduled(txn, now, batch.promoted)
            room = budget  # bytes the answer may still carry; the first task always goes

            def lease_flow(queue: str) -> bool:
                """The flow path for one queue; True if the answer is full."""
                nonlocal room
                lease = _FlowLease(txn, now, lease_duration, worker_id, batch, room)
                want = max_tasks - len(batch.tasks)
                is_full = self._lease_flow(lease, queue, want, flows.get(queue))
                room = lease.room
                return is_full

            for queue in ordered:
                if len(batch.tasks) >= max_tasks:
                    break
                if txn.is_paused(queue):  # a paused queue hands out nothing (core/queues.py)
                    continue
                if queue in flows or queue in keyed_queues:
                    if lease_flow(queue):
                        return batch
                    continue
                while len(batch.tasks) < max_tasks:
                    ids = txn.ready_task_ids(queue, max_tasks - len(batch.tasks))
                    if not ids:
                        # Keyed tasks this broker missed (another broker's: the fair path).
                        # Unshared, `keyed_queues` is exact: no seek (a round trip in SQL).
                        if is_shared and txn.ready_keys(queue, "", 1):
                            keyed_queues.add(queue)
                            if lease_flow(queue):
                                return batch
                        break
                    for task_id in ids:
                        task = _must_get(txn, task_id)
                        if task.deadline is not None and task.deadline <= now:
                            finish(task, TaskState.EXPIRED, now)
                            batch.expired.append(task)
                        else:
                            room -= leased_task_bytes(task)
                            if room < 0 and batch.tasks:
                                return batch  # the answer is full: the rest stay READY
                            start_lease(task, now, lease_duration, worker_id)
                            batch.tasks.append(task)
                        txn.put_task(task)
            return batch

        return self.store.write(apply)

    def _lease_flow(
        self, lease: _FlowLease, queue: str, want: int, stored: flow.QueueFlow | None
    ) -> bool:
        """Lease up to `want` tasks of a queue with limits or keyed tasks: within its
        concurrency room and its bucket's tokens, fairly between keys (core/fair.py).
        Returns whether the answer is full. `stored`: the queue's flow as this write read
        it (queue_flows_for, at the start of the lease): limits come from the store, not
        the cache."""
        txn, now, batch = lease.txn, lease.now, lease.batch
        limits = stored.limits if stored is not None else flow.QueueLimits()
        take, capped_by = want, ""
        if limits.concurrency:
            room = limits.concurrency - txn.leased_count(queue)
            if room <= 0:
                if _has_ready(txn, queue):
                    batch.throttled.append((queue, "concurrency"))
                return False
            if room < take:
                take, capped_by = room, "concurrency"
        if stored is not None and stored.tokens_at > now and limits.rate:
            stored = flow.rebased(stored, now)  # the clock stepped back: refill from now
            txn.put_queue_flow(queue, stored)
        tokens = flow.whole_tokens(stored, now) if stored is not None else None
        if tokens is not None and stored is not None:
            if tokens < 1:
                if _has_ready(txn, queue):
                    batch.throttled.append((queue, "rate"))
                    _note_refill(batch, flow.next_token_at(stored, now))
                return False
            if tokens < take:
                take, capped_by = tokens, "rate"
        chosen = fair.pick(txn, queue, take, limits.key_concurrency, self._key_cursors.get(queue))
        if chosen.is_key_throttled:
            batch.throttled.append((queue, "key_concurrency"))
        if stored is None and not txn.ready_keys(queue, "", 1):
            self.keyed_queues.discard(queue)  # no keyed task left: back to the plain path
        before = len(batch.tasks)
        is_full = False
        cursor: str | None = None  # the key of the last task taken (see fair.Pick.cursor)
        for task_id, key in zip(chosen.task_ids, chosen.keys, strict=True):
            if not lease.take(_must_get(txn, task_id)):
                is_full = True
                break
            cursor = key
        if not is_full and chosen.cursor is not None:
            cursor = chosen.cursor
        if cursor is not None:
            self._key_cursors[queue] = cursor
        leased = len(batch.tasks) - before  # tasks past their deadline take no token
        if stored is not None and limits.rate and leased:
            stored = flow.take(stored, now, leased)
            txn.put_queue_flow(queue, stored)
        if capped_by and leased >= take and _has_ready(txn, queue):
            batch.throttled.append((queue, capped_by))
            if capped_by == "rate" and stored is not None:
                _note_refill(batch, flow.next_token_at(stored, now))
        return is_full

    def extend(self, extensions: Sequence[Extension]) -> Future[list[ItemOutcome]]:
        """Heartbeat: push each lease's expiry to now + its duration."""
        now = self.clock.now()

        def extend_one(task: Task, item: Extension) -> None:
            validation.check_lease_duration(item.lease_duration, "lease_duration", self.settings)
            task.lease_expires_at = now + (item.lease_duration or task.lease_duration)
            task.updated_at = now

        return self._per_lease(extensions, now, extend_one)

    def ack(self, acks: Sequence[Ack]) -> Future[list[ItemOutcome]]:
        """Finish leased tasks as SUCCEEDED with their results."""
        now = self.clock.now()
        limit = self.settings.max_payload_bytes

        def ack_one(task: Task, item: Ack) -> None:
            if len(item.result.data) > limit:
                raise InvalidArgument(
                    f"result: {len(item.result.data)} bytes is over the limit of {limit} bytes"
                )
            validation.check_text(item.result.content_type, "result.content_type", 128)
            task.result = item.result
            finish(task, TaskState.SUCCEEDED, now)

        return self._per_lease(acks, now, ack_one)

    def fail(self, failures: Sequence[Failure]) -> Future[list[ItemOutcome]]:
        """Record failed attempts: retry with backoff, or DEAD, or CANCELLED if asked to stop."""
        now = self.clock.now()
        s = self.settings

        def fail_one(task: Task, item: Failure) -> None:
            validation.check_text(item.error_type, "error.type", 256)
            validation.check_text(item.error_message, "error.message", s.max_error_text)
            validation.check_text(item.error_details, "error.details", s.max_error_text)
            validation.check_duration(item.retry_delay, "retry_delay")
            task.last_error = TaskError(
                type=item.error_type or "Error",
                message=item.error_message,
                details=item.error_details,
                attempt=task.attempt,
                failed_at=now,
            )
            if task.cancel_requested:
                finish(task, TaskState.CANCELLED, now)
            elif not item.is_retryable or task.attempt >= task.max_attempts:
                finish(task, TaskState.DEAD, now)
            else:
                delay = item.retry_delay
                if delay is None:
                    delay = backoff_delay(task.retry_policy, task.attempt, self._rng)
                requeue(task, now + delay, now)
                self.note_ready(task)

        return self._per_lease(failures, now, fail_one)

    def release(self, leases: Sequence[LeaseRef]) -> Future[list[ItemOutcome]]:
        """Give leases back without using an attempt (READY at once, or CANCELLED if asked)."""
        now = self.clock.now()

        def release_one(task: Task, item: LeaseRef) -> None:
            task.attempt -= 1
            if task.cancel_requested:
                finish(task, TaskState.CANCELLED, now)
            else:
                requeue(task, task.run_at, now)
                self.note_ready(task)

        return self._per_lease(leases, now, release_one)

    def _per_lease(
        self, items: Sequence[T], now: float, change: Callable[[Task, T], None]
    ) -> Future[list[ItemOutcome]]:
        """Apply `change` to each item's task if its lease is current; one outcome per item."""
        if not items:
            raise InvalidArgument("the request names no leases")
        if len(items) > self.settings.max_batch:
            raise InvalidArgument(f"more than {self.settings.max_batch} items in one call")

        # Each item's id is checked with the item: a bad one fails alone, as any item may.
        id_field = "task_id" if isinstance(items[0], LeaseRef) else "lease.task_id"
        settings = self.settings
        id_limit = settings.max_name_length
        refs: list[LeaseRef] = [i if isinstance(i, LeaseRef) else i.lease for i in items]  # type: ignore[attr-defined]
        task_ids = [ref.task_id for ref in refs]

        def apply(txn: TaskTxn) -> list[ItemOutcome]:
            outcomes = []
            txn.load_tasks(task_ids)  # one round trip for a SQL store
            for item, ref in zip(items, refs, strict=True):
                try:
                    validation.check_task_id(ref.task_id, id_field, settings)
                    task = _current_lease(txn, ref, now)
                    change(task, item)
                except ConveyorError as exc:  # the id is echoed: bounded, as a valid one is
                    outcomes.append(ItemOutcome(ref.task_id[:id_limit], error=exc))
                    continue
                txn.put_task(task)
                outcomes.append(ItemOutcome(ref.task_id, task=task))
            return outcomes

        return self.store.write(apply)

    # -- the timer -----------------------------------------------------------

    def next_due_time(self) -> float | None:
        """When tick() next has something to do (a delay, a lease, a deadline, a retention)."""
        return self.store.read(lambda txn: txn.next_due_time())

    def tick(self) -> Future[TickOutcome]:
        """Apply everything due by now, at most settings.tick_batch of each kind."""
        now = self.clock.now()
        limit = self.settings.tick_batch

        def apply(txn: TaskTxn) -> TickOutcome:
            out = TickOutcome()
            for task_id in _due(txn, "deadlines", now, limit, out):
                task = _must_get(txn, task_id)
                if task.state in (TaskState.SCHEDULED, TaskState.READY):
                    finish(task, TaskState.EXPIRED, now)
                    txn.put_task(task)
                    out.finished.append(task)
            self._promote_scheduled(txn, now, out)
            for task_id in _due(txn, "leases", now, limit, out):
                self._expire_lease(txn, _must_get(txn, task_id), now, out)
            for task_id in _due(txn, "retention", now, limit, out):
                task = _must_get(txn, task_id)
                if task.unique_key and txn.get_unique(task.queue, task.unique_key) == task.id:
                    txn.delete_unique(task.queue, task.unique_key)
                txn.delete_task(task)
                out.removed += 1
            return out

        return self.store.write(apply)

    def _promote_scheduled(self, txn: TaskTxn, now: float, out: TickOutcome) -> None:
        for task_id in _due(txn, "scheduled", now, self.settings.tick_batch, out):
            task = _must_get(txn, task_id)
            task.state = TaskState.READY
            task.updated_at = now
            txn.put_task(task)
            out.ready_queues.add(task.queue)
            self.note_ready(task)

    def _expire_lease(self, txn: TaskTxn, task: Task, now: float, out: TickOutcome) -> None:
        task.last_error = TaskError(
            type="LeaseExpired",
            message="lease expired",
            details=f"worker {quote(task.worker_id)} did not ack, fail or extend in time",
            attempt=task.attempt,
            failed_at=now,
        )
        if task.cancel_requested:
            finish(task, TaskState.CANCELLED, now)
        elif task.attempt >= task.max_attempts:
            finish(task, TaskState.DEAD, now)
        else:
            requeue(task, task.run_at, now)
            out.ready_queues.add(task.queue)
            self.note_ready(task)
        if task.state.is_final:
            out.finished.append(task)
        out.lease_expired.append(task)
        txn.put_task(task)


class _FlowLease:
    """One lease write's state, for the flow path: where it is and how to take a task."""

    __slots__ = ("batch", "lease_duration", "now", "room", "txn", "worker_id")

    def __init__(
        self,
        txn: TaskTxn,
        now: float,
        lease_duration: float | None,
        worker_id: str,
        batch: LeaseBatch,
        room: int,
    ) -> None:
        self.txn, self.now, self.batch, self.room = txn, now, batch, room
        self.lease_duration, self.worker_id = lease_duration, worker_id

    def take(self, task: Task) -> bool:
        """Lease the task (or expire it, past its deadline); False: the answer is full."""
        now = self.now
        if task.deadline is not None and task.deadline <= now:
            finish(task, TaskState.EXPIRED, now)
            self.batch.expired.append(task)
        else:
            self.room -= leased_task_bytes(task)
            if self.room < 0 and self.batch.tasks:
                return False  # the rest stay READY
            start_lease(task, now, self.lease_duration, self.worker_id)
            self.batch.tasks.append(task)
        self.txn.put_task(task)
        return True


def _has_ready(txn: TaskTxn, queue: str) -> bool:
    return bool(txn.ready_task_ids(queue, 1) or txn.ready_keys(queue, "", 1))


def _note_refill(batch: LeaseBatch, when: float | None) -> None:
    if when is not None and (batch.refill_at is None or when < batch.refill_at):
        batch.refill_at = when


def _must_get(txn: TaskTxn, task_id: str) -> Task:
    task = txn.get_task(task_id)
    if task is None:  # an index entry without its record: the store is damaged
        raise RuntimeError(f"index refers to missing task {quote(task_id)}")
    return task


def _due(txn: TaskTxn, index: str, now: float, limit: int, out: TickOutcome) -> list[str]:
    ids = txn.due_task_ids(index, now, limit)
    if len(ids) >= limit:
        out.is_more_due = True
    return ids


def _current_lease(txn: TaskTxn, ref: LeaseRef, now: float) -> Task:
    task = txn.get_task(ref.task_id)
    if task is None:
        raise NotFound(f"task {quote(ref.task_id)} not found")
    if task.state is not TaskState.LEASED or task.lease_token != ref.lease_token:
        raise LeaseLost(
            f"task {quote(ref.task_id)}: this lease is no longer held "
            f"(task is {task.state.name}, attempt {task.attempt})"
        )
    if task.lease_expires_at is not None and now >= task.lease_expires_at:
        raise LeaseLost(f"task {quote(ref.task_id)}: the lease expired")
    return task
