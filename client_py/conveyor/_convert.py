"""The client's only protobuf code: build requests, read responses. Shared by both clients."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from conveyor._model import (
    SPEC_OPTIONS,
    ExtendOutcome,
    ItemOutcome,
    LeaseRef,
    Seconds,
    Task,
    TaskError,
    TaskSpec,
    TaskState,
)
from conveyor.errors import InvalidArgument, error_for_code
from conveyor.serializer import Serializer, encode
from conveyor.v1 import task_pb2, task_service_pb2, worker_service_pb2

_STATES = {
    task_pb2.TASK_STATE_UNSPECIFIED: TaskState.UNSPECIFIED,
    task_pb2.TASK_STATE_SCHEDULED: TaskState.SCHEDULED,
    task_pb2.TASK_STATE_READY: TaskState.READY,
    task_pb2.TASK_STATE_LEASED: TaskState.LEASED,
    task_pb2.TASK_STATE_SUCCEEDED: TaskState.SUCCEEDED,
    task_pb2.TASK_STATE_DEAD: TaskState.DEAD,
    task_pb2.TASK_STATE_CANCELLED: TaskState.CANCELLED,
    task_pb2.TASK_STATE_EXPIRED: TaskState.EXPIRED,
}

LeaseLike = Task | LeaseRef | tuple[str, str]


def seconds(value: Seconds | None) -> float | None:
    """Seconds of a timedelta or number; None stays None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def duration(value: Seconds) -> duration_pb2.Duration:
    """A protobuf Duration from a timedelta or seconds, rounded to whole nanoseconds
    (rounding only the fraction turned 0.9999999999 s into an invalid nanos=10**9)."""
    total = seconds(value)
    assert total is not None
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(total * 1e9))
    return out


def to_timestamp(value: datetime, field: str) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp from an aware datetime; a naive one is refused (its zone is a guess)."""
    if value.tzinfo is None:
        raise InvalidArgument(f"{field}: give a timezone-aware datetime")
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(UTC))
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(pb: Any, field: str) -> datetime | None:
    """An aware UTC datetime (microseconds, like Timestamp.ToDatetime, at a fifth of its cost).

    Datetimes are immutable and the tasks of one batch share their times, so
    recent ones are kept: a dict lookup instead of building one per field per task.
    """
    if not pb.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(pb, field)
    key = (stamp.seconds, stamp.nanos)
    value = _DATETIMES.get(key)
    if value is None:
        if len(_DATETIMES) >= _MAX_DATETIMES:
            _DATETIMES.clear()
        value = _DATETIMES[key] = _EPOCH + timedelta(
            seconds=stamp.seconds, microseconds=stamp.nanos // 1000
        )
    return value


_DATETIMES: dict[tuple[int, int], datetime] = {}
_MAX_DATETIMES = 4096


def spec_to_pb(spec: TaskSpec, serializer: Serializer) -> task_pb2.TaskSpec:
    """Encode a TaskSpec; the payload goes through the serializer unless already bytes."""
    data, content_type = encode(serializer, spec.payload)
    pb = task_pb2.TaskSpec(
        kind=spec.kind,
        queue=spec.queue or "",
        id=spec.id or "",
        payload=data,
        content_type=spec.content_type or content_type,
        headers=spec.headers or {},
        priority=spec.priority or 0,
        max_attempts=spec.max_attempts or 0,
        unique_key=spec.unique_key or "",
        concurrency_key=spec.concurrency_key or "",
    )
    if spec.delay is not None:
        pb.delay.CopyFrom(duration(spec.delay))
    if spec.run_at is not None:
        pb.run_at.CopyFrom(to_timestamp(spec.run_at, "run_at"))
    if spec.deadline is not None:
        pb.deadline.CopyFrom(to_timestamp(spec.deadline, "deadline"))
    for name in ("lease_duration", "unique_window", "result_retention"):
        value = getattr(spec, name)
        if value is not None:
            getattr(pb, name).CopyFrom(duration(value))
    policy = spec.retry_policy
    if policy is not None:
        rp = pb.retry_policy
        rp.SetInParent()
        if policy.initial_backoff is not None:
            rp.initial_backoff.CopyFrom(duration(policy.initial_backoff))
        if policy.max_backoff is not None:
            rp.max_backoff.CopyFrom(duration(policy.max_backoff))
        rp.multiplier = policy.multiplier or 0.0
        rp.jitter = policy.jitter or 0.0
    return pb


def merge_spec(item: TaskSpec | tuple[str, Any], defaults: dict[str, Any]) -> TaskSpec:
    """An enqueue_many item with the batch's keyword options filling what it leaves unset."""
    if isinstance(item, TaskSpec):
        unset = {k: v for k, v in defaults.items() if getattr(item, k) is None}
        return replace(item, **unset) if unset else item
    kind, payload = item
    return TaskSpec(kind, payload, **defaults)


def options(values: dict[str, Any]) -> dict[str, Any]:
    """The TaskSpec options among keyword arguments that were actually given."""
    return {k: v for k, v in values.items() if k in SPEC_OPTIONS and v is not None}


def task_from_pb(pb: task_pb2.Task, serializer: Serializer, duplicate: bool = False) -> Task:
    error = _error(pb) if pb.HasField("last_error") else None
    has_result = pb.HasField("result")
    return Task(
        id=pb.id,
        queue=pb.queue,
        kind=pb.kind,
        state=_STATES.get(pb.state, TaskState.UNSPECIFIED),
        attempt=pb.attempt,
        max_attempts=pb.max_attempts,
        priority=pb.priority,
        headers=dict(pb.headers) if pb.headers else {},
        payload_bytes=pb.payload,
        content_type=pb.content_type,
        created_at=_time(pb, "created_at"),
        updated_at=_time(pb, "updated_at"),
        run_at=_time(pb, "run_at"),
        deadline=_time(pb, "deadline"),
        leased_at=_time(pb, "leased_at"),
        lease_expires_at=_time(pb, "lease_expires_at"),
        finished_at=_time(pb, "finished_at"),
        lease_token=pb.lease_token,
        worker_id=pb.worker_id,
        unique_key=pb.unique_key,
        concurrency_key=pb.concurrency_key,
        cancel_requested=pb.cancel_requested,
        last_error=error,
        result_bytes=pb.result.data if has_result else None,
        result_content_type=pb.result.content_type if has_result else "",
        duplicate=duplicate,
        serializer=serializer,
    )


_TIME_FIELDS = (
    "created_at",
    "updated_at",
    "run_at",
    "deadline",
    "leased_at",
    "lease_expires_at",
    "finished_at",
)


class _LazyTime:
    """A Task time decoded from the protobuf message on first read, then kept."""

    __slots__ = ("name", "slot")

    def __init__(self, name: str) -> None:
        self.name = name
        self.slot = Task.__dict__[name]  # the dataclass's slot descriptor

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        try:
            return self.slot.__get__(obj, owner)
        except AttributeError:
            value = _time(obj._pb, self.name)
            self.slot.__set__(obj, value)
            return value

    def __set__(self, obj: Any, value: Any) -> None:
        self.slot.__set__(obj, value)


class LeasedTask(Task):
    """A Task handed to a worker. Same fields; its times are decoded when first read.

    A worker rarely looks at them, and decoding seven timestamps was the biggest
    share of turning a leased task into a Task.
    """

    __slots__ = ("_pb",)
    _pb: task_pb2.Task

    @property
    def lease_seconds(self) -> float | None:
        """Length of the lease, from the message (no datetimes) while its times are unread."""
        pb = getattr(self, "_pb", None)  # absent in a copy made by dataclasses.replace
        if pb is None or _is_set(self, "lease_expires_at") or _is_set(self, "leased_at"):
            return super().lease_seconds  # the fields themselves, as set or decoded
        if not pb.HasField("lease_expires_at"):
            return None
        end, start = pb.lease_expires_at, pb.leased_at  # leased_at is set with the expiry
        return (end.seconds - start.seconds) + (end.nanos - start.nanos) * 1e-9


for _name in _TIME_FIELDS:
    setattr(LeasedTask, _name, _LazyTime(_name))


def _is_set(task: Task, name: str) -> bool:
    """Whether a time field holds a value already (decoded, assigned or copied)."""
    try:
        Task.__dict__[name].__get__(task, Task)
    except AttributeError:
        return False
    return True


def leased_task_from_pb(pb: task_pb2.Task, serializer: Serializer) -> Task:
    """task_from_pb for Lease and StreamWork answers, with lazily decoded times."""
    task = object.__new__(LeasedTask)
    task._pb = pb
    task.id = pb.id
    task.queue = pb.queue
    task.kind = pb.kind
    task.state = _STATES.get(pb.state, TaskState.UNSPECIFIED)
    task.attempt = pb.attempt
    task.max_attempts = pb.max_attempts
    task.priority = pb.priority
    task.headers = dict(pb.headers) if pb.headers else {}
    task.payload_bytes = pb.payload
    task.content_type = pb.content_type
    task.lease_token = pb.lease_token
    task.worker_id = pb.worker_id
    task.unique_key = pb.unique_key
    task.concurrency_key = pb.concurrency_key
    task.cancel_requested = pb.cancel_requested
    task.last_error = _error(pb) if pb.HasField("last_error") else None
    task.result_bytes = None
    task.result_content_type = ""
    task.duplicate = False
    task.serializer = serializer
    return task


def _error(pb: task_pb2.Task) -> TaskError:
    e = pb.last_error
    return TaskError(e.type, e.message, e.details, e.attempt, _time(e, "failed_at"))


# -- worker calls ---------------------------------------------------------------


def lease_ids(lease: LeaseLike) -> tuple[str, str]:
    """(task id, lease token) of a leased Task, a LeaseRef or a (task_id, token) pair."""
    if isinstance(lease, Task):
        return lease.id, lease.lease_token
    if isinstance(lease, LeaseRef):
        return lease.task_id, lease.lease_token
    if isinstance(lease, str):  # would unpack as two characters
        raise InvalidArgument("lease: give a leased Task, a LeaseRef or (task_id, lease_token)")
    task_id, lease_token = lease
    return task_id, lease_token


def lease_ref(lease: LeaseLike | str, token: str | None = None) -> worker_service_pb2.LeaseRef:
    """Accept a leased Task, a LeaseRef, a (task_id, token) pair, or a task id plus token."""
    if isinstance(lease, str):
        if token is None:
            raise InvalidArgument("lease_token: give the token with a bare task id")
        return worker_service_pb2.LeaseRef(task_id=lease, lease_token=token)
    task_id, lease_token = lease_ids(lease)
    return worker_service_pb2.LeaseRef(task_id=task_id, lease_token=lease_token)


def _queue_list(queues: Sequence[str] | str) -> list[str]:
    return [queues] if isinstance(queues, str) else list(queues)


def _queue_order(round_robin: bool) -> worker_service_pb2.QueueOrder.ValueType:
    if round_robin:
        return worker_service_pb2.QUEUE_ORDER_ROUND_ROBIN
    return worker_service_pb2.QUEUE_ORDER_STRICT


def lease_request(
    queues: Sequence[str] | str,
    max_tasks: int,
    lease_duration: Seconds | None,
    wait: Seconds | None,
    worker_id: str,
    round_robin: bool,
) -> worker_service_pb2.LeaseRequest:
    request = worker_service_pb2.LeaseRequest(
        queues=_queue_list(queues),
        max_tasks=max_tasks,
        worker_id=worker_id,
        queue_order=_queue_order(round_robin),
    )
    if lease_duration is not None:
        request.lease_duration.CopyFrom(duration(lease_duration))
    if wait is not None:
        request.wait.CopyFrom(duration(wait))
    return request


def extend_request(
    leases: Iterable[LeaseLike], lease_duration: Seconds | None
) -> worker_service_pb2.ExtendLeaseRequest:
    request = worker_service_pb2.ExtendLeaseRequest()
    for lease in leases:
        item = request.leases.add()
        item.lease.CopyFrom(lease_ref(lease))
        if lease_duration is not None:
            item.lease_duration.CopyFrom(duration(lease_duration))
    return request


def ack_item(lease: LeaseLike, result: Any, serializer: Serializer) -> worker_service_pb2.AckItem:
    data, content_type = encode(serializer, result)
    return worker_service_pb2.AckItem(
        lease=lease_ref(lease), result=task_pb2.TaskResult(data=data, content_type=content_type)
    )


def fail_item(
    lease: LeaseLike,
    error_type: str,
    message: str,
    details: str,
    retryable: bool,
    retry_delay: Seconds | None,
) -> worker_service_pb2.FailItem:
    item = worker_service_pb2.FailItem(
        lease=lease_ref(lease),
        error=task_pb2.TaskError(type=error_type, message=message, details=details),
        retryable=retryable,
    )
    if retry_delay is not None:
        item.retry_delay.CopyFrom(duration(max(seconds(retry_delay) or 0.0, 0.0)))
    return item


def item_outcomes(
    pb_outcomes: Iterable[worker_service_pb2.ItemOutcome], task_ids: Sequence[str]
) -> list[ItemOutcome]:
    """Per-item outcomes; a lone item's failure arrived as the call's status instead."""
    return [
        ItemOutcome(o.task_id or task_id, _item_error(o))
        for o, task_id in zip(pb_outcomes, task_ids, strict=False)
    ]


def extend_outcomes(response: worker_service_pb2.ExtendLeaseResponse) -> list[ExtendOutcome]:
    return extension_results(response.results)


def extension_results(
    results: Iterable[worker_service_pb2.LeaseExtensionResult],
) -> list[ExtendOutcome]:
    out = []
    for r in results:
        expires = _time(r, "lease_expires_at")
        out.append(
            ExtendOutcome(r.outcome.task_id, _item_error(r.outcome), expires, r.cancel_requested)
        )
    return out


def stream_outcomes(pb_outcomes: Iterable[worker_service_pb2.ItemOutcome]) -> list[ItemOutcome]:
    """Outcomes of a work stream's items: each names its task."""
    return [ItemOutcome(o.task_id, _item_error(o)) for o in pb_outcomes]


def stream_open(
    queues: Sequence[str] | str,
    lease_duration: Seconds | None,
    worker_id: str,
    round_robin: bool,
    credits: int,
) -> worker_service_pb2.StreamWorkRequest:
    """The first request of a work stream: what to lease, and the first credits."""
    spec = worker_service_pb2.StreamWorkOpen(
        queues=_queue_list(queues), worker_id=worker_id, queue_order=_queue_order(round_robin)
    )
    if lease_duration is not None:
        spec.lease_duration.CopyFrom(duration(lease_duration))
    return worker_service_pb2.StreamWorkRequest(open=spec, credits=max(credits, 0))


def _item_error(outcome: worker_service_pb2.ItemOutcome) -> Any:
    if outcome.code == 0:
        return None
    return error_for_code(outcome.code, outcome.message, is_lease_call=True)


def enqueue_requests(
    specs: Sequence[task_pb2.TaskSpec], batch_size: int, reject_duplicate: bool
) -> list[task_service_pb2.EnqueueBatchRequest]:
    """Split specs into EnqueueBatch requests of at most batch_size tasks."""
    return [
        task_service_pb2.EnqueueBatchRequest(
            tasks=specs[start : start + batch_size], reject_duplicate=reject_duplicate
        )
        for start in range(0, len(specs), batch_size)
    ]


def wait_request(task_id: str, wait: float) -> task_service_pb2.GetResultRequest:
    request = task_service_pb2.GetResultRequest(task_id=task_id)
    if wait > 0:
        request.wait.CopyFrom(duration(wait))
    return request
