"""KvQueueVerbs: the operators' TaskTxn verbs (pause state, task scans) over any KvTxn.

Pause state lives in the `meta` database under b"paused" 0x00 | queue -> b"" (see
store/keys.py); a queue that is not paused has no entry. Task scans walk the `tasks`
database in id order and decode records without their payloads.
"""

from __future__ import annotations

from conveyor_server.core.model import Task
from conveyor_server.store import keys, record
from conveyor_server.store.base import KvTxn


class KvQueueVerbs:
    """Mixed into KvTaskTxn: pause state and task scans for core/queues.py."""

    _kv: KvTxn

    def is_paused(self, queue: str) -> bool:
        return self._kv.get("meta", keys.paused_key(queue)) is not None

    def set_paused(self, queue: str, is_paused: bool) -> None:
        if is_paused:
            self._kv.put("meta", keys.paused_key(queue), b"")
        else:
            self._kv.delete("meta", keys.paused_key(queue))

    def paused_queues(self) -> list[str]:
        """Every paused queue, in name order."""
        prefix = keys.PAUSED_PREFIX
        items = self._kv.scan("meta", prefix, prefix[:-1] + b"\x01", 1 << 62)
        return [key[len(prefix) :].decode() for key, _ in items]

    def scan_tasks(self, after: str, limit: int, *, newest_first: bool = False) -> list[Task]:
        """Up to `limit` tasks in id order past `after` ("" from the start); payloads empty."""
        bound = after.encode()
        if newest_first:
            items = self._kv.scan("tasks", b"", bound or None, limit, reverse=True)
        else:
            start = bound + b"\x00" if bound else b""
            items = self._kv.scan("tasks", start, None, limit)
        return [record.index_state(data) for _, data in items]
