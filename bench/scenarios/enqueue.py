"""Scenarios 1 and 2: enqueue one task per call (AsyncClient and raw unary), enqueue_many."""

from __future__ import annotations

import grpc

from bench.common import CALL_TIMEOUT, KIND, PAYLOAD_OBJ, RunConfig, pid, running_broker, spec
from bench.measure import Sample
from bench.scenarios._timing import Moved, deadline_in, run_loops, timed
from bench.sizes import Sizes
from conveyor import AsyncClient
from conveyor.v1 import task_service_pb2, task_service_pb2_grpc

RAW_IN_FLIGHT = 64
MANY_BATCH = 1000
MANY_IN_FLIGHT = 4


async def async_client_enqueues(
    address: str, count: int, concurrency: int, queue: str, seconds: float
) -> Moved:
    """`concurrency` coroutines each awaiting `client.enqueue(...)` in a loop. The client
    coalesces calls made in the same loop turn into EnqueueBatch; the RPC count shows it."""
    async with AsyncClient(address, timeout=CALL_TIMEOUT) as client:

        async def one() -> int:
            await client.enqueue(KIND, PAYLOAD_OBJ, queue=queue)
            return 1

        return await run_loops(concurrency, count, deadline_in(seconds), one)


def enqueue(sizes: Sizes, config: RunConfig) -> list[Sample]:
    with running_broker(config.durability, config.broker_args) as broker:
        c = config.enqueue_concurrency
        return [
            timed(
                "enqueue",
                f"enqueue: AsyncClient.enqueue, 1 task/call, {c} concurrent",
                pid(broker),
                lambda: async_client_enqueues(
                    broker.address, sizes.enqueue, c, "bench", sizes.max_seconds
                ),
            )
        ]


async def _raw_unary(address: str, count: int, seconds: float) -> Moved:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        request = task_service_pb2.EnqueueRequest(task=spec("bench"))

        async def one() -> int:
            await stub.Enqueue(request, timeout=CALL_TIMEOUT)
            return 1

        moved = await run_loops(RAW_IN_FLIGHT, count, deadline_in(seconds), one)
    moved.rpcs = moved.tasks
    return moved


def enqueue_raw(sizes: Sizes, config: RunConfig) -> list[Sample]:
    with running_broker(config.durability, config.broker_args) as broker:
        return [
            timed(
                "enqueue-raw",
                f"enqueue-raw: stub Enqueue (unary), {RAW_IN_FLIGHT} in flight",
                pid(broker),
                lambda: _raw_unary(broker.address, sizes.enqueue, sizes.max_seconds),
            )
        ]


async def _many(address: str, count: int, seconds: float) -> Moved:
    items = [(KIND, PAYLOAD_OBJ)] * MANY_BATCH
    async with AsyncClient(address, timeout=CALL_TIMEOUT) as client:

        async def one() -> int:
            return len(await client.enqueue_many(items, queue="bench"))

        calls = max(1, count // MANY_BATCH)
        return await run_loops(MANY_IN_FLIGHT, calls, deadline_in(seconds), one)


def enqueue_many(sizes: Sizes, config: RunConfig) -> list[Sample]:
    with running_broker(config.durability, config.broker_args) as broker:
        return [
            timed(
                "enqueue-many",
                f"enqueue-many: enqueue_many({MANY_BATCH}), {MANY_IN_FLIGHT} in flight",
                pid(broker),
                lambda: _many(broker.address, sizes.enqueue_many, sizes.max_seconds),
            )
        ]
