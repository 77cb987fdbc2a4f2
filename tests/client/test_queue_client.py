"""Client and AsyncClient queue administration (QueueService) against a real broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from conveyor import AsyncClient, Client, TaskState, errors


@pytest.fixture
def queue() -> str:
    return f"cq-{uuid.uuid4().hex[:10]}"


def _dead(client: Client, queue: str, n: int) -> list[str]:
    ids = [client.enqueue("job", {"n": i}, queue=queue, max_attempts=1).id for i in range(n)]
    for task in client.lease(queue, n):
        client.fail(task, "Boom", "bad", retryable=False)
    return ids


def test_sync_client_queue_admin_round_trip(shared_broker, queue) -> None:
    with Client(shared_broker.address) as client:
        paused = client.pause_queue(queue)
        assert paused.paused and paused.counts == {}
        client.enqueue("job", {"a": 1}, queue=queue)
        assert client.lease(queue) == []
        info = client.get_queue(queue)
        assert info.counts == {TaskState.READY: 1} and info.oldest_ready_age is not None
        assert not client.resume_queue(queue).paused
        assert queue in {q.name for q in client.list_queues()}
        assert client.purge_queue(queue, "ready") == 1
        dead = _dead(client, queue, 3)
        page = client.list_tasks(queue=queue, states=["dead"], page_size=2)
        assert [t.id for t in page.tasks] == dead[:2] and page.next_page_token
        assert [t.id for t in client.iter_tasks(queue=queue, newest_first=True)] == dead[::-1]
        assert client.retry_tasks([dead[0]]) == 1
        assert client.retry_tasks(queue=queue) == 2
        assert client.get_task(dead[1]).state is TaskState.READY
        client.delete_task(dead[2])
        with pytest.raises(errors.NotFound):
            client.get_task(dead[2])
        with pytest.raises(errors.InvalidArgument):
            client.purge_queue(queue, "leased")
        with pytest.raises(errors.InvalidArgument):
            client.retry_tasks("one-id-as-a-string")  # type: ignore[arg-type]
        client.lease(queue, worker_id="cli-worker")
        assert "cli-worker" in {w.id for w in client.list_workers()}


def test_async_client_queue_admin(shared_broker, queue) -> None:
    async def main() -> None:
        async with AsyncClient(shared_broker.address) as client:
            await client.pause_queue(queue)
            task = await client.enqueue("job", None, queue=queue)
            assert (await client.get_queue(queue)).paused
            assert await client.lease(queue) == []
            await client.resume_queue(queue)
            listed = [t.id async for t in client.iter_tasks(queue=queue)]
            assert listed == [task.id]
            page = await client.list_tasks(queue=queue)
            assert [t.id for t in page.tasks] == [task.id]
            assert await client.purge_queue(queue, [TaskState.READY]) == 1
            with pytest.raises(errors.NotFound):
                await client.retry_tasks([task.id])
            with pytest.raises(errors.NotFound):
                await client.delete_task(task.id)
            assert isinstance(await client.list_workers(), list)
            assert queue in {q.name for q in await client.list_queues()}

    asyncio.run(asyncio.wait_for(main(), 60))
