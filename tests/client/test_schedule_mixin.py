"""Schedule methods of Client / AsyncClient against a real broker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from conveyor._aio import AsyncClient
from conveyor._client import Client
from conveyor._schedules import MisfirePolicy
from conveyor.errors import AlreadyExists, InvalidArgument, NotFound

ScheduleClient = Client
AsyncScheduleClient = AsyncClient


def test_sync_mixin_round_trip(shared_broker):
    name = f"c-{uuid.uuid4().hex[:8]}"
    with ScheduleClient(shared_broker.address) as client:
        created = client.create_schedule(
            name, "report", {"day": 1}, cron="0 3 * * *", timezone="Europe/Berlin", misfire="all"
        )
        assert created.payload == {"day": 1}
        assert created.misfire is MisfirePolicy.ALL
        assert created.next_fire_time is not None and created.source == "api"
        with pytest.raises(AlreadyExists):
            client.create_schedule(name, "report", cron="0 3 * * *")
        with pytest.raises(InvalidArgument):
            client.create_schedule(f"{name}-x", "report", cron="99 * * * *")
        updated = client.update_schedule(name, payload={"day": 2}, jitter=timedelta(seconds=5))
        assert updated.payload == {"day": 2}
        assert updated.jitter == timedelta(seconds=5)
        assert updated.cron == "0 3 * * *" and updated.kind == "report"
        assert client.pause_schedule(name).paused
        task = client.trigger_schedule(name)
        assert task.id.startswith(f"schedule:{name}:trigger:")
        assert client.get_schedule(name).last_task_id == task.id
        assert name in [s.name for s in client.list_schedules(source="api")]
        client.delete_schedule(name)
        with pytest.raises(NotFound):
            client.get_schedule(name)


def test_async_mixin_round_trip(shared_broker):
    name = f"c-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        async with AsyncScheduleClient(shared_broker.address) as client:
            created = await client.create_schedule(name, "job", every=timedelta(minutes=5))
            assert created.every == timedelta(minutes=5)
            resumed = await client.resume_schedule(name)
            assert not resumed.paused
            await client.delete_schedule(name)
            with pytest.raises(NotFound):
                await client.get_schedule(name)

    asyncio.run(scenario())
