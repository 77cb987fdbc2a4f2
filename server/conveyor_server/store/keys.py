"""Index key layout: fixed-width big-endian fields, so byte order is time/priority order.

tasks      id                                              -> Task record (store/record.py)
payloads   id                                              -> payload bytes (written once)
ready      queue 0x00 | 0x7fffffff-priority u32 | run_at_us u64 | sequence u64 -> id
           (READY tasks without a concurrency_key only)
keyed      queue 0x00 | key 0x00 | 0x7fffffff-priority u32 | run_at_us u64 | sequence u64 -> id
           (READY tasks with a concurrency_key; a key holds no NUL: core/validation.py)
keyleased  queue 0x00 | key 0x00 | id                      -> b""   (LEASED keyed tasks only)
scheduled  run_at_us u64 | sequence u64                    -> id
leases     lease_expires_at_us u64 | id                    -> b""
deadlines  deadline_us u64 | id                            -> b""   (SCHEDULED/READY only)
retention  remove_at_us u64 | id                           -> b""   (final tasks)
unique     queue 0x00 | unique_key                         -> id
counts     queue 0x00 | state u8                           -> u64 tasks (never 0: deleted)
meta       b"schema_version" -> u64, b"sequence" -> u64,
           b"paused" 0x00 | queue -> b""                   (paused queues only)
           b"flow" 0x00 | queue -> flow record (store/flow_record.py; queues with limits)
schedules  b"n" | name                            -> Schedule record (store/schedule_record.py)
           b"t" | next_fire_time_us u64 | name             -> b""   (active schedules only)
"""

from __future__ import annotations

import struct

from conveyor_server.core.model import Task, TaskState

_U64 = struct.Struct(">Q")
_READY = struct.Struct(">IQQ")
_SCHEDULED = struct.Struct(">QQ")
_PRIORITY_BIAS = 0x7FFFFFFF


def micros(seconds: float) -> int:
    return max(round(seconds * 1_000_000), 0)


def time_key(seconds: float, suffix: bytes = b"") -> bytes:
    return _U64.pack(micros(seconds)) + suffix


def key_time(key: bytes) -> float:
    return _U64.unpack_from(key)[0] / 1_000_000


def queue_prefix(queue: str) -> bytes:
    return queue.encode() + b"\x00"


def ready_key(task: Task) -> bytes:
    return queue_prefix(task.queue) + _READY.pack(
        _PRIORITY_BIAS - task.priority, micros(task.run_at), task.sequence
    )


def keyed_prefix(queue: str, concurrency_key: str) -> bytes:
    return queue.encode() + b"\x00" + concurrency_key.encode() + b"\x00"


def keyed_ready_key(task: Task) -> bytes:
    return keyed_prefix(task.queue, task.concurrency_key) + _READY.pack(
        _PRIORITY_BIAS - task.priority, micros(task.run_at), task.sequence
    )


def ready_key_run_at(key: bytes, prefix_length: int) -> float:
    """The run time in a ready key whose queue prefix is `prefix_length` bytes."""
    return _U64.unpack_from(key, prefix_length + 4)[0] / 1_000_000


def next_priority_start(key: bytes, prefix_length: int) -> bytes | None:
    """The first possible ready key of the next lower priority after `key`'s (None: none)."""
    (biased,) = struct.unpack_from(">I", key, prefix_length)
    if biased >= 0xFFFFFFFF:
        return None
    return key[:prefix_length] + struct.pack(">I", biased + 1)


def count_key(queue: str, state: TaskState) -> bytes:
    return queue_prefix(queue) + bytes([state])


def split_count_key(key: bytes) -> tuple[str, TaskState]:
    return key[:-2].decode(), TaskState(key[-1])


def scheduled_key(task: Task) -> bytes:
    return _SCHEDULED.pack(micros(task.run_at), task.sequence)


def unique_key(queue: str, key: str) -> bytes:
    return queue_prefix(queue) + key.encode()


def index_entries(task: Task) -> set[tuple[str, bytes, bytes]]:
    """The (database, key, value) index entries a task in its current state owns."""
    tid = task.id.encode()
    state = task.state
    entries: set[tuple[str, bytes, bytes]] = set()
    if state is TaskState.READY:
        if task.concurrency_key:
            entries.add(("keyed", keyed_ready_key(task), tid))
        else:
            entries.add(("ready", ready_key(task), tid))
    elif state is TaskState.SCHEDULED:
        entries.add(("scheduled", scheduled_key(task), tid))
    elif state is TaskState.LEASED:
        if task.lease_expires_at is not None:
            entries.add(("leases", time_key(task.lease_expires_at, tid), b""))
        if task.concurrency_key:
            entries.add(("keyleased", keyed_prefix(task.queue, task.concurrency_key) + tid, b""))
    if task.deadline is not None and state in (TaskState.SCHEDULED, TaskState.READY):
        entries.add(("deadlines", time_key(task.deadline, tid), b""))
    remove_at = task.remove_at
    if remove_at is not None:
        entries.add(("retention", time_key(remove_at, tid), b""))
    return entries


SCHEDULE_PREFIX = b"n"
SCHEDULE_DUE_PREFIX = b"t"


def schedule_key(name: str) -> bytes:
    return SCHEDULE_PREFIX + name.encode()


def schedule_due_key(next_fire_time: float, name: str) -> bytes:
    return SCHEDULE_DUE_PREFIX + time_key(next_fire_time, name.encode())


PAUSED_PREFIX = b"paused\x00"


def paused_key(queue: str) -> bytes:
    return PAUSED_PREFIX + queue.encode()


FLOW_PREFIX = b"flow\x00"


def flow_key(queue: str) -> bytes:
    return FLOW_PREFIX + queue.encode()


def pack_u64(value: int) -> bytes:
    return _U64.pack(value)


def unpack_u64(data: bytes) -> int:
    return _U64.unpack(data)[0]
