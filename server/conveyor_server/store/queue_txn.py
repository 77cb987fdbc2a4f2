"""KvQueueVerbs: the operators' TaskTxn verbs (pause state, task scans) over any KvTxn.

Pause state lives in the `meta` database under b"paused" 0x00 | queue -> b"" (see
store/keys.py); a queue that is not paused has no entry. Task scans walk the `tasks`
database in id order and decode records without their payloads. Queue flows (limits and
token bucket) live in `meta` under b"flow" 0x00 | queue (store/flow_record.py).
"""

from __future__ import annotations

from collections.abc import Collection

from conveyor_server.core.flow import QueueFlow
from conveyor_server.core.model import Task
from conveyor_server.store import flow_record, keys, record
from conveyor_server.store.base import KvTxn


class KvQueueVerbs:
    """Mixed into KvTaskTxn: pause state, flows and task scans for core/queues.py."""

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

    # -- queue flows (core/flow.py) ----------------------------------------------

    def get_queue_flow(self, queue: str) -> QueueFlow | None:
        data = self._kv.get("meta", keys.flow_key(queue))
        return flow_record.decode(data) if data is not None else None

    def put_queue_flow(self, queue: str, flow: QueueFlow | None) -> None:
        """Store the queue's flow; None removes it (the queue has no limits)."""
        if flow is None:
            self._kv.delete("meta", keys.flow_key(queue))
        else:
            self._kv.put("meta", keys.flow_key(queue), flow_record.encode(flow))

    def queue_flows_for(self, queues: Collection[str]) -> dict[str, QueueFlow]:
        """The stored flows of these queues (one process writes: nothing to lock)."""
        found = {queue: self.get_queue_flow(queue) for queue in sorted(set(queues))}
        return {queue: flow for queue, flow in found.items() if flow is not None}

    def queue_flows(self) -> dict[str, QueueFlow]:
        """Every stored flow by queue, in name order."""
        prefix = keys.FLOW_PREFIX
        items = self._kv.scan("meta", prefix, prefix[:-1] + b"\x01", 1 << 62)
        return {key[len(prefix) :].decode(): flow_record.decode(value) for key, value in items}
