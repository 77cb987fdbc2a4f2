"""ScheduleService servicer and its converters: convert, one scheduler call, convert back."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from conveyor.v1 import schedule_service_pb2 as pb2
from conveyor.v1 import schedule_service_pb2_grpc
from conveyor_server.core.errors import InvalidArgument
from conveyor_server.core.schedules.model import ScheduleSource
from conveyor_server.rpc.codec import task_to_pb
from conveyor_server.rpc.schedule_codec import schedule_from_pb, schedule_to_pb
from conveyor_server.service.scheduler import CronScheduler

_Ctx: TypeAlias = grpc.aio.ServicerContext

#: update_mask paths (top-level Schedule fields) -> model fields.
MASK_FIELDS = {
    "cron": "cron",
    "interval": "interval_seconds",
    "timezone": "timezone",
    "task": "template",
    "misfire_policy": "misfire_policy",
    "misfire_limit": "misfire_limit",
    "overlap_policy": "overlap_policy",
    "jitter": "jitter_seconds",
    "start_at": "start_at",
    "end_at": "end_at",
    "paused": "paused",
}


def mask_fields(request: pb2.UpdateScheduleRequest) -> tuple[str, ...] | None:
    """Model field names named by update_mask; None (all) when the mask is empty."""
    if not request.HasField("update_mask") or not request.update_mask.paths:
        return None
    fields = []
    for path in request.update_mask.paths:
        if path not in MASK_FIELDS:
            raise InvalidArgument(
                f"update_mask: {path!r} cannot be changed; use top-level fields among "
                + ", ".join(MASK_FIELDS)
            )
        fields.append(MASK_FIELDS[path])
    return tuple(fields)


def source_from_pb(value: int) -> ScheduleSource | None:
    if value == pb2.SCHEDULE_SOURCE_UNSPECIFIED:
        return None
    try:
        return ScheduleSource(value)
    except ValueError:
        raise InvalidArgument(f"source: unknown value {value}") from None


class ScheduleServicer(schedule_service_pb2_grpc.ScheduleServiceServicer):
    def __init__(self, scheduler: CronScheduler) -> None:
        self._scheduler = scheduler

    async def CreateSchedule(
        self, request: pb2.CreateScheduleRequest, context: _Ctx
    ) -> pb2.CreateScheduleResponse:
        schedule, created = await self._scheduler.create(
            schedule_from_pb(request.schedule), request.upsert
        )
        return pb2.CreateScheduleResponse(schedule=schedule_to_pb(schedule), created=created)

    async def GetSchedule(
        self, request: pb2.GetScheduleRequest, context: _Ctx
    ) -> pb2.GetScheduleResponse:
        return pb2.GetScheduleResponse(schedule=schedule_to_pb(self._scheduler.get(request.name)))

    async def ListSchedules(
        self, request: pb2.ListSchedulesRequest, context: _Ctx
    ) -> pb2.ListSchedulesResponse:
        schedules = self._scheduler.list(source_from_pb(request.source))
        return pb2.ListSchedulesResponse(schedules=[schedule_to_pb(s) for s in schedules])

    async def UpdateSchedule(
        self, request: pb2.UpdateScheduleRequest, context: _Ctx
    ) -> pb2.UpdateScheduleResponse:
        schedule = await self._scheduler.update(
            schedule_from_pb(request.schedule), mask_fields(request)
        )
        return pb2.UpdateScheduleResponse(schedule=schedule_to_pb(schedule))

    async def DeleteSchedule(
        self, request: pb2.DeleteScheduleRequest, context: _Ctx
    ) -> pb2.DeleteScheduleResponse:
        await self._scheduler.delete(request.name)
        return pb2.DeleteScheduleResponse()

    async def PauseSchedule(
        self, request: pb2.PauseScheduleRequest, context: _Ctx
    ) -> pb2.PauseScheduleResponse:
        schedule = await self._scheduler.pause(request.name)
        return pb2.PauseScheduleResponse(schedule=schedule_to_pb(schedule))

    async def ResumeSchedule(
        self, request: pb2.ResumeScheduleRequest, context: _Ctx
    ) -> pb2.ResumeScheduleResponse:
        schedule = await self._scheduler.resume(request.name)
        return pb2.ResumeScheduleResponse(schedule=schedule_to_pb(schedule))

    async def TriggerSchedule(
        self, request: pb2.TriggerScheduleRequest, context: _Ctx
    ) -> pb2.TriggerScheduleResponse:
        outcome = await self._scheduler.trigger(request.name)
        return pb2.TriggerScheduleResponse(
            task=task_to_pb(outcome.task), schedule=schedule_to_pb(outcome.schedule)
        )
