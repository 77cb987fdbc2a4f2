"""KvTaskTxn: the core's TaskTxn verbs (tasks, indexes, uniqueness, schedules) over any KvTxn.

The ordered-KV stores (LMDB, memory) share this class, so the index rules are
written once and the contract tests exercise them against both alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from conveyor_server.core.model import QueueDepth, Task, TaskState
from conveyor_server.core.schedules.model import Schedule
from conveyor_server.core.store import TIME_INDEXES
from conveyor_server.store import keys, record, schedule_record
from conveyor_server.store.base import KvTxn
from conveyor_server.store.queue_txn import KvQueueVerbs

if TYPE_CHECKING:
    from conveyor_server.core.store import TaskTxn

T = TypeVar("T")


class KvTaskTxn(KvQueueVerbs):
    """The core's TaskTxn (core/store.py) inside one KV transaction.

    It remembers the index entries of every task it loaded, so `put_task`
    can move a task between indexes without the caller knowing the layout.
    """

    def __init__(self, kv: KvTxn) -> None:
        self._kv = kv
        self._loaded: dict[str, set[tuple[str, bytes, bytes]]] = {}
        self._sequence: int | None = None
        self._is_sequence_dirty = False

    def get_task(self, task_id: str) -> Task | None:
        data = self._kv.get("tasks", task_id.encode())
        if data is None:
            return None
        task = record.decode(data, self._kv.get("payloads", task_id.encode()) or b"")
        self._loaded[task_id] = keys.index_entries(task)
        return task

    def put_task(self, task: Task, *, is_new: bool = False) -> None:
        """Write a task and bring its index entries in line with its state.

        `is_new`: the caller knows no record exists (it just looked, or made the id).
        """
        kv = self._kv
        task_key = task.id.encode()
        new = keys.index_entries(task)
        if is_new:
            if task.payload:  # written once, here: state changes rewrite only the record
                kv.put("payloads", task_key, task.payload)
            for db, key, value in new:
                kv.put(db, key, value)
        else:
            old = self._loaded.get(task.id)
            if old is None:
                data = kv.get("tasks", task_key)
                old = set() if data is None else keys.index_entries(record.index_state(data))
                if data is None and task.payload:
                    kv.put("payloads", task_key, task.payload)
            for db, key, _ in old - new:
                kv.delete(db, key)
            for db, key, value in new - old:
                kv.put(db, key, value)
        kv.put("tasks", task_key, record.encode(task))
        self._loaded[task.id] = new

    def delete_task(self, task: Task) -> None:
        old = self._loaded.pop(task.id, None)
        if old is None:
            old = keys.index_entries(task)
        for db, key, _ in old:
            self._kv.delete(db, key)
        self._kv.delete("tasks", task.id.encode())
        self._kv.delete("payloads", task.id.encode())

    def ready_task_ids(self, queue: str, limit: int) -> list[str]:
        """READY tasks of a queue in lease order: priority, run time, sequence."""
        prefix = keys.queue_prefix(queue)
        end = prefix[:-1] + b"\x01"
        return [v.decode() for _, v in self._kv.scan("ready", prefix, end, limit)]

    def due_task_ids(self, index: str, now: float, limit: int) -> list[str]:
        """Tasks whose time in `index` (scheduled, leases, deadlines, retention) is <= now."""
        end = keys.time_key(now) + b"\xff"
        items = self._kv.scan(index, b"", end, limit)
        if index == "scheduled":
            return [v.decode() for _, v in items]
        return [k[8:].decode() for k, _ in items]

    def next_due_time(self) -> float | None:
        """Earliest time any timer index is due, or None if all are empty."""
        times = [
            keys.key_time(items[0][0])
            for index in TIME_INDEXES
            if (items := self._kv.scan(index, b"", None, 1))
        ]
        return min(times) if times else None

    def get_unique(self, queue: str, unique_key: str) -> str | None:
        data = self._kv.get("unique", keys.unique_key(queue, unique_key))
        return data.decode() if data is not None else None

    def put_unique(self, queue: str, unique_key: str, task_id: str) -> None:
        self._kv.put("unique", keys.unique_key(queue, unique_key), task_id.encode())

    def delete_unique(self, queue: str, unique_key: str) -> None:
        self._kv.delete("unique", keys.unique_key(queue, unique_key))

    def next_sequence(self) -> int:
        """The next enqueue sequence number; stored once per write, by `flush`."""
        if self._sequence is None:
            data = self._kv.get("meta", b"sequence")
            self._sequence = keys.unpack_u64(data) if data is not None else 0
        self._sequence += 1
        self._is_sequence_dirty = True
        return self._sequence

    def flush(self) -> None:
        """Write what was kept back until the write function returned (see run_write)."""
        if self._is_sequence_dirty:
            self._kv.put("meta", b"sequence", keys.pack_u64(self._sequence or 0))
            self._is_sequence_dirty = False

    # -- schedules -------------------------------------------------------------

    def get_schedule(self, name: str) -> Schedule | None:
        data = self._kv.get("schedules", keys.schedule_key(name))
        return schedule_record.decode(data) if data is not None else None

    def put_schedule(self, schedule: Schedule) -> None:
        """Write a schedule and keep its due-index entry in line with its cursor."""
        self._delete_schedule_due(schedule.name)
        self._kv.put(
            "schedules", keys.schedule_key(schedule.name), schedule_record.encode(schedule)
        )
        if schedule.is_active:
            assert schedule.next_fire_time is not None
            due_key = keys.schedule_due_key(schedule.next_fire_time, schedule.name)
            self._kv.put("schedules", due_key, b"")

    def delete_schedule(self, name: str) -> None:
        self._delete_schedule_due(name)
        self._kv.delete("schedules", keys.schedule_key(name))

    def list_schedules(self) -> list[Schedule]:
        """Every schedule, in name order."""
        prefix = keys.SCHEDULE_PREFIX
        items = self._kv.scan("schedules", prefix, _after_prefix(prefix), 1 << 62)
        return [schedule_record.decode(value) for _, value in items]

    def due_schedule_names(self, now: float, limit: int) -> list[str]:
        """Active schedules whose next fire time is <= now, earliest first."""
        prefix = keys.SCHEDULE_DUE_PREFIX
        items = self._kv.scan("schedules", prefix, prefix + keys.time_key(now) + b"\xff", limit)
        return [key[9:].decode() for key, _ in items]

    def next_schedule_due_time(self) -> float | None:
        """Earliest next fire time of any active schedule, or None."""
        prefix = keys.SCHEDULE_DUE_PREFIX
        items = self._kv.scan("schedules", prefix, _after_prefix(prefix), 1)
        return keys.key_time(items[0][0][1:]) if items else None

    def _delete_schedule_due(self, name: str) -> None:
        old = self.get_schedule(name)
        if old is not None and old.is_active:
            assert old.next_fire_time is not None
            self._kv.delete("schedules", keys.schedule_due_key(old.next_fire_time, name))

    def queue_depths(self) -> list[QueueDepth]:
        """O(tasks) for now: a scan of every record (to be kept incrementally)."""
        depths: dict[str, QueueDepth] = {}
        for _, data in self._kv.scan("tasks", b"", None, 1 << 62):
            task = record.index_state(data)
            depth = depths.setdefault(task.queue, QueueDepth(task.queue))
            depth.counts[task.state] = depth.counts.get(task.state, 0) + 1
            if task.state is TaskState.READY and (
                depth.oldest_ready_at is None or task.run_at < depth.oldest_ready_at
            ):
                depth.oldest_ready_at = task.run_at
        return [depths[name] for name in sorted(depths)]

    def count(self, index: str) -> int:
        """Number of entries in an index (for tests and operators; O(n))."""
        return len(self._kv.scan(index, b"", None, 1 << 62))


def _after_prefix(prefix: bytes) -> bytes:
    """The first key past every key that starts with the one-byte `prefix`."""
    return bytes([prefix[0] + 1])


def run_write(kv: KvTxn, fn: Callable[[TaskTxn], T]) -> T:
    """Run a write function on a KV transaction, then flush what KvTaskTxn kept back
    (the enqueue sequence, written once per write). Every KV store's write() goes
    through here: without the flush, sequence numbers would be handed out again."""
    txn = KvTaskTxn(kv)
    result = fn(txn)
    txn.flush()
    return result
