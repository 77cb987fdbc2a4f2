"""Task records as stored: a version byte, then a marshal'd tuple of the task's fields.

Why not the protobuf Task message: converting between the model and protobuf
costs ~31 µs per record round trip in Python, marshal ~4 µs, and a task is
read and written twice on its way through the broker (lease, then ack).
marshal is pinned to format 4, which every Python since 3.4 reads. The
payload is not in the record (it sits in the `payloads` database, written
once). Change the tuple, bump RECORD_VERSION and teach `decode` the old one.
"""

from __future__ import annotations

import marshal

from conveyor_server.core.model import RetryPolicy, Task, TaskError, TaskResult, TaskState

RECORD_VERSION = 1
_PREFIX = bytes([RECORD_VERSION])
_STATES = {int(state): state for state in TaskState}  # a dict lookup; TaskState(n) is ~0.4 us
#: Records decode to one shared RetryPolicy per distinct policy (it is frozen): most
#: tasks use the broker default, and building the dataclass is a cost per read.
_POLICIES: dict[tuple[float, float, float, float], RetryPolicy] = {}
_MAX_POLICIES = 1024


def encode(task: Task) -> bytes:
    rp = task.retry_policy
    error = task.last_error
    result = task.result
    return _PREFIX + marshal.dumps(
        (
            task.id,
            task.queue,
            task.kind,
            task.content_type,
            task.headers,
            task.priority,
            task.run_at,
            task.deadline,
            task.max_attempts,
            (rp.initial_backoff, rp.multiplier, rp.max_backoff, rp.jitter),
            task.lease_duration,
            task.unique_key,
            task.unique_window,
            task.result_retention,
            int(task.state),
            task.sequence,
            task.created_at,
            task.updated_at,
            task.attempt,
            task.leased_at,
            task.lease_expires_at,
            task.lease_token,
            task.worker_id,
            task.cancel_requested,
            task.finished_at,
            None
            if error is None
            else (error.type, error.message, error.details, error.attempt, error.failed_at),
            None if result is None else (result.data, result.content_type),
        ),
        4,
    )


def decode(data: bytes, payload: bytes) -> Task:
    if data[:1] != _PREFIX:
        raise ValueError(f"unknown task record version {data[:1]!r}")
    (
        task_id, queue, kind, content_type, headers, priority, run_at, deadline,
        max_attempts, retry, lease_duration, unique_key, unique_window, result_retention,
        state, sequence, created_at, updated_at, attempt, leased_at, lease_expires_at,
        lease_token, worker_id, cancel_requested, finished_at, error, result,
    ) = marshal.loads(data[1:])  # fmt: skip
    policy = _POLICIES.get(retry)
    if policy is None:
        policy = RetryPolicy(*retry)
        if len(_POLICIES) < _MAX_POLICIES:
            _POLICIES[retry] = policy
    return Task(
        task_id, queue, kind, payload, content_type, headers, priority, run_at, deadline,
        max_attempts, policy, lease_duration, unique_key, unique_window,
        result_retention, _STATES[state], sequence, created_at, updated_at, attempt,
        leased_at, lease_expires_at, lease_token, worker_id, cancel_requested, finished_at,
        None if error is None else TaskError(*error),
        None if result is None else TaskResult(*result),
    )  # fmt: skip


def index_state(data: bytes) -> Task:
    """Decode without the payload: enough to compute a task's index entries."""
    return decode(data, b"")
