"""Scenario 3: drain a pre-filled queue with the worker SDK (separate process) and, for
reference, with raw Lease(100) + one batched Ack per lease. With several brokers the
queue is filled through the first and the workers (at least one per broker) take turns
over them, so finished tasks reach the first broker's GetResult from the others."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack

import grpc
from google.protobuf import duration_pb2

from bench.common import CALL_TIMEOUT, RunConfig, over, prefill, running_brokers
from bench.measure import Sample
from bench.scenarios._timing import Moved, deadline_in, timed
from bench.sizes import Sizes
from bench.workers import WorkerProcesses
from conveyor import AsyncClient
from conveyor.v1 import worker_service_pb2, worker_service_pb2_grpc
from conveyor_worker import Worker

RAW_BATCH = 100
RAW_IN_FLIGHT = 2
LAST_WINDOW = 16


def drain(sizes: Sizes, config: RunConfig, name: str = "drain") -> list[Sample]:
    """Time from `go` to the results of the last-queued tasks being final."""
    with running_brokers(config) as brokers:
        filled = asyncio.run(
            prefill(brokers.address, sizes.drain, "drain", deadline_in(sizes.max_seconds))
        )
        # Tasks are leased in queue order, so the last-queued ones finish last, give or take
        # one ack batch of tasks a worker still has in hand. Waiting for a window of them is
        # waiting for the queue (the handled count below confirms it); a bigger window would
        # add its own GetResult calls to the broker's CPU.
        last_ids = [t.id for t in filled.last[-LAST_WINDOW:]]
        targets = brokers.spread(max(config.drain_processes, config.brokers))
        workers = WorkerProcesses(targets, "drain", config)
        try:

            async def body() -> Moved:
                async with AsyncClient(brokers.address, timeout=CALL_TIMEOUT) as client:
                    workers.go()
                    for task_id in last_ids:
                        await client.wait(task_id, timeout=sizes.max_seconds)
                return Moved(filled.tasks)

            defaults = Worker()
            c = (
                defaults.concurrency
                if config.drain_concurrency is None
                else config.drain_concurrency
            )
            defaults.concurrency = c
            f = defaults.prefetch if config.drain_prefetch is None else config.drain_prefetch
            p, h = len(targets), config.drain_handler
            sample = timed(
                name,
                f"{name}: Worker SDK, {p} process(es) x concurrency {c}, prefetch "
                f"{f}, {h} no-op handler{over(config)}",
                brokers.pids,
                body,
                workers.pids,
            )
        finally:
            report = workers.stop()
            workers.kill()
    if report.handled < filled.tasks:
        raise RuntimeError(f"drain: worker handled {report.handled} of {filled.tasks} tasks")
    sample.rpcs = report.rpcs
    sample.label += f", transport {report.transport}"
    return [sample]


def drain_default(sizes: Sizes, config: RunConfig) -> list[Sample]:
    """The drain with `Worker(...)`'s own concurrency and prefetch: what users get untuned."""
    untuned = dataclasses.replace(config, drain_concurrency=None, drain_prefetch=None)
    return drain(sizes, untuned, "drain-default")


async def raw_drain(
    address: str | Sequence[str], count: int, seconds: float, queue: str = "drain"
) -> Moved:
    """Lease(max 100) then one Ack for the batch, RAW_IN_FLIGHT loops (per broker, given
    several addresses), until `count` acked.

    Loops reserve what they lease before asking, so none parks on an emptied queue."""
    addresses = [address] if isinstance(address, str) else list(address)
    wait = duration_pb2.Duration(seconds=1)
    deadline = deadline_in(seconds)
    moved = Moved(0, rpcs=0)
    reserved = 0
    async with AsyncExitStack() as stack:
        stubs = [
            worker_service_pb2_grpc.WorkerServiceStub(
                await stack.enter_async_context(grpc.aio.insecure_channel(a))
            )
            for a in addresses
        ]

        async def loop(stub: worker_service_pb2_grpc.WorkerServiceStub) -> None:
            nonlocal reserved
            while reserved < count and time.monotonic() < deadline:
                n = min(RAW_BATCH, count - reserved)
                reserved += n
                started = time.perf_counter()
                request = worker_service_pb2.LeaseRequest(queues=[queue], max_tasks=n, wait=wait)
                response = await stub.Lease(request, timeout=CALL_TIMEOUT)
                reserved -= n - len(response.tasks)
                if not response.tasks:
                    return
                acks = [
                    worker_service_pb2.AckItem(
                        lease=worker_service_pb2.LeaseRef(task_id=t.id, lease_token=t.lease_token)
                    )
                    for t in response.tasks
                ]
                await stub.Ack(worker_service_pb2.AckRequest(acks=acks), timeout=CALL_TIMEOUT)
                moved.tasks += len(acks)
                moved.rpcs = (moved.rpcs or 0) + 2
                moved.latencies_ms.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(loop(stub) for stub in stubs for _ in range(RAW_IN_FLIGHT)))
    return moved


def drain_raw(sizes: Sizes, config: RunConfig) -> list[Sample]:
    with running_brokers(config) as brokers:
        filled = asyncio.run(
            prefill(brokers.address, sizes.drain, "drain", deadline_in(sizes.max_seconds))
        )
        return [
            timed(
                "drain-raw",
                f"drain-raw: stub Lease({RAW_BATCH}) + batched Ack, {RAW_IN_FLIGHT} in flight"
                f"{' per broker' if config.brokers > 1 else ''}{over(config)}",
                brokers.pids,
                lambda: raw_drain(brokers.addresses, filled.tasks, sizes.max_seconds),
            )
        ]
