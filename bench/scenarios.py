"""Benchmark scenarios over the generated asyncio stubs: each returns tasks moved."""

from __future__ import annotations

import asyncio
import json

import grpc
from google.protobuf import duration_pb2

from conveyor.v1 import (
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

#: A ~100-byte JSON payload, as in the performance targets.
PAYLOAD = json.dumps({"user_id": 123456, "action": "resize", "path": "/img/" + "a" * 50}).encode()


def _spec(queue: str) -> task_pb2.TaskSpec:
    return task_pb2.TaskSpec(
        queue=queue, kind="bench.noop", payload=PAYLOAD, content_type="application/json"
    )


async def enqueue_unary(address: str, count: int, in_flight: int, queue: str) -> int:
    """One Enqueue per task, `in_flight` calls outstanding on one channel."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        request = task_service_pb2.EnqueueRequest(task=_spec(queue))
        remaining = count

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await stub.Enqueue(request)

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return count


async def enqueue_batches(address: str, count: int, batch: int, in_flight: int, queue: str) -> int:
    """EnqueueBatch of `batch` tasks, `in_flight` calls outstanding."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        request = task_service_pb2.EnqueueBatchRequest(tasks=[_spec(queue)] * batch)
        remaining = count // batch

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await stub.EnqueueBatch(request)

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return (count // batch) * batch


async def drain(address: str, count: int, batch: int, in_flight: int, queue: str) -> int:
    """Lease(max `batch`) then one batched Ack, `in_flight` loops, until `count` are acked."""
    wait = duration_pb2.Duration(seconds=1)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        done = 0

        async def worker() -> None:
            nonlocal done
            request = worker_service_pb2.LeaseRequest(queues=[queue], max_tasks=batch, wait=wait)
            while done < count:
                response = await stub.Lease(request)
                if not response.tasks:
                    return
                acks = [
                    worker_service_pb2.AckItem(
                        lease=worker_service_pb2.LeaseRef(task_id=t.id, lease_token=t.lease_token)
                    )
                    for t in response.tasks
                ]
                await stub.Ack(worker_service_pb2.AckRequest(acks=acks))
                done += len(acks)

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return done
