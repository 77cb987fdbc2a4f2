"""The store seam: the transactional verbs the core writes through, owned by the core.

A store runs *write functions*: `store.write(fn)` applies `fn(txn)` inside a
write transaction and resolves the returned future only after the transaction
that holds the change is committed. A write function that raises leaves no
trace (its changes are rolled back) and its future carries the exception;
other functions committed in the same group are unaffected.

Two families implement it: the ordered-KV stores (`store/kv_txn.py` over LMDB
or memory) and, later, SQL stores. The core imports this module only; it never
names a concrete store.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from typing import Protocol, TypeVar

from conveyor_server.core.flow import QueueFlow
from conveyor_server.core.model import QueueDepth, Task
from conveyor_server.core.schedules.model import Schedule

T = TypeVar("T")

#: Timer indexes `TaskTxn.due_task_ids` reads: delayed tasks, leases, deadlines, retention.
TIME_INDEXES = ("scheduled", "leases", "deadlines", "retention")


class TaskTxn(Protocol):
    """Task, index, uniqueness, sequence and schedule verbs inside one transaction."""

    def get_task(self, task_id: str) -> Task | None: ...

    def load_tasks(self, task_ids: list[str]) -> None:
        """Hint: these tasks are about to be read (a SQL store loads and locks them in one
        statement, in id order; a KV store ignores it)."""
        ...

    def put_task(self, task: Task, *, is_new: bool = False) -> None:
        """Write a task and bring its index entries in line with its state.

        `is_new`: the caller knows no record exists (it just looked, or made the id).
        """
        ...

    def delete_task(self, task: Task) -> None: ...

    def ready_task_ids(self, queue: str, limit: int, concurrency_key: str = "") -> list[str]:
        """READY tasks of a queue with exactly this concurrency key ("": tasks without
        one), in lease order: priority, run time, sequence. All of a queue's READY tasks
        are those of "" plus those of every key in `ready_keys`."""
        ...

    def ready_keys(self, queue: str, after: str, limit: int) -> list[str]:
        """Distinct non-empty keys with READY tasks in the queue, greater than `after`, in
        key order (byte order of their UTF-8). One index seek per key, not a scan of tasks."""
        ...

    def ready_heads(self, queue: str, after: str, limit: int) -> list[tuple[str, str]]:
        """As ready_keys, each key with the id of its first READY task in lease order
        (a write takes it as ready_task_ids would: a SQL store locks it, SKIP LOCKED). A
        page shorter than `limit` means no key is left past it: a key left out because
        another broker holds its tasks locked does not shorten the page."""
        ...

    def leased_count(self, queue: str, concurrency_key: str | None = None) -> int:
        """LEASED tasks of the queue (None), or of one key of it; cheap (kept counts or a
        small index), and including this write's own changes."""
        ...

    def leased_counts(self, queue: str, concurrency_keys: Sequence[str]) -> dict[str, int]:
        """leased_count(queue, key) for each of a page of keys (non-empty, in ready_keys
        order) in one look: fair picking asks it for a whole ring page at once."""
        ...

    def keyed_queues(self) -> list[str]:
        """Queues that hold READY or LEASED tasks with a concurrency key, in name order."""
        ...

    def due_task_ids(self, index: str, now: float, limit: int) -> list[str]:
        """Tasks whose time in `index` (one of TIME_INDEXES) is <= now, earliest first."""
        ...

    def next_due_time(self) -> float | None:
        """Earliest time any timer index is due, or None if all are empty."""
        ...

    def get_unique(self, queue: str, unique_key: str) -> str | None: ...

    def put_unique(self, queue: str, unique_key: str, task_id: str) -> None: ...

    def delete_unique(self, queue: str, unique_key: str) -> None: ...

    def next_sequence(self) -> int:
        """The next enqueue sequence number (strictly increasing across commits)."""
        ...

    def get_schedule(self, name: str) -> Schedule | None: ...

    def put_schedule(self, schedule: Schedule) -> None:
        """Write a schedule and keep its due entry in line with its cursor."""
        ...

    def delete_schedule(self, name: str) -> None: ...

    def list_schedules(self) -> list[Schedule]:
        """Every schedule, in name order."""
        ...

    def due_schedule_names(self, now: float, limit: int) -> list[str]:
        """Active schedules whose next fire time is <= now, earliest first."""
        ...

    def next_schedule_due_time(self) -> float | None:
        """Earliest next fire time of any active schedule, or None."""
        ...

    def queue_depths(self) -> list[QueueDepth]:
        """Every queue that holds tasks, in name order, with its counts by state.

        Operators and metrics read this on every scrape, so a store keeps it cheap
        (O(queues), not O(tasks)).
        """
        ...

    def count(self, index: str) -> int:
        """Number of entries in an index (for tests and operators; may be O(n))."""
        ...

    # -- operators (core/queues.py) ----------------------------------------------

    def is_paused(self, queue: str) -> bool:
        """Whether the queue is paused (stored: a pause survives a restart)."""
        ...

    def set_paused(self, queue: str, is_paused: bool) -> None: ...

    def paused_queues(self) -> list[str]:
        """Every paused queue, in name order."""
        ...

    def get_queue_flow(self, queue: str) -> QueueFlow | None:
        """The queue's stored limits and token bucket (None: no limits). In a write, a
        shared store locks it until commit, so brokers take a queue's slots in turn."""
        ...

    def put_queue_flow(self, queue: str, flow: QueueFlow | None) -> None:
        """Store the queue's flow; None removes it."""
        ...

    def queue_flows_for(self, queues: Collection[str]) -> dict[str, QueueFlow]:
        """The stored flows of these queues (a queue without limits is left out). In a
        write, a shared store locks them all in one statement, in queue order: two brokers
        leasing from the same queues in different orders take the row locks in the same
        order, so they wait for each other instead of deadlocking."""
        ...

    def queue_flows(self) -> dict[str, QueueFlow]:
        """Every stored flow by queue name."""
        ...

    def scan_tasks(self, after: str, limit: int, *, newest_first: bool = False) -> list[Task]:
        """Up to `limit` tasks in id order, starting past the id `after` ("" from the start),
        descending with `newest_first`. Their payloads are left empty (not read)."""
        ...


class ChangeListener(Protocol):
    """Told about changes that *other processes* made to a shared store.

    The broker that made a change wakes its own waiters itself; this is for
    stores that several brokers share, so that a Lease parked on broker B
    wakes for a task enqueued on broker A. Calls arrive on the event loop
    the listener was registered from (a store hands them over with
    `loop.call_soon_threadsafe` if it learns of them on another thread).
    """

    def tasks_ready(self, queues: Sequence[str]) -> None:
        """Tasks became READY on these queues (enqueued, retried, delay over)."""
        ...

    def tasks_finished(self, task_ids: Sequence[str]) -> None:
        """These tasks reached a final state (a parked GetResult may answer)."""
        ...

    def slots_freed(self, queues: Sequence[str]) -> None:
        """LEASED tasks of these queues were acked, failed, released or expired: a Lease
        held back by a concurrency limit may take one now."""
        ...


class Store(Protocol):
    """What the core needs from persistence."""

    #: Other processes write this store too (PostgreSQL): due times they add are found
    #: only by looking, so the timer also wakes on a period (service/timer.py).
    is_shared: bool

    def write(self, fn: Callable[[TaskTxn], T], *, is_growth: bool = False) -> Future[T]:
        """Run fn in a write transaction; the future resolves after commit.

        `is_growth` marks writes that add tasks (enqueue). Near its size limit a
        store refuses them with StoreFull but keeps room for the writes that
        drain it (lease, ack, fail, retention), so a full broker can recover.
        """
        ...

    def read(self, fn: Callable[[TaskTxn], T]) -> T:
        """Run fn in a short read transaction and return its result."""
        ...

    def watch(self, listener: ChangeListener) -> None:
        """Report other processes' changes to `listener` from now on.

        A store only this process writes (LMDB, memory) never calls it.
        """
        ...

    def close(self) -> None: ...
