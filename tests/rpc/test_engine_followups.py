"""What a commit means outside the store happens even when its caller is gone (in-process)."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.errors import ResourceExhausted
from conveyor_server.core.model import Ack, LeaseRef, QueueOrder, TaskResult, TaskSpec, TaskState
from conveyor_server.service.engine import Engine
from conveyor_server.store.memory import MemoryStore
from tests.rpc.helpers import GatedStore


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _lease(engine: Engine, queue: str, wait: float = 5.0) -> asyncio.Task[Any]:
    return asyncio.ensure_future(engine.lease([queue], 10, None, "w", QueueOrder.STRICT, wait))


def test_an_enqueue_cancelled_during_the_hand_over_still_delivers_its_task():
    async def scenario() -> None:
        store = GatedStore()
        engine = Engine(Broker(store, FakeClock()))
        leasing = _lease(engine, "q")
        await _turns()
        store.is_gated = True
        enqueuing = asyncio.ensure_future(engine.enqueue(TaskSpec(kind="k", queue="q"), False))
        await _turns()
        enqueuing.cancel()  # the producer went away; the task is committed, LEASED to "w"
        await _turns()
        store.open_gate()
        leased = await asyncio.wait_for(leasing, 2)
        assert len(leased) == 1
        assert engine.get_task(leased[0].id).state is TaskState.LEASED

    asyncio.run(scenario())


def test_an_ack_whose_caller_went_away_still_wakes_the_result_waiter():
    async def scenario() -> None:
        store = GatedStore()
        engine = Engine(Broker(store, FakeClock()))
        task = (await engine.enqueue(TaskSpec(kind="k", queue="q"), False)).task
        (leased,) = await engine.lease(["q"], 1, None, "w", QueueOrder.STRICT, 0)
        waiting = asyncio.ensure_future(engine.get_result(task.id, 30))
        await _turns()
        store.is_gated = True
        acking = asyncio.ensure_future(
            engine.ack([Ack(LeaseRef(leased.id, leased.lease_token), TaskResult(b"ok"))])
        )
        await _turns()
        acking.cancel()  # e.g. the work stream broke while the ack committed
        await _turns()
        store.open_gate()
        final = await asyncio.wait_for(waiting, 2)
        assert final.state is TaskState.SUCCEEDED and final.result == TaskResult(b"ok")

    asyncio.run(scenario())


def test_a_lease_that_promotes_another_queues_due_task_wakes_that_queues_waiters():
    async def scenario() -> None:
        clock = FakeClock()
        engine = Engine(Broker(MemoryStore(), clock))
        later = await engine.enqueue(TaskSpec(kind="k", queue="b", delay=5.0), False)
        waiting_b = _lease(engine, "b")
        await _turns()
        clock.advance(10.0)  # due, but no timer runs here: the next Lease promotes it
        assert await engine.lease(["a"], 1, None, "w", QueueOrder.STRICT, 0) == []
        leased = await asyncio.wait_for(waiting_b, 2)
        assert [t.id for t in leased] == [later.task.id]

    asyncio.run(scenario())


def test_a_full_waiter_pool_does_not_refuse_calls_that_need_no_wait():
    async def scenario() -> None:
        engine = Engine(Broker(MemoryStore(), FakeClock()), max_waiters=1)
        parked = _lease(engine, "empty")  # takes the only waiter slot
        await _turns()
        task = (await engine.enqueue(TaskSpec(kind="k", queue="q"), False)).task
        leased = await engine.lease(["q"], 1, None, "w", QueueOrder.STRICT, 10)
        assert [t.id for t in leased] == [task.id]
        await engine.ack([Ack(LeaseRef(task.id, leased[0].lease_token), TaskResult())])
        assert (await engine.get_result(task.id, 10)).state is TaskState.SUCCEEDED
        try:
            await engine.lease(["empty"], 1, None, "w", QueueOrder.STRICT, 10)
        except ResourceExhausted:
            pass  # a call that must wait still finds the pool full
        else:
            raise AssertionError("a second waiting Lease was admitted past max_waiters=1")
        parked.cancel()
        await asyncio.gather(parked, return_exceptions=True)

    asyncio.run(scenario())


def test_schedule_changes_and_triggers_take_effect_even_when_their_caller_is_gone():
    from conveyor_server.core.schedules.book import ScheduleBook
    from conveyor_server.core.schedules.model import Schedule, TaskTemplate
    from conveyor_server.service.scheduler import CronScheduler

    async def scenario() -> tuple[int, list[str]]:
        store = GatedStore()
        handed: list[str] = []
        scheduler = CronScheduler(
            ScheduleBook(Broker(store, FakeClock())), lambda ts: handed.extend(t.id for t in ts)
        )
        pokes = 0

        def count_poke() -> None:
            nonlocal pokes
            pokes += 1

        scheduler.poke = count_poke  # type: ignore[method-assign]
        template = TaskTemplate(kind="job", queue="q")
        schedule = Schedule(name="s", template=template, cron="* * * * *")
        for call in (
            lambda: scheduler.create(schedule, False),
            lambda: scheduler.trigger("s"),
        ):
            store.is_gated = True
            calling = asyncio.ensure_future(call())
            await _turns()
            calling.cancel()  # the RPC went away; its write is queued and then commits
            await _turns()
            store.open_gate()
            await _turns()
        return pokes, handed

    pokes, handed = asyncio.run(scenario())
    assert pokes == 1  # the new schedule woke the loop, which would otherwise sleep on
    assert len(handed) == 1  # the triggered task reached the engine (waking its Leases)


def test_a_follow_up_that_raises_does_not_leave_its_caller_waiting():
    from concurrent.futures import Future

    from conveyor_server.service.settle import settle

    def broken_follow_up(result: int) -> None:
        raise RuntimeError("a bug in a follow-up")

    async def scenario() -> int:
        written: Future[int] = Future()
        waiter = settle(written, broken_follow_up)
        written.set_result(5)  # committed; its follow-up raises (and is logged)
        return await asyncio.wait_for(waiter, 2)

    assert asyncio.run(scenario()) == 5


def test_a_slot_freed_while_a_held_back_lease_commits_is_not_missed():
    from conveyor_server.core.queues import QueueAdmin, QueueUpdate

    async def scenario() -> None:
        store = GatedStore()
        broker = Broker(store, FakeClock())
        engine = Engine(broker)
        outcome = QueueAdmin(broker).update("q", QueueUpdate({"concurrency": 1})).result()
        broker.note_limits("q", outcome.limits)
        for _ in range(2):
            await engine.enqueue(TaskSpec(kind="k", queue="q"), False)
        (held,) = await engine.lease(["q"], 1, None, "w", QueueOrder.STRICT, 0)
        store.is_gated = True
        leasing = _lease(engine, "q")  # held back by the limit; its answer not yet reported
        await _turns()
        store.is_gated = False
        await engine.ack([Ack(LeaseRef(held.id, held.lease_token), TaskResult(b"ok"))])
        store.open_gate()  # the Lease learns it was held back only after the slot freed
        leased = await asyncio.wait_for(leasing, 1)
        assert len(leased) == 1

    asyncio.run(scenario())
