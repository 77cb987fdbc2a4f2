"""Bursts: thousands of calls in flight on one channel are all served, none dropped."""

from __future__ import annotations

import asyncio

import grpc

from conveyor.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc


def test_five_thousand_concurrent_enqueues_on_one_channel_all_succeed(shared_broker, queue):
    async def burst() -> list[object]:
        async with grpc.aio.insecure_channel(shared_broker.address) as channel:
            stub = task_service_pb2_grpc.TaskServiceStub(channel)
            request = task_service_pb2.EnqueueRequest(
                task=task_pb2.TaskSpec(queue=queue, kind="burst", payload=b"{}")
            )
            calls = (stub.Enqueue(request, timeout=60) for _ in range(5000))
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} failed, first: {errors[0]!r}"
    assert len({r.task.id for r in results}) == 5000  # type: ignore[union-attr]
