"""Schedule (cron) methods of Client and AsyncClient, written once as operations."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import field_mask_pb2

from conveyor._base import ClientBase
from conveyor._convert import _time, duration, to_timestamp
from conveyor._model import Task
from conveyor._operation import Call, Op, operation
from conveyor.errors import InvalidArgument
from conveyor.serializer import encode
from conveyor.v1 import schedule_service_pb2 as pb2

__all__ = ["MisfirePolicy", "OverlapPolicy", "Schedule", "ScheduleOperations"]

Seconds = float | int | timedelta


class MisfirePolicy(enum.StrEnum):
    """Ticks missed while the broker was down: fire none, the latest one, or each (capped)."""

    SKIP = "skip"
    ONCE = "once"
    ALL = "all"


class OverlapPolicy(enum.StrEnum):
    """Whether a tick fires while the previous task is unfinished."""

    ALLOW = "allow"
    SKIP_IF_RUNNING = "skip_if_running"


_MISFIRE_PB = {
    MisfirePolicy.SKIP: pb2.MISFIRE_POLICY_SKIP,
    MisfirePolicy.ONCE: pb2.MISFIRE_POLICY_ONCE,
    MisfirePolicy.ALL: pb2.MISFIRE_POLICY_ALL,
}
_OVERLAP_PB = {
    OverlapPolicy.ALLOW: pb2.OVERLAP_POLICY_ALLOW,
    OverlapPolicy.SKIP_IF_RUNNING: pb2.OVERLAP_POLICY_SKIP_IF_RUNNING,
}
_SOURCES = {"api": pb2.SCHEDULE_SOURCE_API, "file": pb2.SCHEDULE_SOURCE_FILE}
#: Keyword arguments of update_schedule that live in the task template.
_TASK_FIELDS = ("kind", "payload", "queue", "priority", "max_attempts", "deadline", "headers")
_MASK = {
    "cron": "cron",
    "every": "interval",
    "timezone": "timezone",
    "misfire": "misfire_policy",
    "misfire_limit": "misfire_limit",
    "overlap": "overlap_policy",
    "jitter": "jitter",
    "start_at": "start_at",
    "end_at": "end_at",
    "paused": "paused",
}


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as the broker keeps it. Times are timezone-aware UTC datetimes."""

    name: str
    cron: str | None
    every: timedelta | None
    timezone: str
    kind: str
    queue: str
    payload: Any
    misfire: MisfirePolicy
    misfire_limit: int
    overlap: OverlapPolicy
    jitter: timedelta | None
    start_at: datetime | None
    end_at: datetime | None
    paused: bool
    source: str
    next_fire_time: datetime | None
    last_fire_time: datetime | None
    last_task_id: str


def schedule_message(client: ClientBase, name: str, fields: dict[str, Any]) -> pb2.Schedule:
    """A Schedule message from keyword arguments (those not given stay unset)."""
    out = pb2.Schedule(name=name)
    if fields.get("cron") is not None:
        out.cron = fields["cron"]
    if fields.get("every") is not None:
        out.interval.CopyFrom(duration(fields["every"]))
    if fields.get("timezone") is not None:
        out.timezone = fields["timezone"]
    if fields.get("misfire") is not None:
        out.misfire_policy = _MISFIRE_PB[MisfirePolicy(fields["misfire"])]
    if fields.get("misfire_limit") is not None:
        out.misfire_limit = fields["misfire_limit"]
    if fields.get("overlap") is not None:
        out.overlap_policy = _OVERLAP_PB[OverlapPolicy(fields["overlap"])]
    if fields.get("jitter") is not None:
        out.jitter.CopyFrom(duration(fields["jitter"]))
    for key in ("start_at", "end_at"):
        if fields.get(key) is not None:
            getattr(out, key).CopyFrom(to_timestamp(fields[key], key))
    out.paused = bool(fields.get("paused", False))
    task = out.task
    task.kind = fields.get("kind") or ""
    task.queue = fields.get("queue") or ""
    if "payload" in fields:
        task.payload, task.content_type = encode(client.serializer, fields["payload"])
    task.headers.update(fields.get("headers") or {})
    task.priority = fields.get("priority") or 0
    task.max_attempts = fields.get("max_attempts") or 0
    if fields.get("deadline") is not None:
        task.deadline.CopyFrom(duration(fields["deadline"]))
    return out


def schedule_from_pb(client: ClientBase, pb: pb2.Schedule) -> Schedule:
    misfire = {v: k for k, v in _MISFIRE_PB.items()}.get(pb.misfire_policy, MisfirePolicy.ONCE)
    overlap = {v: k for k, v in _OVERLAP_PB.items()}.get(pb.overlap_policy, OverlapPolicy.ALLOW)
    source = {v: k for k, v in _SOURCES.items()}.get(pb.source, "api")
    return Schedule(
        name=pb.name,
        cron=pb.cron or None,
        every=pb.interval.ToTimedelta() if pb.HasField("interval") else None,
        timezone=pb.timezone or "UTC",
        kind=pb.task.kind,
        queue=pb.task.queue,
        payload=client.serializer.loads(pb.task.payload, pb.task.content_type),
        misfire=misfire,
        misfire_limit=pb.misfire_limit,
        overlap=overlap,
        jitter=pb.jitter.ToTimedelta() if pb.HasField("jitter") else None,
        start_at=_time(pb, "start_at"),
        end_at=_time(pb, "end_at"),
        paused=pb.paused,
        source=source,
        next_fire_time=_time(pb, "next_fire_time"),
        last_fire_time=_time(pb, "last_fire_time"),
        last_task_id=pb.last_task_id,
    )


def _create_request(
    client: ClientBase, name: str, kind: str, payload: Any, upsert: bool, options: dict[str, Any]
) -> pb2.CreateScheduleRequest:
    fields = {**options, "kind": kind, "payload": payload}
    return pb2.CreateScheduleRequest(schedule=schedule_message(client, name, fields), upsert=upsert)


def _update_request(
    client: ClientBase, current: pb2.Schedule | None, name: str, changes: dict[str, Any]
) -> pb2.UpdateScheduleRequest:
    unknown = set(changes) - set(_MASK) - set(_TASK_FIELDS)
    if unknown:
        raise InvalidArgument(f"update_schedule: unknown fields {sorted(unknown)}")
    message = schedule_message(client, name, changes)
    paths = [_MASK[key] for key in changes if key in _MASK]
    if current is not None:  # template fields change inside the current template
        task = pb2.TaskTemplate()
        task.CopyFrom(current.task)
        given = schedule_message(client, name, changes).task
        for key in _TASK_FIELDS:
            if key not in changes:
                continue
            if key == "payload":
                task.payload, task.content_type = given.payload, given.content_type
            elif key == "headers":
                task.headers.clear()
                task.headers.update(given.headers)
            elif key == "deadline":
                task.ClearField("deadline")
                if given.HasField("deadline"):
                    task.deadline.CopyFrom(given.deadline)
            else:
                setattr(task, key, getattr(given, key))
        message.task.CopyFrom(task)
        paths.append("task")
    return pb2.UpdateScheduleRequest(
        schedule=message, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )


def _needs_current(changes: dict[str, Any]) -> bool:
    return any(key in changes for key in _TASK_FIELDS)


class ScheduleOperations(ClientBase):
    """The schedule methods; Client's are blocking, AsyncClient's awaitable."""

    @operation
    def create_schedule(
        self,
        name: str,
        kind: str,
        payload: Any = None,
        *,
        cron: str | None = None,
        every: Seconds | None = None,
        upsert: bool = False,
        timeout: Seconds | None = None,
        **options: Any,
    ) -> Op[Schedule]:
        """Create a schedule that enqueues `kind(payload)` at each tick.

        Give exactly one of `cron` ("*/5 * * * *", 6 fields with seconds, or @hourly) and
        `every` (an interval). Options: timezone (IANA, default UTC), queue, priority,
        max_attempts, deadline (relative, per task), headers, misfire ("skip" | "once" |
        "all"), misfire_limit, overlap ("allow" | "skip_if_running"), jitter, start_at,
        end_at, paused.

        Raises:
            InvalidArgument: a bad expression, time zone, policy or task field.
            AlreadyExists: the name is taken and upsert is False.
            FailedPrecondition: upsert onto a schedule the broker's schedules file owns.
        """
        request = _create_request(
            self, name, kind, payload, upsert, {**options, "cron": cron, "every": every}
        )
        response = yield self._schedule_call("CreateSchedule", request, timeout)
        return schedule_from_pb(self, response.schedule)

    @operation
    def get_schedule(self, name: str, *, timeout: Seconds | None = None) -> Op[Schedule]:
        """One schedule with its next and last fire times. Raises: NotFound, InvalidArgument."""
        return schedule_from_pb(self, (yield from self._get_pb(name, timeout)))

    @operation
    def list_schedules(
        self, *, source: str | None = None, timeout: Seconds | None = None
    ) -> Op[list[Schedule]]:
        """Every schedule in name order; `source` "api" or "file" filters."""
        request = pb2.ListSchedulesRequest(
            source=_SOURCES.get(source or "", pb2.SCHEDULE_SOURCE_UNSPECIFIED)
        )
        response = yield self._schedule_call("ListSchedules", request, timeout)
        return [schedule_from_pb(self, s) for s in response.schedules]

    @operation
    def update_schedule(
        self, name: str, *, timeout: Seconds | None = None, **changes: Any
    ) -> Op[Schedule]:
        """Change only the given fields (the keyword options of create_schedule, and kind,
        payload). A timing change (cron, every, timezone, start_at, end_at) restarts the
        series from now. To switch between cron and every, pass both (one as None).

        Raises:
            InvalidArgument, NotFound, FailedPrecondition (a file-managed schedule).
        """
        current = (yield from self._get_pb(name, timeout)) if _needs_current(changes) else None
        request = _update_request(self, current, name, changes)
        response = yield self._schedule_call("UpdateSchedule", request, timeout)
        return schedule_from_pb(self, response.schedule)

    @operation
    def delete_schedule(self, name: str, *, timeout: Seconds | None = None) -> Op[None]:
        """Delete a schedule; its tasks stay. Raises: NotFound, FailedPrecondition."""
        request = pb2.DeleteScheduleRequest(name=name)
        yield self._schedule_call("DeleteSchedule", request, timeout)

    @operation
    def pause_schedule(self, name: str, *, timeout: Seconds | None = None) -> Op[Schedule]:
        """Stop firing (ticks while paused are dropped). Raises: NotFound."""
        request = pb2.PauseScheduleRequest(name=name)
        response = yield self._schedule_call("PauseSchedule", request, timeout)
        return schedule_from_pb(self, response.schedule)

    @operation
    def resume_schedule(self, name: str, *, timeout: Seconds | None = None) -> Op[Schedule]:
        """Fire again from the first tick after now. Raises: NotFound."""
        request = pb2.ResumeScheduleRequest(name=name)
        response = yield self._schedule_call("ResumeSchedule", request, timeout)
        return schedule_from_pb(self, response.schedule)

    @operation
    def trigger_schedule(self, name: str, *, timeout: Seconds | None = None) -> Op[Task]:
        """Enqueue the schedule's task once, now; returns the Task. Raises: NotFound."""
        request = pb2.TriggerScheduleRequest(name=name)
        response = yield self._schedule_call("TriggerSchedule", request, timeout)
        return self._task(response.task)

    def _get_pb(self, name: str, timeout: Seconds | None) -> Op[pb2.Schedule]:
        request = pb2.GetScheduleRequest(name=name)
        response: pb2.GetScheduleResponse = yield self._schedule_call(
            "GetSchedule", request, timeout
        )
        return response.schedule

    def _schedule_call(self, method: str, request: Any, timeout: Seconds | None) -> Call:
        return Call(getattr(self._schedule_stub, method), request, self._timeout(timeout))
