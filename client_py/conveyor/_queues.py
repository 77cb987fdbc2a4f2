"""Queue administration (QueueService): operations written once for Client and AsyncClient.

Like the schedule operations (_schedules.py), each method is a generator that yields its
RPC (see _operation.py); Client runs it blocking and AsyncClient awaits it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from conveyor._base import ClientBase
from conveyor._convert import _STATES, _time, to_timestamp
from conveyor._model import Seconds, Task, TaskState
from conveyor._operation import Call, Op, operation
from conveyor.errors import InvalidArgument
from conveyor.v1 import queue_service_pb2 as pb2

__all__ = ["QueueInfo", "QueueLimits", "QueueOperations", "TaskPage", "WorkerInfo"]

_STATE_PB = {state: number for number, state in _STATES.items()}


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A queue's flow limits (see docs/flow-control.md); 0 means no limit.

    rate: tasks leased per second across the cluster; burst: the bucket size (0:
    max(1, ceil(rate))); concurrency: the most tasks LEASED at once from the queue;
    key_concurrency: the most LEASED at once per concurrency_key.
    """

    rate: float = 0.0
    burst: int = 0
    concurrency: int = 0
    key_concurrency: int = 0


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue as the broker sees it now. `counts` holds only states with tasks."""

    name: str
    counts: dict[TaskState, int]
    paused: bool
    oldest_ready_at: datetime | None
    oldest_ready_age: timedelta | None
    workers: int
    limits: QueueLimits = QueueLimits()

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker the broker process has seen (in its memory: a restart forgets them)."""

    id: str
    host: str
    queues: list[str]
    tasks_in_flight: int
    connected_at: datetime | None
    last_seen_at: datetime | None
    streams: int


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of list_tasks (payloads and result data left out); pass next_page_token
    back for the next page; it is "" after the last one."""

    tasks: list[Task]
    next_page_token: str


def _queue(pb: pb2.Queue) -> QueueInfo:
    return QueueInfo(
        name=pb.name,
        counts={_STATES[c.state]: c.count for c in pb.counts},
        paused=pb.paused,
        oldest_ready_at=_time(pb, "oldest_ready_at"),
        oldest_ready_age=(
            pb.oldest_ready_age.ToTimedelta() if pb.HasField("oldest_ready_age") else None
        ),
        workers=pb.workers,
        limits=QueueLimits(
            rate=pb.limits.rate,
            burst=pb.limits.burst,
            concurrency=pb.limits.concurrency,
            key_concurrency=pb.limits.key_concurrency,
        ),
    )


def _update_request(
    name: str, paused: bool | None, limits: dict[str, Any]
) -> pb2.UpdateQueueRequest:
    """An UpdateQueue request whose update_mask names exactly the fields given."""
    request = pb2.UpdateQueueRequest(name=name)
    for field, value in limits.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgument(f"{field}: give a number, not {type(value).__name__}")
        if field != "rate" and (not isinstance(value, int) or not 0 <= value < 2**32):
            raise InvalidArgument(f"{field}: give a whole number in [0, 2**32)")
        setattr(request.limits, field, value)
        request.update_mask.paths.append(f"limits.{field}")
    if paused is not None:
        request.paused = bool(paused)
        request.update_mask.paths.append("paused")
    return request


def _worker(pb: pb2.Worker) -> WorkerInfo:
    return WorkerInfo(
        id=pb.id,
        host=pb.host,
        queues=list(pb.queues),
        tasks_in_flight=pb.tasks_in_flight,
        connected_at=_time(pb, "connected_at"),
        last_seen_at=_time(pb, "last_seen_at"),
        streams=pb.streams,
    )


def _states(states: Sequence[TaskState | str] | TaskState | str | None) -> list[int]:
    if states is None:
        return []
    if isinstance(states, str):
        states = [states]
    try:
        return [_STATE_PB[TaskState(str(s).upper())] for s in states]
    except ValueError as exc:
        raise InvalidArgument(f"states: {exc}") from None


def task_filter(
    queue: str | None = None,
    states: Sequence[TaskState | str] | TaskState | str | None = None,
    kind: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> pb2.TaskFilter:
    out = pb2.TaskFilter(queue=queue or "", states=_states(states), kind=kind or "")  # type: ignore[arg-type]
    if created_after is not None:
        out.created_after.CopyFrom(to_timestamp(created_after, "created_after"))
    if created_before is not None:
        out.created_before.CopyFrom(to_timestamp(created_before, "created_before"))
    return out


def _list_request(
    page_size: int, page_token: str, newest_first: bool, where: dict[str, Any]
) -> pb2.ListTasksRequest:
    order = pb2.TASK_ORDER_NEWEST_FIRST if newest_first else pb2.TASK_ORDER_OLDEST_FIRST
    return pb2.ListTasksRequest(
        filter=task_filter(**where), page_size=page_size, page_token=page_token, order=order
    )


def _retry_request(
    task_ids: Sequence[str] | None, limit: int, where: dict[str, Any]
) -> pb2.RetryTasksRequest:
    if task_ids is not None and isinstance(task_ids, str):
        raise InvalidArgument("task_ids: give a list of ids, not one string")
    if task_ids:
        if any(value is not None for value in where.values()):
            raise InvalidArgument("retry_tasks: give task ids or filter fields, not both")
        return pb2.RetryTasksRequest(task_ids=list(task_ids))
    return pb2.RetryTasksRequest(filter=task_filter(**where), limit=limit)


class QueueOperations(ClientBase):
    """QueueService methods, shared by Client and AsyncClient."""

    def _admin(self, method: str, request: Any, timeout: Seconds | None) -> Call:
        return Call(getattr(self._queue_stub, method), request, self._timeout(timeout))

    @operation
    def list_queues(self, *, timeout: Seconds | None = None) -> Op[list[QueueInfo]]:
        """Every queue (holding tasks, paused, or leased from), in name order."""
        response = yield self._admin("ListQueues", pb2.ListQueuesRequest(), timeout)
        return [_queue(q) for q in response.queues]

    @operation
    def get_queue(self, name: str, *, timeout: Seconds | None = None) -> Op[QueueInfo]:
        """One queue. Raises: NotFound (no tasks, not paused, no worker), InvalidArgument."""
        response = yield self._admin("GetQueue", pb2.GetQueueRequest(name=name), timeout)
        return _queue(response.queue)

    @operation
    def pause_queue(self, name: str, *, timeout: Seconds | None = None) -> Op[QueueInfo]:
        """Stop the queue from handing out tasks (kept across restarts); Enqueue still works.

        Raises:
            InvalidArgument: a malformed name.
        """
        response = yield self._admin("PauseQueue", pb2.PauseQueueRequest(name=name), timeout)
        return _queue(response.queue)

    @operation
    def resume_queue(self, name: str, *, timeout: Seconds | None = None) -> Op[QueueInfo]:
        """Hand out tasks again; parked workers wake. Raises: InvalidArgument."""
        response = yield self._admin("ResumeQueue", pb2.ResumeQueueRequest(name=name), timeout)
        return _queue(response.queue)

    @operation
    def update_queue(
        self,
        name: str,
        *,
        rate: float | None = None,
        burst: int | None = None,
        concurrency: int | None = None,
        key_concurrency: int | None = None,
        paused: bool | None = None,
        timeout: Seconds | None = None,
    ) -> Op[QueueInfo]:
        """Change the queue's stored limits and pause state; only the fields given change
        (0 removes a limit). Kept across restarts; see docs/flow-control.md.

        Raises:
            InvalidArgument: a malformed name, a negative or non-finite value.
        """
        limits = {
            "rate": rate,
            "burst": burst,
            "concurrency": concurrency,
            "key_concurrency": key_concurrency,
        }
        request = _update_request(name, paused, limits)
        response = yield self._admin("UpdateQueue", request, timeout)
        return _queue(response.queue)

    @operation
    def purge_queue(
        self,
        name: str,
        states: Sequence[TaskState | str] | TaskState | str,
        *,
        limit: int = 0,
        timeout: Seconds | None = None,
    ) -> Op[int]:
        """Delete the queue's tasks in `states` (never LEASED), at most `limit` (0: all);
        returns how many were deleted.

        Raises:
            InvalidArgument: no states, LEASED, a malformed name.
        """
        request = pb2.PurgeQueueRequest(name=name, states=_states(states), limit=limit)  # type: ignore[arg-type]
        response = yield self._admin("PurgeQueue", request, timeout)
        return int(response.purged_count)

    @operation
    def list_tasks(
        self,
        *,
        page_size: int = 100,
        page_token: str = "",
        newest_first: bool = False,
        timeout: Seconds | None = None,
        **where: Any,
    ) -> Op[TaskPage]:
        """One page of tasks matching queue, states, kind, created_after, created_before.

        A page may be short while more follow: continue while next_page_token is set.

        Raises:
            InvalidArgument: a malformed filter, page_size over 1000, a foreign token.
        """
        request = _list_request(page_size, page_token, newest_first, where)
        response = yield self._admin("ListTasks", request, timeout)
        return TaskPage([self._task(t) for t in response.tasks], response.next_page_token)

    @operation
    def retry_tasks(
        self,
        task_ids: Sequence[str] | None = None,
        *,
        limit: int = 0,
        timeout: Seconds | None = None,
        **where: Any,
    ) -> Op[int]:
        """Make DEAD, CANCELLED or EXPIRED tasks READY with attempts reset; returns the count.

        Name the tasks (all or none are retried) or filter them with queue, states (DEAD,
        CANCELLED, EXPIRED; default all three), kind, created_after, created_before.

        Raises:
            NotFound: an id names no task.
            FailedPrecondition: a named task is not DEAD, CANCELLED or EXPIRED.
            InvalidArgument: both or neither of ids and filter; another state.
        """
        request = _retry_request(task_ids, limit, where)
        response = yield self._admin("RetryTasks", request, timeout)
        return int(response.retried_count)

    @operation
    def delete_task(self, task_id: str, *, timeout: Seconds | None = None) -> Op[None]:
        """Remove a task and its result. Raises: NotFound, FailedPrecondition (LEASED)."""
        yield self._admin("DeleteTask", pb2.DeleteTaskRequest(task_id=task_id), timeout)
        return None

    @operation
    def list_workers(self, *, timeout: Seconds | None = None) -> Op[list[WorkerInfo]]:
        """Workers with an open stream or a Lease call in the last 5 minutes."""
        response = yield self._admin("ListWorkers", pb2.ListWorkersRequest(), timeout)
        return [_worker(w) for w in response.workers]
