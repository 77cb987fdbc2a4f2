"""Task model: the plain dataclasses the core, the store and the RPC layer share.

Times are float seconds since the Unix epoch; durations are float seconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class TaskState(enum.IntEnum):
    """Where a task is in its lifecycle (numbers match conveyor.v1.TaskState)."""

    SCHEDULED = 1
    READY = 2
    LEASED = 3
    SUCCEEDED = 4
    DEAD = 5
    CANCELLED = 6
    EXPIRED = 7

    @property
    def is_final(self) -> bool:
        return self >= TaskState.SUCCEEDED


class QueueOrder(enum.IntEnum):
    """How Lease picks among the queues it names (numbers match conveyor.v1.QueueOrder)."""

    STRICT = 1
    ROUND_ROBIN = 2


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff between attempts, bounded by [initial, max]."""

    initial_backoff: float = 1.0
    multiplier: float = 2.0
    max_backoff: float = 300.0
    jitter: float = 0.2


@dataclass(slots=True)
class TaskError:
    """What a worker reported for a failed attempt."""

    type: str
    message: str
    details: str = ""
    attempt: int = 0
    failed_at: float = 0.0


@dataclass(slots=True)
class TaskResult:
    """Opaque result bytes a worker acked with."""

    data: bytes = b""
    content_type: str = ""


#: The queue of a task whose spec names none, and of an empty name in a Lease's queues.
DEFAULT_QUEUE = "default"


@dataclass(slots=True)
class TaskSpec:
    """A producer's request to create a task; None means "use the broker default"."""

    kind: str
    queue: str = DEFAULT_QUEUE
    payload: bytes = b""
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    id: str = ""
    run_at: float | None = None
    delay: float | None = None
    deadline: float | None = None
    max_attempts: int | None = None
    retry_policy: RetryPolicy | None = None
    lease_duration: float | None = None
    unique_key: str = ""
    unique_window: float | None = None
    result_retention: float | None = None
    #: Fairness and per-key limit key within the queue ("": none); see core/flow.py.
    concurrency_key: str = ""


@dataclass(slots=True)
class Task:
    """A task as the broker keeps it."""

    id: str
    queue: str
    kind: str
    payload: bytes
    content_type: str
    headers: dict[str, str]
    priority: int
    run_at: float
    deadline: float | None
    max_attempts: int
    retry_policy: RetryPolicy
    lease_duration: float
    unique_key: str
    unique_window: float
    result_retention: float
    state: TaskState
    sequence: int
    created_at: float
    updated_at: float
    attempt: int = 0
    leased_at: float | None = None
    lease_expires_at: float | None = None
    lease_token: str = ""
    worker_id: str = ""
    cancel_requested: bool = False
    finished_at: float | None = None
    last_error: TaskError | None = None
    result: TaskResult | None = None
    #: Last, with a default: records written before it decode with "" (store/record.py).
    concurrency_key: str = ""

    @property
    def remove_at(self) -> float | None:
        """When retention ends for a finished task (None while it is unfinished)."""
        if self.finished_at is None:
            return None
        return self.finished_at + self.result_retention


@dataclass(slots=True)
class EnqueueOutcome:
    """One enqueued task, or the existing one it duplicates."""

    task: Task
    duplicate: bool


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """A lease as a worker names it: the task and its fencing token."""

    task_id: str
    lease_token: str


@dataclass(frozen=True, slots=True)
class Extension:
    """A heartbeat for one lease; None extends by the task's own lease_duration."""

    lease: LeaseRef
    lease_duration: float | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """A success report for one lease."""

    lease: LeaseRef
    result: TaskResult


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure report for one lease."""

    lease: LeaseRef
    error_type: str
    error_message: str
    error_details: str = ""
    is_retryable: bool = True
    retry_delay: float | None = None


@dataclass(slots=True)
class ItemOutcome:
    """The outcome of one item of a batched worker call: error is None on success."""

    task_id: str
    error: Exception | None = None
    task: Task | None = None


@dataclass(slots=True)
class TickOutcome:
    """What one timer pass changed, so the caller can wake waiters."""

    ready_queues: set[str] = field(default_factory=set)
    finished: list[Task] = field(default_factory=list)
    removed: int = 0
    is_more_due: bool = False
    #: Tasks whose lease ran out in this pass, in their new state (READY, DEAD, CANCELLED).
    lease_expired: list[Task] = field(default_factory=list)


@dataclass(slots=True)
class QueueDepth:
    """How many tasks a queue holds in each state, and when its oldest READY task became due."""

    queue: str
    counts: dict[TaskState, int] = field(default_factory=dict)
    oldest_ready_at: float | None = None
