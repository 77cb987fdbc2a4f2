"""Task records as stored: a version byte, then a marshal'd tuple of the task's fields.

The tuple is Task's fields in declaration order without the payload, derived
from `dataclasses.fields` (never listed by hand). A field added *at the end* of
Task with a default needs no new version: older records decode with the
default. Reordering or removing a field needs a new RECORD_VERSION.

Why not the protobuf Task message: converting between the model and protobuf
costs several times what marshal does per record round trip in Python, and a
task is read and written twice on its way through the broker (lease, then ack).
marshal is pinned to format 4, which every Python since 3.4 reads. The
payload is not in the record (it sits in the `payloads` database, written
once).
"""

from __future__ import annotations

import marshal
from dataclasses import fields
from operator import attrgetter
from typing import Any

from conveyor_server.core.model import RetryPolicy, Task, TaskError, TaskResult, TaskState

RECORD_VERSION = 1
_PREFIX = bytes([RECORD_VERSION])
_STATES = {int(state): state for state in TaskState}  # a dict lookup: TaskState(n) is slower
#: Records decode to one shared RetryPolicy per distinct policy (it is frozen): most
#: tasks use the broker default, and building the dataclass is a cost per read.
_POLICIES: dict[tuple[float, float, float, float], RetryPolicy] = {}
_MAX_POLICIES = 1024

#: The record's tuple: Task's fields in declaration order, without the payload.
_FIELDS = tuple(f.name for f in fields(Task) if f.name != "payload")
_DEFAULTS = {
    f.name: f.default_factory() if callable(f.default_factory) else f.default for f in fields(Task)
}
_PAYLOAD_AT = [f.name for f in fields(Task)].index("payload")
_read_fields = attrgetter(*_FIELDS)
_STATE_AT = _FIELDS.index("state")
_RETRY_AT = _FIELDS.index("retry_policy")
_ERROR_AT = _FIELDS.index("last_error")
_RESULT_AT = _FIELDS.index("result")
_RETRY_FIELDS = attrgetter(*(f.name for f in fields(RetryPolicy)))
_ERROR_FIELDS = attrgetter(*(f.name for f in fields(TaskError)))
_RESULT_FIELDS = attrgetter(*(f.name for f in fields(TaskResult)))


def _encode_values(task: Task) -> tuple[Any, ...]:
    values = list(_read_fields(task))
    values[_STATE_AT] = int(values[_STATE_AT])
    values[_RETRY_AT] = _RETRY_FIELDS(values[_RETRY_AT])
    error = values[_ERROR_AT]
    values[_ERROR_AT] = None if error is None else _ERROR_FIELDS(error)
    result = values[_RESULT_AT]
    values[_RESULT_AT] = None if result is None else _RESULT_FIELDS(result)
    return tuple(values)


def encode(task: Task) -> bytes:
    return _PREFIX + marshal.dumps(_encode_values(task), 4)


def decode(data: bytes, payload: bytes) -> Task:
    if data[:1] != _PREFIX:
        raise ValueError(f"unknown task record version {data[:1]!r}")
    values = list(marshal.loads(data[1:]))
    if len(values) < len(_FIELDS):  # a record from before a field was added at the end
        values.extend(_DEFAULTS[name] for name in _FIELDS[len(values) :])
    retry = values[_RETRY_AT]
    policy = _POLICIES.get(retry)
    if policy is None:
        policy = RetryPolicy(*retry)
        if len(_POLICIES) < _MAX_POLICIES:
            _POLICIES[retry] = policy
    values[_RETRY_AT] = policy
    values[_STATE_AT] = _STATES[values[_STATE_AT]]
    error = values[_ERROR_AT]
    if error is not None:
        values[_ERROR_AT] = TaskError(*error)
    result = values[_RESULT_AT]
    if result is not None:
        values[_RESULT_AT] = TaskResult(*result)
    values.insert(_PAYLOAD_AT, payload)
    return Task(*values)


def index_state(data: bytes) -> Task:
    """Decode without the payload: enough to compute a task's index entries."""
    return decode(data, b"")
