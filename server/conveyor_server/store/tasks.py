"""TaskTxn: the store's transactional verbs (tasks, indexes, uniqueness) over any KvTxn.

Both stores share this class, so the index rules are written once and the
contract tests exercise them against LMDB and memory alike.
"""

from __future__ import annotations

from conveyor_server.codec import decode_task, encode_task
from conveyor_server.core.model import Task
from conveyor_server.store import keys
from conveyor_server.store.base import KvTxn

_TIME_INDEXES = ("scheduled", "leases", "deadlines", "retention")


class TaskTxn:
    """Task-level operations inside one transaction.

    It remembers the index entries of every task it loaded, so `put_task`
    can move a task between indexes without the caller knowing the layout.
    """

    def __init__(self, kv: KvTxn) -> None:
        self._kv = kv
        self._loaded: dict[str, set[tuple[str, bytes, bytes]]] = {}

    def get_task(self, task_id: str) -> Task | None:
        data = self._kv.get("tasks", task_id.encode())
        if data is None:
            return None
        task = decode_task(data)
        task.payload = self._kv.get("payloads", task_id.encode()) or b""
        self._loaded[task_id] = keys.index_entries(task)
        return task

    def put_task(self, task: Task) -> None:
        """Write a task and bring its index entries in line with its state."""
        task_key = task.id.encode()
        old = self._loaded.get(task.id)
        if old is None:
            data = self._kv.get("tasks", task_key)
            if data is None:  # a new task: its payload is written once, here
                old = set()
                if task.payload:
                    self._kv.put("payloads", task_key, task.payload)
            else:
                old = keys.index_entries(decode_task(data))
        new = keys.index_entries(task)
        for db, key, _ in old - new:
            self._kv.delete(db, key)
        for db, key, value in new - old:
            self._kv.put(db, key, value)
        # The payload is kept apart so that state changes rewrite only a small record.
        self._kv.put("tasks", task_key, encode_task(task, include_payload=False))
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
            for index in _TIME_INDEXES
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
        data = self._kv.get("meta", b"sequence")
        value = (keys.unpack_u64(data) if data is not None else 0) + 1
        self._kv.put("meta", b"sequence", keys.pack_u64(value))
        return value

    def count(self, index: str) -> int:
        """Number of entries in an index (for tests and operators; O(n))."""
        return len(self._kv.scan(index, b"", None, 1 << 62))
