"""A stream that ends while tasks are being leased for it leaves none stranded (in-process)."""

from __future__ import annotations

import asyncio

from conveyor.v1 import worker_service_pb2 as ws
from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.model import TaskSpec, TaskState
from conveyor_server.engine import Engine
from conveyor_server.rpc.work_stream import WorkStream
from conveyor_server.store.memory import MemoryStore


def test_tasks_leased_after_the_worker_half_closed_are_released():
    async def scenario() -> tuple[set[str], dict[str, TaskState]]:
        engine = Engine(Broker(MemoryStore(), FakeClock()))
        ids = [
            engine.broker.enqueue(TaskSpec(kind="k", queue="q")).result().task.id for _ in range(5)
        ]
        opening = ws.StreamWorkRequest(open=ws.StreamWorkOpen(queues=["q"]), credits=5)

        async def no_more_requests():  # the worker half-closes while the first lease commits
            for _ in range(3):
                await asyncio.sleep(0)
            return
            yield

        stream = WorkStream(engine, opening)
        delivered = {
            t.id
            async for response in stream.run(opening, no_more_requests())
            for t in response.tasks
        }
        await asyncio.sleep(0.05)  # let the background release commit
        return delivered, {i: engine.get_task(i).state for i in ids}

    delivered, states = asyncio.run(scenario())
    for task_id, state in states.items():
        expected = TaskState.LEASED if task_id in delivered else TaskState.READY
        assert state is expected, (task_id, state, delivered)
