"""AsyncClient.work_stream against a real broker: credits, outcomes, close, errors."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor import AsyncClient, Client, LeaseLost, StreamBatch, TaskState, WorkStream, errors


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


async def next_tasks(stream: WorkStream, count: int) -> list:
    got = []
    while len(got) < count:
        got.extend((await anext(stream)).tasks)
    return got


async def collect(stream: WorkStream, want) -> StreamBatch:
    """Read batches until `want(merged)` holds; returns everything seen, merged."""
    merged: dict[str, list] = {
        "tasks": [],
        "acks": [],
        "failures": [],
        "releases": [],
        "extensions": [],
    }
    while not want(merged):
        batch = await anext(stream)
        for name, items in merged.items():
            items.extend(getattr(batch, name))
    return StreamBatch(**merged)


def test_stream_drains_a_queue_acking_each_task_once(shared_broker):
    with Client(shared_broker.address) as client:
        tasks = client.enqueue_many([("k", i) for i in range(300)], queue="ws-drain")

    async def drain() -> tuple[list[str], list]:
        seen: list[str] = []
        outcomes = []
        async with AsyncClient(shared_broker.address) as client:
            stream = client.work_stream("ws-drain", credits=50, worker_id="ws")
            async for batch in stream:
                for task in batch.tasks:
                    assert task.state is TaskState.LEASED and task.lease_token
                    seen.append(task.id)
                    stream.ack(task, task.payload * 2)
                stream.grant(len(batch.tasks))
                outcomes.extend(batch.acks)
                if len(outcomes) == len(tasks):
                    break
            stream.close()
            async for _ in stream:  # nothing left: ends once the broker has answered
                pass
        return seen, outcomes

    seen, outcomes = run(drain())
    assert sorted(seen) == sorted(t.id for t in tasks)
    assert all(o.ok for o in outcomes)
    with Client(shared_broker.address) as client:
        for t in tasks[::30]:
            got = client.get_task(t.id)
            assert got.state is TaskState.SUCCEEDED and got.result == t.payload * 2


def test_stream_pushes_no_more_than_the_credits(shared_broker):
    with Client(shared_broker.address) as client:
        client.enqueue_many([("k", i) for i in range(5)], queue="ws-credits")

    async def scenario() -> tuple[int, int]:
        async with AsyncClient(shared_broker.address) as client:
            stream = client.work_stream(["ws-credits"], credits=2)
            first = await next_tasks(stream, 2)
            # Not wait_for: cancelling a pending read would cancel the whole call.
            reading = asyncio.ensure_future(anext(stream))
            done, _ = await asyncio.wait({reading}, timeout=0.5)
            assert not done, "pushed past the credits"
            stream.grant(3)
            rest = list((await reading).tasks)
            rest += await next_tasks(stream, 3 - len(rest))
            stream.cancel()
            return len(first), len(rest)

    assert run(scenario()) == (2, 3)


def test_outcomes_of_acks_failures_releases_and_extensions(shared_broker):
    with Client(shared_broker.address) as client:
        client.enqueue_many([("k", i) for i in range(4)], queue="ws-outcomes")

        async def scenario() -> StreamBatch:
            async with AsyncClient(shared_broker.address) as aclient:
                stream = aclient.work_stream("ws-outcomes", credits=4, lease_duration=30)
                a, b, c, d = await next_tasks(stream, 4)
                await aclient.cancel(d.id)
                stream.ack(a, {"ok": 1})
                stream.ack((b.id, "stale-token"))
                stream.fail(c, "Boom", "it broke", retryable=False)
                stream.extend(d, 60)
                got = await collect(
                    stream, lambda m: len(m["acks"]) == 2 and m["failures"] and m["extensions"]
                )
                stream.release(d)
                released = await collect(stream, lambda m: m["releases"])
                stream.cancel()
                return StreamBatch(
                    (a, b, c, d), got.acks, got.failures, released.releases, got.extensions
                )

        result = run(scenario())
        a, b, c, d = result.tasks
        acks = {o.task_id: o for o in result.acks}
        assert acks[a.id].ok and isinstance(acks[b.id].error, LeaseLost)
        assert [o.ok for o in result.failures] == [True]
        [extension] = result.extensions
        assert extension.ok and extension.cancel_requested and extension.lease_expires_at
        assert [o.ok for o in result.releases] == [True]
        assert client.get_task(a.id).result == {"ok": 1}
        assert client.get_task(c.id).state is TaskState.DEAD
        assert client.get_task(c.id).last_error.type == "Boom"
        assert client.get_task(d.id).state is TaskState.CANCELLED  # released with a cancel


def test_close_sends_what_is_queued_and_ends_after_the_last_outcome(shared_broker):
    with Client(shared_broker.address) as client:
        [task] = client.enqueue_many([("k", 1)], queue="ws-close")

    async def scenario() -> list:
        async with AsyncClient(shared_broker.address) as client:
            stream = client.work_stream("ws-close", credits=1)
            [leased] = await next_tasks(stream, 1)
            stream.ack(leased, "done")
            stream.close()
            with pytest.raises(errors.Unavailable):
                stream.grant(1)
            return [o async for batch in stream for o in batch.acks]

    [outcome] = run(scenario())
    assert outcome.ok and outcome.task_id == task.id


def test_a_bad_queue_name_fails_the_stream_with_invalid_argument(shared_broker):
    async def scenario() -> None:
        async with AsyncClient(shared_broker.address) as client:
            stream = client.work_stream("bad queue", credits=1)
            await anext(stream)

    with pytest.raises(errors.InvalidArgument, match="queues"):
        run(scenario())


def test_a_broker_that_goes_away_breaks_the_stream_with_unavailable(broker):
    async def scenario() -> float:
        async with AsyncClient(broker.address) as client:
            stream = client.work_stream("ws-gone", credits=1)
            reading = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, broker.kill)
            with pytest.raises(errors.Unavailable):
                await reading
            return time.monotonic() - started

    assert run(scenario()) < 10


def test_flush_on_a_stream_that_ended_raises_instead_of_waiting_for_ever(shared_broker):
    async def scenario() -> None:
        async with AsyncClient(shared_broker.address) as client:
            stream = client.work_stream("ws-flush", credits=1)
            await stream.flush()
            stream.grant(2)  # queued, then the call ends before the writer runs
            stream.cancel()
            with pytest.raises(errors.Unavailable):
                await asyncio.wait_for(stream.flush(), 5)

    run(scenario())


def test_a_stream_whose_client_was_closed_raises_unavailable_and_never_hangs(shared_broker):
    async def scenario() -> None:
        client = AsyncClient(shared_broker.address)
        stream = client.work_stream(["ws-closed"], credits=1)
        reading = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.2)
        stream.grant(1)  # queued, not yet written when the client goes
        await client.close()
        with pytest.raises(errors.Unavailable):
            await asyncio.wait_for(reading, 5)
        with pytest.raises(errors.Unavailable):
            await asyncio.wait_for(stream.flush(), 5)
        with pytest.raises(errors.Unavailable):
            client.work_stream(["ws-closed"], credits=1)

    run(scenario())
