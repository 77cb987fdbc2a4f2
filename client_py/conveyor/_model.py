"""The client's plain data types: TaskState, Task, TaskSpec, RetryPolicy, leases and outcomes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict

from conveyor.errors import ConveyorError
from conveyor.serializer import Serializer

__all__ = [
    "ExtendOutcome",
    "Failure",
    "ItemOutcome",
    "LeaseRef",
    "RetryPolicy",
    "Task",
    "TaskError",
    "TaskOptions",
    "TaskSpec",
    "TaskState",
]

Seconds = float | int | timedelta


class TaskState(enum.StrEnum):
    """Where a task is in its lifecycle; compares equal to its name, e.g. "SUCCEEDED"."""

    UNSPECIFIED = "UNSPECIFIED"
    SCHEDULED = "SCHEDULED"
    READY = "READY"
    LEASED = "LEASED"
    SUCCEEDED = "SUCCEEDED"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"

    @property
    def is_final(self) -> bool:
        """True for states a task never leaves."""
        return self in _FINAL


_FINAL = frozenset({TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED, TaskState.EXPIRED})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff between attempts; None fields take the broker's defaults."""

    initial_backoff: Seconds | None = None
    multiplier: float | None = None
    max_backoff: Seconds | None = None
    jitter: float | None = None


@dataclass(frozen=True, slots=True)
class TaskError:
    """What a worker reported when an attempt failed."""

    type: str
    message: str
    details: str
    attempt: int
    failed_at: datetime | None


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """One lease: the task id and its fencing token."""

    task_id: str
    lease_token: str


@dataclass(slots=True)
class Task:
    """A task as the broker keeps it. Times are timezone-aware UTC datetimes.

    `payload` and `result` decode the raw bytes with the client's serializer.
    """

    id: str
    queue: str
    kind: str
    state: TaskState
    attempt: int
    max_attempts: int
    priority: int
    headers: dict[str, str]
    payload_bytes: bytes
    content_type: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    run_at: datetime | None = None
    deadline: datetime | None = None
    leased_at: datetime | None = None
    lease_expires_at: datetime | None = None
    finished_at: datetime | None = None
    lease_token: str = ""
    worker_id: str = ""
    unique_key: str = ""
    concurrency_key: str = ""
    cancel_requested: bool = False
    last_error: TaskError | None = None
    result_bytes: bytes | None = None
    result_content_type: str = ""
    duplicate: bool = False
    serializer: Serializer | None = field(default=None, repr=False, compare=False)

    @property
    def payload(self) -> Any:
        """The decoded payload."""
        return self._decode(self.payload_bytes, self.content_type)

    @property
    def result(self) -> Any:
        """The decoded result of a SUCCEEDED task; None otherwise."""
        if self.result_bytes is None:
            return None
        return self._decode(self.result_bytes, self.result_content_type)

    @property
    def lease_seconds(self) -> float | None:
        """Length of the lease this task was handed out under (Lease responses only)."""
        if self.lease_expires_at is None or self.leased_at is None:
            return None
        return (self.lease_expires_at - self.leased_at).total_seconds()

    @property
    def lease(self) -> LeaseRef:
        """The lease this task was handed out under (Lease responses only)."""
        return LeaseRef(self.id, self.lease_token)

    @property
    def is_final(self) -> bool:
        return self.state.is_final

    def _decode(self, data: bytes, content_type: str) -> Any:
        if self.serializer is None:
            return data
        return self.serializer.loads(data, content_type)


@dataclass(slots=True)
class TaskSpec:
    """A task to enqueue: `TaskSpec(kind, payload, queue=..., priority=...)`.

    Options left None take the `enqueue_many` keyword options, then broker defaults.
    """

    kind: str
    payload: Any = None
    queue: str | None = None
    id: str | None = None
    delay: Seconds | None = None
    run_at: datetime | None = None
    deadline: datetime | None = None
    priority: int | None = None
    max_attempts: int | None = None
    retry_policy: RetryPolicy | None = None
    lease_duration: Seconds | None = None
    unique_key: str | None = None
    unique_window: Seconds | None = None
    result_retention: Seconds | None = None
    headers: dict[str, str] | None = None
    content_type: str | None = None
    concurrency_key: str | None = None


class TaskOptions(TypedDict, total=False):
    """Keyword options of `enqueue` and `enqueue_many`; see TaskSpec in task.proto for each."""

    queue: str
    id: str
    delay: Seconds
    run_at: datetime
    deadline: datetime
    priority: int
    max_attempts: int
    retry_policy: RetryPolicy
    lease_duration: Seconds
    unique_key: str
    unique_window: Seconds
    result_retention: Seconds
    headers: dict[str, str]
    content_type: str
    concurrency_key: str


#: TaskSpec fields that are options (everything but kind and payload).
SPEC_OPTIONS = tuple(name for name in TaskSpec.__slots__ if name not in ("kind", "payload"))  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """Outcome of one item of a batched worker call; `error` is None when it worked."""

    task_id: str
    error: ConveyorError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class ExtendOutcome:
    """Outcome of one lease extension, with the new expiry and whether a cancel was asked."""

    task_id: str
    error: ConveyorError | None = None
    lease_expires_at: datetime | None = None
    cancel_requested: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def raise_for_error(self) -> ExtendOutcome:
        """Self, or raise the item's error."""
        if self.error is not None:
            raise self.error
        return self


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt to report with `fail_many`.

    retryable=False makes the task DEAD at once; retry_delay overrides the backoff.
    """

    lease: Task | LeaseRef | tuple[str, str]
    error_type: str
    message: str = ""
    details: str = ""
    retryable: bool = True
    retry_delay: Seconds | None = None
