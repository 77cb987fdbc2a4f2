"""StreamWork sessions driven in-process: stranded tasks on an early end, held outcomes."""

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


def test_ack_outcomes_ride_on_the_next_message_of_tasks():
    async def scenario() -> list[ws.StreamWorkResponse]:
        engine = Engine(Broker(MemoryStore(), FakeClock()))
        await engine.enqueue(TaskSpec(kind="k", queue="q"), False)
        opening = ws.StreamWorkRequest(open=ws.StreamWorkOpen(queues=["q"]), credits=1)
        requests: asyncio.Queue[ws.StreamWorkRequest | None] = asyncio.Queue()

        async def worker_requests():
            while (request := await requests.get()) is not None:
                yield request

        stream = WorkStream(engine, opening)
        responses = stream.run(opening, worker_requests())
        first = await asyncio.wait_for(anext(responses), 5)
        (task,) = first.tasks
        ack = ws.AckItem(lease=ws.LeaseRef(task_id=task.id, lease_token=task.lease_token))
        requests.put_nowait(ws.StreamWorkRequest(acks=[ack], credits=1))
        for _ in range(10):  # the ack commits; its outcome is held
            await asyncio.sleep(0)
        await engine.enqueue(TaskSpec(kind="k", queue="q"), False)
        second = await asyncio.wait_for(anext(responses), 5)
        requests.put_nowait(None)
        rest = [r async for r in responses]
        return [first, second, *rest]

    first, second, *rest = asyncio.run(scenario())
    assert [o.task_id for o in second.ack_outcomes] == [first.tasks[0].id]
    assert len(second.tasks) == 1 and second.tasks[0].id != first.tasks[0].id
    assert rest == []
