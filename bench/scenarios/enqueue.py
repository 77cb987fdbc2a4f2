"""Scenarios 1 and 2: enqueue one task per call (AsyncClient and raw unary), enqueue_many.
With several brokers the client loops take turns over them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from contextlib import AsyncExitStack

import grpc

from bench.common import (
    CALL_TIMEOUT,
    KIND,
    PAYLOAD_OBJ,
    RunConfig,
    over,
    running_brokers,
    spec,
)
from bench.measure import Sample
from bench.scenarios._timing import Moved, deadline_in, run_loops, timed
from bench.sizes import Sizes
from conveyor import AsyncClient
from conveyor.v1 import task_service_pb2, task_service_pb2_grpc

RAW_IN_FLIGHT = 64
MANY_BATCH = 1000
MANY_IN_FLIGHT = 4


def _listed(address: str | Sequence[str]) -> list[str]:
    return [address] if isinstance(address, str) else list(address)


async def _clients(stack: AsyncExitStack, address: str | Sequence[str]) -> list[AsyncClient]:
    return [
        await stack.enter_async_context(AsyncClient(a, timeout=CALL_TIMEOUT))
        for a in _listed(address)
    ]


async def async_client_enqueues(
    address: str | Sequence[str], count: int, concurrency: int, queue: str, seconds: float
) -> Moved:
    """`concurrency` coroutines each awaiting `client.enqueue(...)` in a loop. The client
    coalesces calls made in the same loop turn into EnqueueBatch; the RPC count shows it."""
    async with AsyncExitStack() as stack:
        turn = itertools.cycle(await _clients(stack, address))

        async def one() -> int:
            await next(turn).enqueue(KIND, PAYLOAD_OBJ, queue=queue)
            return 1

        return await run_loops(concurrency, count, deadline_in(seconds), one)


def enqueue(sizes: Sizes, config: RunConfig) -> list[Sample]:
    with running_brokers(config) as brokers:
        c = config.enqueue_concurrency
        return [
            timed(
                "enqueue",
                f"enqueue: AsyncClient.enqueue, 1 task/call, {c} concurrent{over(config)}",
                brokers.pids,
                lambda: async_client_enqueues(
                    brokers.addresses, sizes.enqueue, c, "bench", sizes.max_seconds
                ),
            )
        ]


async def _raw_unary(addresses: Sequence[str], count: int, seconds: float) -> Moved:
    async with AsyncExitStack() as stack:
        stubs = [
            task_service_pb2_grpc.TaskServiceStub(
                await stack.enter_async_context(grpc.aio.insecure_channel(a))
            )
            for a in addresses
        ]
        turn = itertools.cycle(stubs)
        request = task_service_pb2.EnqueueRequest(task=spec("bench"))

        async def one() -> int:
            await next(turn).Enqueue(request, timeout=CALL_TIMEOUT)
            return 1

        moved = await run_loops(RAW_IN_FLIGHT, count, deadline_in(seconds), one)
    moved.rpcs = moved.tasks
    return moved


def enqueue_raw(sizes: Sizes, config: RunConfig) -> list[Sample]:
    with running_brokers(config) as brokers:
        return [
            timed(
                "enqueue-raw",
                f"enqueue-raw: stub Enqueue (unary), {RAW_IN_FLIGHT} in flight{over(config)}",
                brokers.pids,
                lambda: _raw_unary(brokers.addresses, sizes.enqueue, sizes.max_seconds),
            )
        ]


async def _many(addresses: Sequence[str], count: int, seconds: float) -> Moved:
    items = [(KIND, PAYLOAD_OBJ)] * MANY_BATCH
    async with AsyncExitStack() as stack:
        turn = itertools.cycle(await _clients(stack, addresses))

        async def one() -> int:
            return len(await next(turn).enqueue_many(items, queue="bench"))

        calls = max(1, count // MANY_BATCH)
        return await run_loops(MANY_IN_FLIGHT, calls, deadline_in(seconds), one)


def enqueue_many(sizes: Sizes, config: RunConfig) -> list[Sample]:
    with running_brokers(config) as brokers:
        return [
            timed(
                "enqueue-many",
                f"enqueue-many: enqueue_many({MANY_BATCH}), {MANY_IN_FLIGHT} in flight"
                f"{over(config)}",
                brokers.pids,
                lambda: _many(brokers.addresses, sizes.enqueue_many, sizes.max_seconds),
            )
        ]
