"""Protobuf request/response messages <-> core model (Task itself is in codec.py)."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from conveyor.v1 import task_pb2, task_service_pb2, worker_service_pb2
from conveyor_server.core.errors import ConveyorError, InvalidArgument
from conveyor_server.core.model import (
    DEFAULT_QUEUE,
    Ack,
    EnqueueOutcome,
    Extension,
    Failure,
    ItemOutcome,
    LeaseRef,
    QueueOrder,
    TaskResult,
    TaskSpec,
)
from conveyor_server.rpc.codec import (
    fill_enqueued_task,
    get_duration,
    get_time,
    retry_policy_from_pb,
    set_time,
    task_to_pb,
)
from conveyor_server.rpc.errors import status_for


def queues_from_pb(queues: Sequence[str]) -> list[str]:
    """A Lease's queue names; an empty one means the default queue, as in TaskSpec.queue."""
    return [queue or DEFAULT_QUEUE for queue in queues]


def optional_duration(message: object, field: str) -> float | None:
    """Seconds of a Duration field, or None when the field is absent."""
    return get_duration(getattr(message, field)) if message.HasField(field) else None  # type: ignore[attr-defined]


def spec_from_pb(pb: task_pb2.TaskSpec) -> TaskSpec:
    retry = None
    if pb.HasField("retry_policy"):
        retry = retry_policy_from_pb(pb.retry_policy)
    return TaskSpec(
        kind=pb.kind,
        queue=pb.queue or DEFAULT_QUEUE,
        payload=pb.payload,
        content_type=pb.content_type,
        headers=dict(pb.headers) if pb.headers else {},  # copying an empty map is not free
        priority=pb.priority,
        id=pb.id,
        run_at=get_time(pb.run_at) if pb.HasField("run_at") else None,
        delay=optional_duration(pb, "delay"),
        deadline=get_time(pb.deadline) if pb.HasField("deadline") else None,
        max_attempts=pb.max_attempts or None,
        retry_policy=retry,
        lease_duration=optional_duration(pb, "lease_duration"),
        unique_key=pb.unique_key,
        unique_window=optional_duration(pb, "unique_window"),
        result_retention=optional_duration(pb, "result_retention"),
        concurrency_key=pb.concurrency_key,
    )


def wait_seconds(message: object) -> float:
    """The `wait` of a long-poll request; absent means 0."""
    wait = get_duration(message.wait)  # type: ignore[attr-defined]
    if wait < 0:
        raise InvalidArgument("wait: must not be negative")
    return wait


def fill_enqueue_response(
    response: task_service_pb2.EnqueueResponse, outcome: EnqueueOutcome
) -> None:
    """A new task comes back lean; an existing duplicate without its payload, headers,
    result and last error (GetTask has them): an answer never outgrows its request.

    Filled in place (e.g. `batch.results.add()`): building a message and then
    assigning it copies it, twice per task in an EnqueueBatch response.
    """
    if outcome.duplicate:
        response.task.CopyFrom(task_to_pb(outcome.task, has_content=False))
        response.duplicate = True
    else:
        fill_enqueued_task(response.task, outcome.task)


def queue_order_from_pb(value: int) -> QueueOrder:
    if value == worker_service_pb2.QUEUE_ORDER_UNSPECIFIED:
        return QueueOrder.STRICT
    try:
        return QueueOrder(value)
    except ValueError:
        raise InvalidArgument(f"queue_order: unknown value {value}") from None


def lease_ref_from_pb(pb: worker_service_pb2.LeaseRef) -> LeaseRef:
    return LeaseRef(task_id=pb.task_id, lease_token=pb.lease_token)


def extensions_from_pb(
    items: Sequence[worker_service_pb2.LeaseExtension],
) -> list[Extension]:
    return [
        Extension(lease_ref_from_pb(e.lease), optional_duration(e, "lease_duration")) for e in items
    ]


def acks_from_pb(items: Sequence[worker_service_pb2.AckItem]) -> list[Ack]:
    acks = []
    for item in items:
        lease = item.lease
        result = (
            TaskResult(data=item.result.data, content_type=item.result.content_type)
            if item.HasField("result")
            else _NO_RESULT
        )
        acks.append(Ack(LeaseRef(lease.task_id, lease.lease_token), result))
    return acks


#: Shared by acks without a result (no-op handlers); TaskResult is never mutated.
_NO_RESULT = TaskResult()


def failures_from_pb(items: Sequence[worker_service_pb2.FailItem]) -> list[Failure]:
    return [
        Failure(
            lease=lease_ref_from_pb(f.lease),
            error_type=f.error.type,
            error_message=f.error.message,
            error_details=f.error.details,
            is_retryable=f.retryable if f.HasField("retryable") else True,
            retry_delay=optional_duration(f, "retry_delay"),
        )
        for f in items
    ]


def raise_lone_failure(outcomes: Sequence[ItemOutcome]) -> None:
    """A unary call about one item that failed answers with that item's status."""
    if len(outcomes) == 1 and outcomes[0].error is not None:
        raise outcomes[0].error


def fill_item_outcomes(
    target: RepeatedCompositeFieldContainer[worker_service_pb2.ItemOutcome],
    outcomes: Sequence[ItemOutcome],
) -> None:
    """One ItemOutcome per item, added in place (no message built and then copied)."""
    add = target.add
    for outcome in outcomes:
        _set_outcome(add(), outcome)


def fill_extend_results(
    target: RepeatedCompositeFieldContainer[worker_service_pb2.LeaseExtensionResult],
    outcomes: Sequence[ItemOutcome],
) -> None:
    add = target.add
    for outcome in outcomes:
        result = add()
        _set_outcome(result.outcome, outcome)
        task = outcome.task
        if task is not None and task.lease_expires_at is not None:
            set_time(result.lease_expires_at, task.lease_expires_at)
            result.cancel_requested = task.cancel_requested


def _set_outcome(pb: worker_service_pb2.ItemOutcome, outcome: ItemOutcome) -> None:
    pb.task_id = outcome.task_id
    error = outcome.error
    if error is not None:
        code = status_for(error)[0] if isinstance(error, ConveyorError) else None
        pb.code = code.value[0] if code is not None else 13  # INTERNAL
        pb.message = str(error)
