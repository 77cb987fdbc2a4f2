"""QueueService's protobuf <-> model code: filters, states, page tokens, queues, workers."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from conveyor.v1 import queue_service_pb2 as pb2
from conveyor_server.core.errors import InvalidArgument
from conveyor_server.core.flow import LIMIT_FIELDS
from conveyor_server.core.model import TaskState
from conveyor_server.core.queues import QueueUpdate, TaskFilter
from conveyor_server.core.validation import quote
from conveyor_server.rpc.codec import get_time, set_duration, set_time
from conveyor_server.service.queue_ops import QueueView, WorkerView

_STATES = {int(state): state for state in TaskState}


def states_from_pb(values: Iterable[int], field: str) -> frozenset[TaskState]:
    states = set()
    for index, value in enumerate(values):
        state = _STATES.get(value)
        if state is None:
            raise InvalidArgument(f"{field}[{index}]: {value} is not a task state")
        states.add(state)
    return frozenset(states)


def filter_from_pb(pb: pb2.TaskFilter) -> TaskFilter:
    return TaskFilter(
        queue=pb.queue,
        states=states_from_pb(pb.states, "filter.states"),
        kind=pb.kind,
        created_after=get_time(pb.created_after) if pb.HasField("created_after") else None,
        created_before=get_time(pb.created_before) if pb.HasField("created_before") else None,
    )


def is_newest_first(order: int) -> bool:
    if order not in pb2.TaskOrder.values():
        raise InvalidArgument(f"order: {order} is not a TaskOrder")
    return order == pb2.TASK_ORDER_NEWEST_FIRST


def page_token(after: str, newest_first: bool) -> str:
    """An opaque token: the order and the last task id read."""
    if not after:
        return ""
    text = ("n:" if newest_first else "o:") + after
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def after_from_token(token: str, newest_first: bool) -> str:
    if not token:
        return ""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("page_token: not a token from ListTasks") from None
    order, sep, after = text.partition(":")
    if not sep or order not in ("n", "o") or not after:
        raise InvalidArgument("page_token: not a token from ListTasks")
    if (order == "n") != newest_first:
        raise InvalidArgument("page_token: it continues a listing in the other order")
    return after


def fill_queue(out: pb2.Queue, view: QueueView) -> None:
    info = view.info
    out.name = info.name
    out.paused = info.is_paused
    out.workers = view.workers
    for state in sorted(info.counts):
        if info.counts[state]:
            out.counts.add(state=int(state), count=info.counts[state])  # type: ignore[arg-type]
    if info.oldest_ready_at is not None:
        set_time(out.oldest_ready_at, info.oldest_ready_at)
        set_duration(out.oldest_ready_age, max(view.now - info.oldest_ready_at, 0.0))
    limits = info.limits
    if limits.is_limited or limits.burst:
        out.limits.rate = limits.rate
        out.limits.burst = limits.burst
        out.limits.concurrency = limits.concurrency
        out.limits.key_concurrency = limits.key_concurrency


def update_from_pb(request: pb2.UpdateQueueRequest) -> QueueUpdate:
    """The change an UpdateQueue asks for. Empty mask: `limits` whole if present, `paused`
    if present; else exactly the named paths (an unknown one is INVALID_ARGUMENT)."""
    paths = list(request.update_mask.paths)
    values = {name: getattr(request.limits, name) for name in LIMIT_FIELDS}
    if not paths:
        limits = values if request.HasField("limits") else {}
        paused = request.paused if request.HasField("paused") else None
        return QueueUpdate(limits, paused)
    limits = {}
    paused = None
    for index, path in enumerate(paths):
        if path == "limits":
            limits.update(values)
        elif path.startswith("limits.") and path[len("limits.") :] in LIMIT_FIELDS:
            name = path[len("limits.") :]
            limits[name] = values[name]
        elif path == "paused":
            paused = request.paused
        else:
            raise InvalidArgument(
                f"update_mask.paths[{index}]: {quote(path)} is not one of limits, "
                + ", ".join(f"limits.{name}" for name in LIMIT_FIELDS)
                + ", paused"
            )
    return QueueUpdate(limits, paused)


def fill_worker(out: pb2.Worker, view: WorkerView) -> None:
    info = view.info
    out.id = info.id
    out.host = info.host
    out.queues.extend(view.queues)
    out.tasks_in_flight = view.tasks_in_flight
    out.streams = info.streams
    set_time(out.last_seen_at, info.last_seen_at)
    if info.connected_at is not None:
        set_time(out.connected_at, info.connected_at)
