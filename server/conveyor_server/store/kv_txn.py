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
#: What KvTaskTxn remembers of a task it loaded or wrote: its index entries and its
#: (queue, state), the key of its depth count.
_Loaded = tuple[set[tuple[str, bytes, bytes]], tuple[str, TaskState] | None]
#: Distinct priorities `queue_depths` seeks past to find a queue's oldest READY task.
_OLDEST_READY_SEEKS = 32
#: Keys of a queue `queue_depths` looks into for its oldest READY keyed task (past that,
#: the oldest of those seen: a scrape stays O(queues), whatever the number of keys).
_OLDEST_READY_KEYS = 32
_OLDEST_KEY_SEEKS = 4


class KvTaskTxn(KvQueueVerbs):
    """The core's TaskTxn (core/store.py) inside one KV transaction.

    It remembers the index entries and state of every task it loaded, so `put_task`
    can move a task between indexes, and its depth count between states, without the
    caller knowing the layout. Count changes are summed per (queue, state) and written
    once per write function, by `flush` (one get and one put per changed count).
    """

    def __init__(self, kv: KvTxn) -> None:
        self._kv = kv
        self._loaded: dict[str, _Loaded] = {}
        self._sequence: int | None = None
        self._is_sequence_dirty = False
        self._count_deltas: dict[tuple[str, TaskState], int] = {}

    def get_task(self, task_id: str) -> Task | None:
        data = self._kv.get("tasks", task_id.encode())
        if data is None:
            return None
        task = record.decode(data, self._kv.get("payloads", task_id.encode()) or b"")
        self._loaded[task_id] = (keys.index_entries(task), (task.queue, task.state))
        return task

    def load_tasks(self, task_ids: list[str]) -> None:
        """A hint for SQL stores (one round trip); a KV read is already cheap."""

    def put_task(self, task: Task, *, is_new: bool = False) -> None:
        """Write a task and bring its index entries in line with its state.

        `is_new`: the caller knows no record exists (it just looked, or made the id).
        """
        kv = self._kv
        task_key = task.id.encode()
        new = keys.index_entries(task)
        counted = (task.queue, task.state)
        deltas = self._count_deltas
        if is_new:
            if task.payload:  # written once, here: state changes rewrite only the record
                kv.put("payloads", task_key, task.payload)
            for db, key, value in new:
                kv.put(db, key, value)
            deltas[counted] = deltas.get(counted, 0) + 1
        else:
            loaded = self._loaded.get(task.id)
            if loaded is None:
                data = kv.get("tasks", task_key)
                if data is None:
                    loaded = (set(), None)
                    if task.payload:
                        kv.put("payloads", task_key, task.payload)
                else:
                    stored = record.index_state(data)
                    loaded = (keys.index_entries(stored), (stored.queue, stored.state))
            old, was_counted = loaded
            for db, key, _ in old - new:
                kv.delete(db, key)
            for db, key, value in new - old:
                kv.put(db, key, value)
            if was_counted != counted:
                if was_counted is not None:
                    deltas[was_counted] = deltas.get(was_counted, 0) - 1
                deltas[counted] = deltas.get(counted, 0) + 1
        kv.put("tasks", task_key, record.encode(task))
        self._loaded[task.id] = (new, counted)

    def delete_task(self, task: Task) -> None:
        loaded = self._loaded.pop(task.id, None)
        old, counted = loaded if loaded is not None else (keys.index_entries(task), None)
        counted = counted or (task.queue, task.state)
        for db, key, _ in old:
            self._kv.delete(db, key)
        self._kv.delete("tasks", task.id.encode())
        self._kv.delete("payloads", task.id.encode())
        deltas = self._count_deltas
        deltas[counted] = deltas.get(counted, 0) - 1

    def ready_task_ids(self, queue: str, limit: int, concurrency_key: str = "") -> list[str]:
        """READY tasks of a queue with exactly this key ("": none) in lease order:
        priority, run time, sequence."""
        if concurrency_key:
            prefix = keys.keyed_prefix(queue, concurrency_key)
            db = "keyed"
        else:
            prefix = keys.queue_prefix(queue)
            db = "ready"
        end = prefix[:-1] + b"\x01"
        return [v.decode() for _, v in self._kv.scan(db, prefix, end, limit)]

    def ready_keys(self, queue: str, after: str, limit: int) -> list[str]:
        """Distinct keys (never "") with READY tasks, past `after`, in key order: one seek
        per key (a skip scan of the keyed index)."""
        return [key for key, _ in self.ready_heads(queue, after, limit)]

    def ready_heads(self, queue: str, after: str, limit: int) -> list[tuple[str, str]]:
        """ready_keys with each key's first READY task: the entry its seek lands on."""
        prefix = keys.queue_prefix(queue)
        end = prefix[:-1] + b"\x01"
        start = prefix + after.encode() + b"\x01" if after else prefix
        found: list[tuple[str, str]] = []
        while len(found) < limit:
            items = self._kv.scan("keyed", start, end, 1)
            if not items:
                break
            key, task_id = items[0]
            rest = key[len(prefix) :]
            name = rest[: rest.index(b"\x00")]
            found.append((name.decode(), task_id.decode()))
            start = prefix + name + b"\x01"  # past every entry of this key
        return found

    def leased_count(self, queue: str, concurrency_key: str | None = None) -> int:
        """LEASED tasks of the queue (None) or of one key, changes of this write included."""
        if concurrency_key is None:
            at = (queue, TaskState.LEASED)
            data = self._kv.get("counts", keys.count_key(queue, TaskState.LEASED))
            pending = self._count_deltas.get(at, 0)
            return (keys.unpack_u64(data) if data is not None else 0) + pending
        if not concurrency_key:  # tasks without a key: the queue's LEASED less the keyed
            start = keys.queue_prefix(queue)
            keyed = self._kv.scan("keyleased", start, start[:-1] + b"\x01", 1 << 62)
            return self.leased_count(queue) - len(keyed)
        # the key's entries in the keyleased index: about as many as its key_concurrency
        prefix = keys.keyed_prefix(queue, concurrency_key)
        return len(self._kv.scan("keyleased", prefix, prefix[:-1] + b"\x01", 1 << 62))

    def keyed_queues(self) -> list[str]:
        """Queues holding READY or LEASED tasks with a key, in name order (a skip scan)."""
        names: set[str] = set()
        for db in ("keyed", "keyleased"):
            start = b""
            while True:
                items = self._kv.scan(db, start, None, 1)
                if not items:
                    break
                queue = items[0][0].split(b"\x00", 1)[0]
                names.add(queue.decode())
                start = queue + b"\x01"
        return sorted(names)

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
        if self._count_deltas:
            for (queue, state), delta in self._count_deltas.items():
                if delta:
                    _add_count(self._kv, keys.count_key(queue, state), delta)
            self._count_deltas = {}

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
        """O(queues): the kept counts, and a few seeks per queue into the ready index."""
        depths: dict[str, QueueDepth] = {}
        for key, value in self._kv.scan("counts", b"", None, 1 << 62):
            queue, state = keys.split_count_key(key)
            depth = depths.get(queue)
            if depth is None:
                depth = depths[queue] = QueueDepth(queue)
            depth.counts[state] = keys.unpack_u64(value)
        for depth in depths.values():
            if depth.counts.get(TaskState.READY):
                depth.oldest_ready_at = self._oldest_ready_at(depth.queue)
        return [depths[name] for name in sorted(depths)]

    def _oldest_ready_at(self, queue: str) -> float | None:
        """The earliest run time among a queue's READY tasks.

        The ready index orders by priority first, so the earliest run time of each
        priority is the first key of that priority's range: one seek per distinct
        priority, at most _OLDEST_READY_SEEKS of them (past that, the oldest of those seen);
        keyed tasks likewise, in the first _OLDEST_READY_KEYS keys.
        """
        oldest = self._oldest_in(keys.queue_prefix(queue), "ready", _OLDEST_READY_SEEKS)
        for concurrency_key in self.ready_keys(queue, "", _OLDEST_READY_KEYS):
            prefix = keys.keyed_prefix(queue, concurrency_key)
            found = self._oldest_in(prefix, "keyed", _OLDEST_KEY_SEEKS)
            if found is not None and (oldest is None or found < oldest):
                oldest = found
        return oldest

    def _oldest_in(self, prefix: bytes, db: str, max_seeks: int) -> float | None:
        """The earliest run time in one ready range: one seek per distinct priority."""
        start, end = prefix, prefix[:-1] + b"\x01"
        oldest: float | None = None
        for _ in range(max_seeks):
            items = self._kv.scan(db, start, end, 1)
            if not items:
                break
            run_at = keys.ready_key_run_at(items[0][0], len(prefix))
            oldest = run_at if oldest is None else min(oldest, run_at)
            next_start = keys.next_priority_start(items[0][0], len(prefix))
            if next_start is None:
                break
            start = next_start
        return oldest

    def count(self, index: str) -> int:
        """Number of entries in an index (for tests and operators; O(n))."""
        return len(self._kv.scan(index, b"", None, 1 << 62))


def _add_count(kv: KvTxn, key: bytes, delta: int) -> None:
    data = kv.get("counts", key)
    total = (keys.unpack_u64(data) if data is not None else 0) + delta
    if total > 0:
        kv.put("counts", key, keys.pack_u64(total))
    elif data is not None:  # a queue and state that holds no task has no count
        kv.delete("counts", key)


def rebuild_queue_counts(kv: KvTxn) -> None:
    """Count every task record into the `counts` database from scratch (one scan).

    For a data directory written before the counts were kept (schema 2 -> 3).
    """
    for key, _ in kv.scan("counts", b"", None, 1 << 62):
        kv.delete("counts", key)
    totals: dict[tuple[str, TaskState], int] = {}
    for _, data in kv.scan("tasks", b"", None, 1 << 62):
        task = record.index_state(data)
        counted = (task.queue, task.state)
        totals[counted] = totals.get(counted, 0) + 1
    for (queue, state), total in totals.items():
        kv.put("counts", keys.count_key(queue, state), keys.pack_u64(total))


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
