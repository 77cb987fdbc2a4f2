"""Queue administration: what pause, resume, update, purge, list, retry and delete mean.

The operators' counterpart of core/broker.py, over the same store. Long
operations are cut into batches: each call changes at most `batch` tasks in
one write and reads at most SCAN_BUDGET records, and says where the next batch
starts, so the service layer can commit other RPCs between batches.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from conveyor_server.core import flow, validation
from conveyor_server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from conveyor_server.core.model import Task, TaskState
from conveyor_server.core.transitions import holds_unique_key, retry

if TYPE_CHECKING:
    from conveyor_server.core.broker import Broker
    from conveyor_server.core.store import TaskTxn

#: Most task records one call reads (a page of ListTasks, one batch of a purge or retry).
SCAN_BUDGET = 5_000
#: Most tasks one write of a purge or a retry changes.
BATCH = 1_000
MAX_PAGE_SIZE = 1_000
DEFAULT_PAGE_SIZE = 100
_CHUNK = 1_000
RETRYABLE_STATES = frozenset({TaskState.DEAD, TaskState.CANCELLED, TaskState.EXPIRED})


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks an operation applies to; an empty field matches everything."""

    queue: str = ""
    states: frozenset[TaskState] = frozenset()
    kind: str = ""
    created_after: float | None = None
    created_before: float | None = None

    def matches(self, task: Task) -> bool:
        return (
            (not self.queue or task.queue == self.queue)
            and (not self.states or task.state in self.states)
            and (not self.kind or task.kind == self.kind)
            and (self.created_after is None or task.created_at >= self.created_after)
            and (self.created_before is None or task.created_at < self.created_before)
        )


@dataclass(slots=True)
class QueueInfo:
    """One queue now: counts by state, pause, when its oldest READY task became due, and
    its stored limits."""

    name: str
    counts: dict[TaskState, int] = field(default_factory=dict)
    is_paused: bool = False
    oldest_ready_at: float | None = None
    limits: flow.QueueLimits = field(default_factory=flow.QueueLimits)


@dataclass(frozen=True, slots=True)
class QueueUpdate:
    """What UpdateQueue changes: `limits` fields by name (flow.LIMIT_FIELDS; the others
    keep their stored value) and `paused` (None: unchanged)."""

    limits: dict[str, float | int] = field(default_factory=dict)
    paused: bool | None = None


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    limits: flow.QueueLimits
    was_paused: bool
    is_paused: bool


@dataclass(slots=True)
class TaskPage:
    """One page of ListTasks; `next_after` is "" when nothing is left to read."""

    tasks: list[Task]
    next_after: str


@dataclass(slots=True)
class Batch:
    """One write of a purge or retry: how many tasks it changed (the retried ones in
    `tasks`), whether everything was read, and where the next batch starts."""

    count: int = 0
    tasks: list[Task] = field(default_factory=list)
    next_after: str = ""
    is_done: bool = True


class QueueAdmin:
    """Operators' verbs over the broker's store and clock. Call it from one thread."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.store = broker.store
        self.clock = broker.clock
        self.settings = broker.settings

    # -- queues ----------------------------------------------------------------

    def queues(self) -> list[QueueInfo]:
        """Every queue that holds tasks, is paused or has limits, in name order."""

        def look(txn: TaskTxn) -> list[QueueInfo]:
            found = {
                d.queue: QueueInfo(d.queue, dict(d.counts), False, d.oldest_ready_at)
                for d in txn.queue_depths()
            }
            for name in txn.paused_queues():
                found.setdefault(name, QueueInfo(name)).is_paused = True
            for name, stored in txn.queue_flows().items():
                found.setdefault(name, QueueInfo(name)).limits = stored.limits
            return [found[name] for name in sorted(found)]

        return self.store.read(look)

    def queue(self, name: str) -> QueueInfo:
        """One queue as `queues` reports it (empty counts when it holds no tasks).

        Raises:
            InvalidArgument: a malformed name.
        """
        validation.check_name(name, "name", self.settings)
        for info in self.queues():
            if info.name == name:
                return info
        return QueueInfo(name)

    def pause(self, name: str) -> Future[None]:
        """Stop the queue from handing out tasks (stored). Raises: InvalidArgument."""
        validation.check_name(name, "name", self.settings)
        return self.store.write(lambda txn: txn.set_paused(name, True))

    def resume(self, name: str) -> Future[bool]:
        """Hand out tasks again; the future says whether it was paused.

        Raises:
            InvalidArgument: a malformed name.
        """
        validation.check_name(name, "name", self.settings)

        def apply(txn: TaskTxn) -> bool:
            was_paused = txn.is_paused(name)
            if was_paused:
                txn.set_paused(name, False)
            return was_paused

        return self.store.write(apply)

    def update(self, name: str, change: QueueUpdate) -> Future[UpdateOutcome]:
        """Change the queue's stored limits and pause state in one write (the caller tells
        the broker's cache: Broker.note_limits).

        Raises:
            InvalidArgument: a malformed name, an unknown limit, a bad value (named).
        """
        validation.check_name(name, "name", self.settings)
        for key in change.limits:
            if key not in flow.LIMIT_FIELDS:
                raise InvalidArgument(f"limits.{key}: not a queue limit")
        # each given value checked alone first, so the message names it
        flow.check_limits(_with_values(flow.QueueLimits(), change.limits))
        now = self.clock.now()

        def apply(txn: TaskTxn) -> UpdateOutcome:
            stored = txn.get_queue_flow(name)
            limits = stored.limits if stored is not None else flow.QueueLimits()
            if change.limits:
                limits = _with_values(limits, change.limits)
                if limits.is_limited:
                    txn.put_queue_flow(name, flow.with_limits(stored, limits, now))
                elif stored is not None:
                    txn.put_queue_flow(name, None)  # no limit left: the plain lease path
            was_paused = txn.is_paused(name)
            if change.paused is not None and change.paused != was_paused:
                txn.set_paused(name, change.paused)
            is_paused = was_paused if change.paused is None else change.paused
            return UpdateOutcome(limits, was_paused, is_paused)

        return self.store.write(apply)

    # -- purge -----------------------------------------------------------------

    def check_purge(self, name: str, states: Collection[TaskState], limit: int) -> None:
        """Raises InvalidArgument for a purge that could never be applied."""
        validation.check_name(name, "name", self.settings)
        if not states:
            raise InvalidArgument("states: name at least one state to purge")
        if TaskState.LEASED in states:
            raise InvalidArgument("states: LEASED tasks cannot be purged (workers hold them)")
        if limit < 0:
            raise InvalidArgument(f"limit: {limit} is negative")

    def purge_batch(
        self, name: str, states: Collection[TaskState], after: str, limit: int
    ) -> Future[Batch]:
        """Delete up to `limit` (at most BATCH) of the queue's tasks in `states`.

        READY tasks come from the queue's ready index first (while `after` is ""),
        the other states from a scan of task records past `after`.

        Raises:
            InvalidArgument: as check_purge.
        """
        self.check_purge(name, states, limit)
        limit = min(limit or BATCH, BATCH)
        wanted = frozenset(states)
        rest = TaskFilter(name, wanted - {TaskState.READY})

        def apply(txn: TaskTxn) -> Batch:
            count = 0
            if TaskState.READY in wanted and not after:
                count = _purge_ready(txn, name, limit)
                if count >= limit:
                    return Batch(count, is_done=False)
            if not rest.states:
                return Batch(count, is_done=True)
            batch = _scan_apply(txn, rest, after, limit - count, _remove)
            batch.count += count
            return batch

        return self.store.write(apply)

    # -- tasks -----------------------------------------------------------------

    def check_filter(self, where: TaskFilter, prefix: str = "filter.") -> None:
        if where.queue:
            validation.check_name(where.queue, f"{prefix}queue", self.settings)
        if where.kind:
            validation.check_name(where.kind, f"{prefix}kind", self.settings)
        validation.check_time(where.created_after, "created_after", prefix)
        validation.check_time(where.created_before, "created_before", prefix)

    def list_tasks(
        self, where: TaskFilter, after: str, page_size: int, *, newest_first: bool = False
    ) -> TaskPage:
        """Tasks that match, in id order past `after` (payloads left empty).

        Raises:
            InvalidArgument: a malformed filter or page size.
        """
        self.check_filter(where)
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size: {page_size} is outside [0, {MAX_PAGE_SIZE}]")
        size = page_size or DEFAULT_PAGE_SIZE

        def look(txn: TaskTxn) -> TaskPage:
            found: list[Task] = []
            cursor, read = after, 0
            while read < SCAN_BUDGET:
                want = min(SCAN_BUDGET - read, _CHUNK)
                chunk = txn.scan_tasks(cursor, want, newest_first=newest_first)
                read += len(chunk)
                for task in chunk:
                    if where.matches(task):
                        found.append(task)
                        if len(found) >= size:
                            return TaskPage(found, task.id)
                if len(chunk) < want:
                    return TaskPage(found, "")
                cursor = chunk[-1].id
            return TaskPage(found, cursor)

        return self.store.read(look)

    def retry_ids(self, task_ids: Sequence[str]) -> Future[list[Task]]:
        """Retry exactly these tasks, all or none.

        Raises:
            InvalidArgument: no ids, too many, or a malformed one.
        The future may raise NotFound, or FailedPrecondition (a task is not retryable).
        """
        if not task_ids:
            raise InvalidArgument("task_ids: name at least one task")
        if len(task_ids) > self.settings.max_batch:
            raise InvalidArgument(
                f"task_ids: {len(task_ids)} ids is over the limit of {self.settings.max_batch}"
            )
        for index, task_id in enumerate(task_ids):
            validation.check_task_id(task_id, f"task_ids[{index}]", self.settings)
        now = self.clock.now()
        ids = list(dict.fromkeys(task_ids))

        def apply(txn: TaskTxn) -> list[Task]:
            retried = []
            broker = self.broker
            for task_id in ids:
                task = txn.get_task(task_id)
                if task is None:
                    raise NotFound(f"task {task_id!r} not found")
                if task.state not in RETRYABLE_STATES:
                    raise FailedPrecondition(
                        f"task {task_id!r} is {task.state.name}; only DEAD, CANCELLED and "
                        "EXPIRED tasks can be retried"
                    )
                _retry(txn, task, now)
                broker.note_ready(task)
                retried.append(task)
            return retried

        return self.store.write(apply, is_growth=True)

    def check_retry_filter(self, where: TaskFilter, limit: int) -> TaskFilter:
        """The filter with its states defaulted; raises InvalidArgument."""
        self.check_filter(where)
        if not where.states <= RETRYABLE_STATES:
            raise InvalidArgument("filter.states: only DEAD, CANCELLED and EXPIRED can be retried")
        if limit < 0:
            raise InvalidArgument(f"limit: {limit} is negative")
        if not where.states:
            where = TaskFilter(
                where.queue, RETRYABLE_STATES, where.kind, where.created_after, where.created_before
            )
        return where

    def retry_batch(self, where: TaskFilter, after: str, limit: int) -> Future[Batch]:
        """Retry up to `limit` (at most BATCH) matching tasks past `after`.

        Raises:
            InvalidArgument: as check_retry_filter.
        """
        where = self.check_retry_filter(where, limit)
        limit = min(limit or BATCH, BATCH)
        now = self.clock.now()

        def retry_one(txn: TaskTxn, task: Task) -> None:
            _retry(txn, task, now)
            self.broker.note_ready(task)

        return self.store.write(
            lambda txn: _scan_apply(txn, where, after, limit, retry_one, keep=True),
            is_growth=True,
        )

    def delete(self, task_id: str) -> Future[Task]:
        """Remove a task now; the future holds it as it was.

        Raises:
            InvalidArgument: a malformed id.
        The future may raise NotFound, or FailedPrecondition (the task is LEASED).
        """
        validation.check_task_id(task_id, "task_id", self.settings)

        def apply(txn: TaskTxn) -> Task:
            task = txn.get_task(task_id)
            if task is None:
                raise NotFound(f"task {task_id!r} not found")
            if task.state is TaskState.LEASED:
                raise FailedPrecondition(f"task {task_id!r} is LEASED; cancel it first")
            _remove(txn, task)
            return task

        return self.store.write(apply)

    def leased_by_worker(self, limit: int = 100_000) -> dict[str, int]:
        """LEASED tasks per worker id, from the lease index (at most `limit` read)."""

        def look(txn: TaskTxn) -> dict[str, int]:
            counts: dict[str, int] = {}
            for task_id in txn.due_task_ids("leases", float(validation.MAX_TIME), limit):
                task = txn.get_task(task_id)
                if task is not None:
                    counts[task.worker_id] = counts.get(task.worker_id, 0) + 1
            return counts

        return self.store.read(look)


def _scan_apply(
    txn: TaskTxn,
    where: TaskFilter,
    after: str,
    limit: int,
    change: Callable[[TaskTxn, Task], None],
    *,
    keep: bool = False,
) -> Batch:
    """Apply `change(txn, task)` to up to `limit` matching tasks past `after`, reading at
    most SCAN_BUDGET records; `keep` puts the changed tasks in the batch."""
    batch = Batch(is_done=False)
    cursor, read = after, 0
    while read < SCAN_BUDGET:
        want = min(SCAN_BUDGET - read, _CHUNK)
        chunk = txn.scan_tasks(cursor, want)
        read += len(chunk)
        for task in chunk:
            cursor = task.id
            if not where.matches(task):
                continue
            task = _must_get(txn, task.id)  # with its payload: it is written back
            change(txn, task)
            batch.count += 1
            if keep:
                batch.tasks.append(task)
            if batch.count >= limit:
                batch.next_after = cursor
                return batch
        if len(chunk) < want:
            batch.is_done = True
            return batch
    batch.next_after = cursor
    return batch


def _must_get(txn: TaskTxn, task_id: str) -> Task:
    task = txn.get_task(task_id)
    if task is None:  # an index entry without its record: the store is damaged
        raise RuntimeError(f"index refers to missing task {task_id!r}")
    return task


def _remove(txn: TaskTxn, task: Task) -> None:
    """Delete a task with its unique key (if it still holds it), as retention does."""
    if task.unique_key and txn.get_unique(task.queue, task.unique_key) == task.id:
        txn.delete_unique(task.queue, task.unique_key)
    txn.delete_task(task)


def _retry(txn: TaskTxn, task: Task, now: float) -> None:
    """READY again; it takes its unique key back unless another live task holds it."""
    retry(task, now)
    txn.put_task(task)
    if task.unique_key and holds_unique_key(task, now):
        holder_id = txn.get_unique(task.queue, task.unique_key)
        holder = txn.get_task(holder_id) if holder_id and holder_id != task.id else None
        if holder is None or not holds_unique_key(holder, now):
            txn.put_unique(task.queue, task.unique_key, task.id)


def _with_values(limits: flow.QueueLimits, values: dict[str, float | int]) -> flow.QueueLimits:
    """`limits` with the given fields replaced (the caller checked their names)."""
    return replace(limits, **values)  # type: ignore[arg-type]


def _purge_ready(txn: TaskTxn, name: str, limit: int) -> int:
    """Delete up to `limit` READY tasks: those without a key, then each key's in turn."""
    count = 0
    for key in ("", *txn.ready_keys(name, "", limit)):
        if count >= limit:
            break
        for task_id in txn.ready_task_ids(name, limit - count, key):
            _remove(txn, _must_get(txn, task_id))
            count += 1
    return count
