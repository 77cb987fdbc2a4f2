"""StreamWork sessions driven in-process: stranded tasks on an early end, held outcomes."""

from __future__ import annotations

import asyncio

from conveyor.v1 import worker_service_pb2 as ws
from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.errors import ShuttingDown
from conveyor_server.core.model import TaskSpec, TaskState
from conveyor_server.core.settings import BrokerSettings
from conveyor_server.rpc.work_stream import WorkStream
from conveyor_server.service.engine import Engine
from conveyor_server.store.memory import MemoryStore
from tests.rpc.helpers import GatedStore


def test_tasks_leased_after_the_worker_half_closed_are_released():
    async def scenario() -> tuple[set[str], dict[str, TaskState]]:
        store = GatedStore()
        engine = Engine(Broker(store, FakeClock()))
        ids = [
            (await engine.enqueue(TaskSpec(kind="k", queue="q"), False)).task.id for _ in range(5)
        ]
        opening = ws.StreamWorkRequest(open=ws.StreamWorkOpen(queues=["q"]), credits=5)
        store.is_gated = True  # the stream's first lease is written but not yet reported

        async def half_close_then_report():
            for _ in range(10):
                await asyncio.sleep(0)
            assert store._held, "the stream's lease write should be waiting at the gate"
            asyncio.get_running_loop().call_later(0.01, store.open_gate)
            return
            yield

        stream = WorkStream(engine, opening)
        delivered = {
            t.id async for response in stream.run(half_close_then_report()) for t in response.tasks
        }
        await asyncio.sleep(0.05)  # the lease is reported; its tasks are released
        return delivered, {i: engine.get_task(i).state for i in ids}

    delivered, states = asyncio.run(scenario())
    assert delivered == set()
    assert states == dict.fromkeys(states, TaskState.READY)


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
        responses = stream.run(worker_requests())
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


def test_an_ack_sent_just_before_the_half_close_is_committed_and_answered():
    async def scenario() -> tuple[list[ws.StreamWorkResponse], TaskState]:
        engine = Engine(Broker(MemoryStore(), FakeClock()))
        await engine.enqueue(TaskSpec(kind="k", queue="q"), False)
        opening = ws.StreamWorkRequest(open=ws.StreamWorkOpen(queues=["q"]), credits=1)
        first_tasks: asyncio.Queue[ws.StreamWorkResponse] = asyncio.Queue()

        async def ack_then_half_close():
            first = await first_tasks.get()
            (task,) = first.tasks
            ack = ws.AckItem(lease=ws.LeaseRef(task_id=task.id, lease_token=task.lease_token))
            yield ws.StreamWorkRequest(acks=[ack])  # the last request: no turn in between

        stream = WorkStream(engine, opening)
        responses = []
        async for response in stream.run(ack_then_half_close()):
            responses.append(response)
            if response.tasks:
                first_tasks.put_nowait(response)
        task_id = responses[0].tasks[0].id
        return responses, engine.get_task(task_id).state

    responses, state = asyncio.run(scenario())
    assert state is TaskState.SUCCEEDED
    outcomes = [o for r in responses for o in r.ack_outcomes]
    assert [(o.task_id, o.code) for o in outcomes] == [(responses[0].tasks[0].id, 0)], responses


def _stream_session(engine: Engine, credits: int):
    """A WorkStream with a request queue: put requests in, read responses (None ends input)."""
    opening = ws.StreamWorkRequest(open=ws.StreamWorkOpen(queues=["q"]), credits=credits)
    requests: asyncio.Queue[ws.StreamWorkRequest | None] = asyncio.Queue()

    async def worker_requests():
        while (request := await requests.get()) is not None:
            yield request

    return requests, WorkStream(engine, opening).run(worker_requests())


def _ack(task) -> ws.AckItem:
    return ws.AckItem(lease=ws.LeaseRef(task_id=task.id, lease_token=task.lease_token))


def test_more_acks_in_one_message_than_a_call_takes_are_all_applied():
    async def scenario() -> tuple[list[int], list[TaskState]]:
        settings = BrokerSettings(max_batch=3)
        engine = Engine(Broker(MemoryStore(), FakeClock(), settings))
        for _ in range(7):
            await engine.enqueue(TaskSpec(kind="k", queue="q"), False)
        requests, responses = _stream_session(engine, credits=7)
        tasks = []
        while len(tasks) < 7:
            tasks += (await asyncio.wait_for(anext(responses), 5)).tasks
        requests.put_nowait(ws.StreamWorkRequest(acks=[_ack(t) for t in tasks]))
        requests.put_nowait(None)
        codes = [o.code for r in [r async for r in responses] for o in r.ack_outcomes]
        return codes, [engine.get_task(t.id).state for t in tasks]

    codes, states = asyncio.run(scenario())
    assert codes == [0] * 7  # not INVALID_ARGUMENT for the message: 3 + 3 + 1 per write
    assert states == [TaskState.SUCCEEDED] * 7


def test_shutdown_ends_a_waiting_stream_unavailable_after_its_held_outcomes():
    async def scenario() -> tuple[list[ws.StreamWorkResponse], BaseException | None, str]:
        engine = Engine(Broker(MemoryStore(), FakeClock()))
        await engine.enqueue(TaskSpec(kind="k", queue="q"), False)
        requests, responses = _stream_session(engine, credits=2)
        (task,) = (await asyncio.wait_for(anext(responses), 5)).tasks
        requests.put_nowait(ws.StreamWorkRequest(acks=[_ack(task)]))
        for _ in range(10):  # the ack commits; its outcome is held for a message of tasks
            await asyncio.sleep(0)
        await engine.stop()
        received, ended_with = [], None
        try:
            async for response in responses:
                received.append(response)
        except ShuttingDown as exc:
            ended_with = exc
        return received, ended_with, task.id

    received, ended_with, task_id = asyncio.run(scenario())
    assert isinstance(ended_with, ShuttingDown)  # guarded() maps it to UNAVAILABLE
    assert [(o.task_id, o.code) for r in received for o in r.ack_outcomes] == [(task_id, 0)]


def test_no_task_is_pushed_after_the_worker_half_closed():
    async def scenario() -> tuple[int, list[TaskState]]:
        engine = Engine(Broker(MemoryStore(), FakeClock()))
        ids = [
            (await engine.enqueue(TaskSpec(kind="k", queue="q"), False)).task.id for _ in range(3)
        ]
        requests, responses = _stream_session(engine, credits=1)
        (first,) = (await asyncio.wait_for(anext(responses), 5)).tasks
        # The last request acks and grants, as a worker's final turn can; then it ends.
        requests.put_nowait(ws.StreamWorkRequest(acks=[_ack(first)], credits=2))
        requests.put_nowait(None)
        pushed = sum([len(r.tasks) async for r in responses])
        await asyncio.sleep(0.01)  # anything leased on the way out is given back
        return pushed, [engine.get_task(i).state for i in ids if i != first.id]

    pushed, others = asyncio.run(scenario())
    assert pushed == 0
    assert others == [TaskState.READY, TaskState.READY]
