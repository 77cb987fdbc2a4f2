"""AsyncClient: the same calls, awaitable; many enqueues in flight on one channel."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import AsyncClient, TaskFailed, TaskState, errors


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_ten_thousand_concurrent_enqueues_are_all_present(shared_broker):
    async def main():
        async with AsyncClient(shared_broker.address) as client:
            tasks = await asyncio.gather(
                *(client.enqueue("a.k", {"i": i}, queue="a-10k") for i in range(10_000))
            )
            assert [t.payload["i"] for t in tasks] == list(range(10_000))
            leased = []
            while True:
                batch = await client.lease("a-10k", 1000)
                if not batch:
                    break
                leased += batch
            return {t.id for t in tasks}, {t.id for t in leased}

    created, present = run(main())
    assert len(created) == 10_000 and present == created


def test_a_bad_task_among_concurrent_enqueues_fails_alone(shared_broker):
    async def main():
        async with AsyncClient(shared_broker.address) as client:
            return await asyncio.gather(
                client.enqueue("k", 1, queue="a-mixed"),
                client.enqueue("k", 2, queue="bad queue!"),
                client.enqueue("k", 3, queue="a-mixed"),
                return_exceptions=True,
            )

    first, bad, third = run(main())
    assert isinstance(bad, errors.InvalidArgument)
    assert first.payload == 1 and third.payload == 3


def test_async_round_trip_and_errors(shared_broker):
    async def main():
        async with AsyncClient(shared_broker.address) as client:
            tasks = await client.enqueue_many([("k", i) for i in range(1500)], queue="a-rt")
            assert len(tasks) == 1500
            [leased] = await client.lease("a-rt", wait=5)
            await client.ack(leased, "ok")
            assert await client.result(leased.id, timeout=5) == "ok"
            [second] = await client.lease("a-rt", wait=5)
            await client.fail(second, "KeyError", "missing", retryable=False)
            with pytest.raises(TaskFailed):
                await client.result(second.id, timeout=5)
            with pytest.raises(errors.LeaseLost):
                await client.ack(second)
            with pytest.raises(errors.NotFound):
                await client.get_task("nope")
            with pytest.raises(TimeoutError):
                await client.result(tasks[-1].id, timeout=0.5)
            assert (await client.cancel(tasks[-1].id)).state is TaskState.CANCELLED

    run(main())
