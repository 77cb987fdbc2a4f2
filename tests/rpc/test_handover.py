"""An Enqueue hands its task straight to a parked Lease, in one commit (in-process engine)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.model import QueueOrder, TaskSpec, TaskState
from conveyor_server.service.engine import Engine
from conveyor_server.store.memory import MemoryStore


class CountingStore(MemoryStore):
    """A MemoryStore that counts write transactions."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, fn: Any, *, is_growth: bool = False) -> Any:
        self.writes += 1
        return super().write(fn, is_growth=is_growth)


def _engine() -> tuple[Engine, CountingStore]:
    store = CountingStore()
    return Engine(Broker(store, FakeClock())), store


async def _parked_lease(engine: Engine, queues: list[str], wait: float = 5.0) -> asyncio.Task[Any]:
    leasing = asyncio.ensure_future(engine.lease(queues, 10, 12.0, "w1", QueueOrder.STRICT, wait))
    for _ in range(5):  # until it has looked, found nothing and parked
        await asyncio.sleep(0)
    assert not leasing.done()
    return leasing


def test_a_parked_lease_gets_the_new_task_in_the_enqueue_commit():
    async def scenario() -> None:
        engine, store = _engine()
        leasing = await _parked_lease(engine, ["other", "q"])
        assert store.writes == 0  # an empty queue is looked at with a read, not a write

        outcome = await engine.enqueue(TaskSpec(kind="k", queue="q"), reject_duplicate=False)
        leased = await asyncio.wait_for(leasing, 1)

        assert store.writes == 1
        assert outcome.task.state is TaskState.LEASED
        assert [t.id for t in leased] == [outcome.task.id]
        stored = engine.get_task(outcome.task.id)
        assert stored.state is TaskState.LEASED
        assert (stored.worker_id, stored.attempt, stored.lease_token) == (
            "w1",
            1,
            leased[0].lease_token,
        )
        assert stored.lease_expires_at == stored.leased_at + 12.0

    asyncio.run(scenario())


def test_delayed_and_duplicate_tasks_are_not_handed_over():
    async def scenario() -> None:
        engine, _ = _engine()
        first = await engine.enqueue(TaskSpec(kind="k", queue="q", id="t1"), False)
        taken = await engine.lease(["q"], 10, None, "w", QueueOrder.STRICT, 0)
        assert [t.id for t in taken] == [first.task.id]

        leasing = await _parked_lease(engine, ["q"], wait=0.3)
        later = await engine.enqueue(TaskSpec(kind="k", queue="q", delay=60.0), False)
        again = await engine.enqueue(TaskSpec(kind="k", queue="q", id="t1"), False)
        assert later.task.state is TaskState.SCHEDULED
        assert again.duplicate and again.task.state is TaskState.LEASED  # the first lease's
        assert await asyncio.wait_for(leasing, 2) == []  # the wait ran out: nothing new

    asyncio.run(scenario())


@pytest.mark.parametrize("cancel_after_claim", [False, True])
def test_a_lease_that_went_away_during_the_hand_over_gives_the_task_back(cancel_after_claim):
    async def scenario() -> None:
        engine, _ = _engine()
        leasing = await _parked_lease(engine, ["q"])
        enqueuing = asyncio.ensure_future(engine.enqueue(TaskSpec(kind="k", queue="q"), False))
        if cancel_after_claim:  # the claim is taken and the task handed over first
            await asyncio.sleep(0)
        leasing.cancel()
        outcome = await enqueuing
        # Cancelled first, the Lease is no longer claimable: the task is simply queued.
        expected = TaskState.LEASED if cancel_after_claim else TaskState.READY
        assert outcome.task.state is expected
        for _ in range(20):  # the background release commits
            await asyncio.sleep(0)
        task = engine.get_task(outcome.task.id)
        assert (task.state, task.attempt) == (TaskState.READY, 0)

    asyncio.run(scenario())


def test_one_enqueue_wakes_or_feeds_only_one_parked_lease():
    async def scenario() -> None:
        engine, _ = _engine()
        first = await _parked_lease(engine, ["q"], wait=0.3)
        second = await _parked_lease(engine, ["q"], wait=0.3)
        outcome = await engine.enqueue(TaskSpec(kind="k", queue="q"), False)
        results = await asyncio.gather(first, second)
        assert [t.id for t in results[0]] == [outcome.task.id]  # the longest waiting
        assert results[1] == []

    asyncio.run(scenario())
