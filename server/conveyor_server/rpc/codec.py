"""The one mapping between the Task model and the conveyor.v1.Task protobuf.

Used by the RPC layer and the schedule records. Task records in the store use
store/record.py instead (faster; see there).
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import duration_pb2, timestamp_pb2

from conveyor.v1 import task_pb2
from conveyor_server.core.model import RetryPolicy, Task, TaskState


def set_time(target: timestamp_pb2.Timestamp, seconds: float) -> None:
    # Rounded to whole microseconds, the precision clients read times in (datetime):
    # truncating made a time one microsecond early whenever its float fell just short.
    whole, micros = divmod(round(seconds * 1e6), 1_000_000)  # floor: times are after 1970
    target.seconds = whole
    target.nanos = micros * 1000


def get_time(source: timestamp_pb2.Timestamp) -> float:
    return source.seconds + source.nanos / 1e9


def set_duration(target: duration_pb2.Duration, seconds: float) -> None:
    # Rounded (int() made 2.3 s 2.299999999), split as Duration.FromNanoseconds does
    # (nanos takes the sign of seconds) without its Python-level cost on the hot path.
    whole, nanos = divmod(round(seconds * 1e9), 1_000_000_000)
    if whole < 0 and nanos:
        whole += 1
        nanos -= 1_000_000_000
    target.seconds = whole
    target.nanos = nanos


def get_duration(source: duration_pb2.Duration) -> float:
    return source.seconds + source.nanos / 1e9


def retry_policy_to_pb(policy: RetryPolicy, out: task_pb2.RetryPolicy) -> None:
    set_duration(out.initial_backoff, policy.initial_backoff)
    out.multiplier = policy.multiplier
    set_duration(out.max_backoff, policy.max_backoff)
    out.jitter = policy.jitter


def retry_policy_from_pb(rp: task_pb2.RetryPolicy) -> RetryPolicy:
    """Unset parts take the broker defaults (a TaskSpec's or a schedule template's policy)."""
    defaults = RetryPolicy()
    return RetryPolicy(
        initial_backoff=(
            get_duration(rp.initial_backoff)
            if rp.HasField("initial_backoff")
            else defaults.initial_backoff
        ),
        multiplier=rp.multiplier or defaults.multiplier,
        max_backoff=(
            get_duration(rp.max_backoff) if rp.HasField("max_backoff") else defaults.max_backoff
        ),
        jitter=rp.jitter,
    )


def task_to_pb(
    task: Task, *, include_lease_token: bool = False, has_content: bool = True
) -> task_pb2.Task:
    """Encode a whole task (GetTask); the lease token leaves only with leases.

    `has_content` False leaves out what the size of a task is made of (payload,
    headers, result, last error): an Enqueue answer's duplicate.
    """
    pb = task_pb2.Task()
    _fill_worker_view(pb, task, has_content)
    if include_lease_token:
        pb.lease_token = task.lease_token
    set_time(pb.updated_at, task.updated_at)
    retry_policy_to_pb(task.retry_policy, pb.retry_policy)
    pb.unique_key = task.unique_key
    set_duration(pb.unique_window, task.unique_window)
    set_duration(pb.result_retention, task.result_retention)
    if task.finished_at is not None:
        set_time(pb.finished_at, task.finished_at)
    if task.result is not None and has_content:
        pb.result.data = task.result.data
        pb.result.content_type = task.result.content_type
    return pb


class _SharedFields:
    """Fields that a run of messages shares, encoded once and merged into each.

    Every task of one EnqueueBatch usually has the same queue, kind, priority,
    times and policy fields, and every task of one lease the same leased_at and
    expiry: merging their pre-encoded bytes is one C call where setting them
    field by field costs several (three Timestamps alone cost more).
    The bytes are built when a key comes a second time in a row, so a lone task
    (one Enqueue, one hand-over) is filled field by field with no template.
    Used on the event loop thread only.
    """

    def __init__(self, build: Callable[[task_pb2.Task, Task], None]) -> None:
        self._build = build
        self._key: tuple[object, ...] = ()
        self._blob: bytes | None = None

    def merge_into(self, pb: task_pb2.Task, key: tuple[object, ...], task: Task) -> None:
        if key != self._key:
            self._key, self._blob = key, None
            self._build(pb, task)
            return
        if self._blob is None:
            template = task_pb2.Task()
            self._build(template, task)
            self._blob = template.SerializeToString()
        pb.MergeFromString(self._blob)


def _enqueued_shared(pb: task_pb2.Task, task: Task) -> None:
    pb.queue = task.queue
    pb.kind = task.kind
    pb.content_type = task.content_type
    pb.priority = task.priority
    pb.max_attempts = task.max_attempts
    pb.state = task.state.value  # type: ignore[assignment]
    pb.unique_key = task.unique_key
    set_time(pb.run_at, task.run_at)
    set_time(pb.created_at, task.created_at)
    set_time(pb.updated_at, task.updated_at)
    set_duration(pb.lease_duration, task.lease_duration)


def _leased_shared(pb: task_pb2.Task, task: Task) -> None:
    assert task.leased_at is not None and task.lease_expires_at is not None
    set_time(pb.leased_at, task.leased_at)
    set_time(pb.lease_expires_at, task.lease_expires_at)
    set_duration(pb.lease_duration, task.lease_duration)


_ENQUEUED_SHARED = _SharedFields(_enqueued_shared)
_LEASED_SHARED = _SharedFields(_leased_shared)


def fill_enqueued_task(pb: task_pb2.Task, task: Task) -> None:
    """Fill a fresh message with a task just created, without the policy fields, the
    payload or the headers.

    Like fill_leased_task this runs once per task on a hot path (EnqueueBatch);
    the policy fields, payload and headers are the ones the producer just sent,
    and GetTask shows them. Left out, an answer stays small whatever the request's
    size (a batch's answer echoing its payloads was larger than its request, so a
    batch near the limit was committed and then refused, and the retry duplicated
    it). A new READY task has attempt 0, no worker and no cancel request: the
    defaults, so those fields are left unset.
    """
    if task.state is not TaskState.READY or task.deadline is not None:
        _fill_worker_view(pb, task, has_content=False)  # the rare shapes: field by field
        set_time(pb.updated_at, task.updated_at)
        pb.unique_key = task.unique_key
        if task.concurrency_key:
            pb.concurrency_key = task.concurrency_key
        return
    key = (
        task.queue,
        task.kind,
        task.content_type,
        task.priority,
        task.max_attempts,
        task.unique_key,
        task.run_at,
        task.created_at,
        task.updated_at,
        task.lease_duration,
    )
    _ENQUEUED_SHARED.merge_into(pb, key, task)
    pb.id = task.id
    pb.sequence = task.sequence
    if task.concurrency_key:
        pb.concurrency_key = task.concurrency_key


def fill_leased_task(pb: task_pb2.Task, task: Task) -> None:
    """Fill a (fresh, e.g. `response.tasks.add()`) message with what a handler needs.

    The broker-side policy fields (retry policy, uniqueness, retention, result)
    are left out: this runs once per leased task on the hottest path, and
    GetTask shows them. Filling a message in place avoids copying it into the
    response afterwards (a large share of the per-task cost).
    """
    if task.leased_at is None or task.lease_expires_at is None or task.deadline is not None:
        _fill_worker_view(pb, task)
    else:
        _fill_scalars(pb, task)
        set_time(pb.run_at, task.run_at)
        set_time(pb.created_at, task.created_at)
        key = (task.leased_at, task.lease_expires_at, task.lease_duration)
        _LEASED_SHARED.merge_into(pb, key, task)
        _fill_last_error(pb, task)
    pb.lease_token = task.lease_token


def _fill_worker_view(pb: task_pb2.Task, task: Task, has_content: bool = True) -> None:
    _fill_scalars(pb, task, has_content)
    set_time(pb.run_at, task.run_at)
    set_time(pb.created_at, task.created_at)
    set_duration(pb.lease_duration, task.lease_duration)
    if task.deadline is not None:
        set_time(pb.deadline, task.deadline)
    if task.leased_at is not None:
        set_time(pb.leased_at, task.leased_at)
    if task.lease_expires_at is not None:
        set_time(pb.lease_expires_at, task.lease_expires_at)
    if has_content:
        _fill_last_error(pb, task)


def _fill_scalars(pb: task_pb2.Task, task: Task, has_content: bool = True) -> None:
    pb.id = task.id
    pb.queue = task.queue
    pb.kind = task.kind
    if has_content:
        pb.payload = task.payload
        if task.headers:
            pb.headers.update(task.headers)
    pb.content_type = task.content_type
    pb.priority = task.priority
    pb.max_attempts = task.max_attempts
    pb.state = task.state.value  # type: ignore[assignment]
    pb.attempt = task.attempt
    pb.sequence = task.sequence
    pb.worker_id = task.worker_id
    pb.cancel_requested = task.cancel_requested
    if task.concurrency_key:
        pb.concurrency_key = task.concurrency_key


def _fill_last_error(pb: task_pb2.Task, task: Task) -> None:
    if task.last_error is not None:
        err = task.last_error
        pb.last_error.type = err.type
        pb.last_error.message = err.message
        pb.last_error.details = err.details
        pb.last_error.attempt = err.attempt
        set_time(pb.last_error.failed_at, err.failed_at)
