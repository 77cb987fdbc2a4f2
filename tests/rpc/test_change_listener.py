"""Two brokers on one store: a change one makes reaches the other's parked calls only
through the store's ChangeListener hook (core/store.py), which the engine implements."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.model import Ack, LeaseRef, QueueOrder, TaskResult, TaskSpec, TaskState
from conveyor_server.core.store import ChangeListener
from conveyor_server.service.engine import Engine
from conveyor_server.store.memory import MemoryStore


class _WatchedStore(MemoryStore):
    """A memory store shared by two engines that remembers who watches it."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[ChangeListener] = []

    def watch(self, listener: ChangeListener) -> None:
        self.listeners.append(listener)


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _pair() -> tuple[_WatchedStore, Engine, Engine]:
    store = _WatchedStore()
    clock = FakeClock()
    return store, Engine(Broker(store, clock)), Engine(Broker(store, clock))


def test_engine_start_registers_it_with_the_store():
    async def scenario() -> None:
        store, a, b = _pair()
        await a.start()
        await b.start()
        assert store.listeners == [a, b]
        await a.stop()
        await b.stop()

    asyncio.run(scenario())


def test_a_parked_lease_wakes_for_a_task_another_broker_enqueued():
    async def scenario() -> None:
        _, a, b = _pair()
        leasing: asyncio.Task[Any] = asyncio.ensure_future(
            b.lease(["q"], 10, None, "w", QueueOrder.STRICT, 30)
        )
        await _turns()
        task = (await a.enqueue(TaskSpec(kind="k", queue="q"), False)).task
        await _turns()
        assert not leasing.done(), "b cannot know of a's enqueue without the hook"
        b.tasks_ready(["q"])  # what a shared store's watch reports
        leased = await asyncio.wait_for(leasing, 2)
        assert [t.id for t in leased] == [task.id]

    asyncio.run(scenario())


def test_a_parked_result_wait_answers_when_another_broker_finishes_the_task():
    async def scenario() -> None:
        _, a, b = _pair()
        task = (await a.enqueue(TaskSpec(kind="k", queue="q"), False)).task
        waiting = asyncio.ensure_future(b.get_result(task.id, 30))
        await _turns()  # parked on b before a finishes the task
        (leased,) = await a.lease(["q"], 1, None, "w", QueueOrder.STRICT, 0)
        await a.ack([Ack(LeaseRef(leased.id, leased.lease_token), TaskResult(b"ok"))])
        await _turns()
        assert not waiting.done()
        b.tasks_finished([task.id])
        final = await asyncio.wait_for(waiting, 2)
        assert final.state is TaskState.SUCCEEDED and final.result == TaskResult(b"ok")

    asyncio.run(scenario())
