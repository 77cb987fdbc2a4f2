"""The one mapping between the Schedule model and the conveyor.v1.Schedule protobuf.

Shared by the RPC layer (API messages) and the store (records are the same message).
Enum values outside the known ones are kept as plain ints so that validation, not
decoding, rejects them with a message naming the field.
"""

from __future__ import annotations

from conveyor.v1 import schedule_service_pb2 as pb2
from conveyor_server.core.schedules.model import (
    DEFAULT_MISFIRE_LIMIT,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    ScheduleSource,
    TaskTemplate,
)
from conveyor_server.rpc.codec import (
    get_duration,
    get_time,
    retry_policy_from_pb,
    retry_policy_to_pb,
    set_duration,
    set_time,
)


def _enum(kind: type, value: int, default: object) -> object:
    if value == 0:
        return default
    try:
        return kind(value)
    except ValueError:
        return value  # rejected by check_schedule with the field's name


def _optional_duration(message: object, name: str) -> float | None:
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    return get_duration(getattr(message, name))


def _optional_time(message: object, name: str) -> float | None:
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    return get_time(getattr(message, name))


def template_from_pb(pb: pb2.TaskTemplate) -> TaskTemplate:
    return TaskTemplate(
        kind=pb.kind,
        queue=pb.queue or "default",
        payload=pb.payload,
        content_type=pb.content_type,
        headers=dict(pb.headers),
        priority=pb.priority,
        max_attempts=pb.max_attempts or None,
        retry_policy=retry_policy_from_pb(pb.retry_policy) if pb.HasField("retry_policy") else None,
        deadline=_optional_duration(pb, "deadline"),
        lease_duration=_optional_duration(pb, "lease_duration"),
        result_retention=_optional_duration(pb, "result_retention"),
    )


def template_to_pb(template: TaskTemplate, out: pb2.TaskTemplate) -> None:
    out.queue = template.queue
    out.kind = template.kind
    out.payload = template.payload
    out.content_type = template.content_type
    out.headers.update(template.headers)
    out.priority = template.priority
    out.max_attempts = template.max_attempts or 0
    if template.retry_policy is not None:
        retry_policy_to_pb(template.retry_policy, out.retry_policy)
    for name in ("deadline", "lease_duration", "result_retention"):
        value = getattr(template, name)
        if value is not None:
            set_duration(getattr(out, name), value)


def schedule_from_pb(pb: pb2.Schedule) -> Schedule:
    """Decode a request's or a record's schedule (a record's state fields included)."""
    return Schedule(
        name=pb.name,
        template=template_from_pb(pb.task),
        cron=pb.cron or None,
        interval_seconds=_optional_duration(pb, "interval"),
        timezone=pb.timezone or "UTC",
        misfire_policy=_enum(MisfirePolicy, pb.misfire_policy, MisfirePolicy.ONCE),  # type: ignore[arg-type]
        misfire_limit=pb.misfire_limit or DEFAULT_MISFIRE_LIMIT,
        overlap_policy=_enum(OverlapPolicy, pb.overlap_policy, OverlapPolicy.ALLOW),  # type: ignore[arg-type]
        jitter_seconds=_optional_duration(pb, "jitter") or 0.0,
        start_at=_optional_time(pb, "start_at"),
        end_at=_optional_time(pb, "end_at"),
        paused=pb.paused,
        source=_enum(ScheduleSource, pb.source, ScheduleSource.API),  # type: ignore[arg-type]
        next_fire_time=_optional_time(pb, "next_fire_time"),
        last_fire_time=_optional_time(pb, "last_fire_time"),
        last_task_id=pb.last_task_id,
        created_at=_optional_time(pb, "created_at") or 0.0,
        updated_at=_optional_time(pb, "updated_at") or 0.0,
    )


def schedule_to_pb(schedule: Schedule) -> pb2.Schedule:
    pb = pb2.Schedule(
        name=schedule.name,
        cron=schedule.cron or "",
        timezone=schedule.timezone,
        misfire_policy=int(schedule.misfire_policy),  # type: ignore[arg-type]
        misfire_limit=schedule.misfire_limit,
        overlap_policy=int(schedule.overlap_policy),  # type: ignore[arg-type]
        paused=schedule.paused,
        source=int(schedule.source),  # type: ignore[arg-type]
        last_task_id=schedule.last_task_id,
    )
    template_to_pb(schedule.template, pb.task)
    if schedule.interval_seconds is not None:
        set_duration(pb.interval, schedule.interval_seconds)
    if schedule.jitter_seconds:
        set_duration(pb.jitter, schedule.jitter_seconds)
    for name in ("start_at", "end_at", "next_fire_time", "last_fire_time"):
        value = getattr(schedule, name)
        if value is not None:
            set_time(getattr(pb, name), value)
    set_time(pb.created_at, schedule.created_at)
    set_time(pb.updated_at, schedule.updated_at)
    return pb


def encode_schedule(schedule: Schedule) -> bytes:
    return schedule_to_pb(schedule).SerializeToString()


def decode_schedule(data: bytes) -> Schedule:
    return schedule_from_pb(pb2.Schedule.FromString(data))
