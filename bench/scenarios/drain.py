"""Scenario 3: drain a pre-filled queue with the worker SDK (separate process) and, for
reference, with raw Lease(100) + one batched Ack per lease."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import grpc
from google.protobuf import duration_pb2

from bench.common import CALL_TIMEOUT, RunConfig, pid, prefill, running_broker
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
    with running_broker(config.durability, config.broker_args) as broker:
        filled = asyncio.run(
            prefill(broker.address, sizes.drain, "drain", deadline_in(sizes.max_seconds))
        )
        # Tasks are leased in queue order, so the last-queued ones finish last, give or take
        # one ack batch of tasks a worker still has in hand. Waiting for a window of them is
        # waiting for the queue (the handled count below confirms it); a bigger window would
        # add its own GetResult calls to the broker's CPU.
        last_ids = [t.id for t in filled.last[-LAST_WINDOW:]]
        workers = WorkerProcesses(broker.address, "drain", config, config.drain_processes)
        try:

            async def body() -> Moved:
                async with AsyncClient(broker.address, timeout=CALL_TIMEOUT) as client:
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
            p, h = config.drain_processes, config.drain_handler
            sample = timed(
                name,
                f"{name}: Worker SDK, {p} process(es) x concurrency {c}, prefetch "
                f"{f}, {h} no-op handler",
                pid(broker),
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


async def raw_drain(address: str, count: int, seconds: float, queue: str = "drain") -> Moved:
    """Lease(max 100) then one Ack for the batch, RAW_IN_FLIGHT loops, until `count` acked.

    Loops reserve what they lease before asking, so none parks on an emptied queue."""
    wait = duration_pb2.Duration(seconds=1)
    deadline = deadline_in(seconds)
    moved = Moved(0, rpcs=0)
    reserved = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)

        async def loop() -> None:
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

        await asyncio.gather(*(loop() for _ in range(RAW_IN_FLIGHT)))
    return moved


def drain_raw(sizes: Sizes, config: RunConfig) -> list[Sample]:
    with running_broker(config.durability, config.broker_args) as broker:
        filled = asyncio.run(
            prefill(broker.address, sizes.drain, "drain", deadline_in(sizes.max_seconds))
        )
        return [
            timed(
                "drain-raw",
                f"drain-raw: stub Lease({RAW_BATCH}) + batched Ack, {RAW_IN_FLIGHT} in flight",
                pid(broker),
                lambda: raw_drain(broker.address, filled.tasks, sizes.max_seconds),
            )
        ]
