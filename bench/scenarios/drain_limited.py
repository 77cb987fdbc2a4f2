"""Scenario drain-limited: the drain, with the queue under a concurrency limit and its
tasks spread over concurrency keys (optionally each capped by key_concurrency): what flow
control costs the lease path (the issue's target: within 25 % of the plain drain).

Defaults (`--limit-*` flags): 1,000 keys, a queue concurrency limit of 1,024 (the bench
worker's 512 slots plus 512 prefetch) and no per-key cap. A lower limit bounds the drain by
the limit itself (at most `limit` tasks per lease-run-ack cycle): that measures the limit,
not what enforcing it costs; docs/flow-control.md gives those figures too."""

from __future__ import annotations

import asyncio
import time

from bench.common import CALL_TIMEOUT, KIND, PAYLOAD_OBJ, RunConfig, over, running_brokers
from bench.measure import Sample
from bench.scenarios._timing import Moved, deadline_in, timed
from bench.sizes import Sizes
from bench.workers import WorkerProcesses
from conveyor import AsyncClient, Client, TaskSpec, TaskState
from conveyor_worker import Worker

QUEUE = "drain-limited"
#: How often the timed body asks whether the queue is drained. Fairness between keys
#: reorders the queue, so no last-queued task marks the end; a GetQueue per 50 ms costs
#: the broker well under 1 % of its CPU and the figure at most one period.
POLL_SECONDS = 0.05


async def prefill_keyed(
    address: str, count: int, deadline: float, keys: int, in_flight: int = 4
) -> int:
    """Queue `count` tasks (1000 per EnqueueBatch), task i under key i % keys."""
    batch = [TaskSpec(KIND, PAYLOAD_OBJ, concurrency_key=f"key-{i % keys}") for i in range(1000)]
    remaining = count
    queued = 0
    async with AsyncClient(address, timeout=CALL_TIMEOUT) as client:

        async def loop() -> None:
            nonlocal remaining, queued
            while remaining > 0 and time.monotonic() < deadline:
                n = min(remaining, len(batch))
                remaining -= n
                await client.enqueue_many(batch[:n], queue=QUEUE)
                queued += n

        await asyncio.gather(*(loop() for _ in range(in_flight)))
    return queued


async def _drained(address: str, total: int, seconds: float) -> Moved:
    deadline = deadline_in(seconds)
    async with AsyncClient(address, timeout=CALL_TIMEOUT) as client:
        while time.monotonic() < deadline:
            info = await client.get_queue(QUEUE)
            if info.counts.get(TaskState.SUCCEEDED, 0) >= total:
                return Moved(total)
            await asyncio.sleep(POLL_SECONDS)
    raise RuntimeError(f"drain-limited: not drained within {seconds:g} s")


def drain_limited(sizes: Sizes, config: RunConfig) -> list[Sample]:
    """Time from `go` to every task SUCCEEDED, under the limits above."""
    with running_brokers(config) as brokers:
        deadline = deadline_in(sizes.max_seconds)
        keys = max(1, config.limit_keys)
        total = asyncio.run(prefill_keyed(brokers.address, sizes.drain, deadline, keys))
        with Client(brokers.address, timeout=CALL_TIMEOUT) as client:
            client.update_queue(
                QUEUE,
                concurrency=config.limit_concurrency,
                key_concurrency=config.limit_key_concurrency,
            )
        targets = brokers.spread(max(config.drain_processes, config.brokers))
        workers = WorkerProcesses(targets, QUEUE, config)
        try:

            async def body() -> Moved:
                workers.go()
                return await _drained(brokers.address, total, sizes.max_seconds)

            defaults = Worker()
            c = (
                defaults.concurrency
                if config.drain_concurrency is None
                else config.drain_concurrency
            )
            defaults.concurrency = c
            f = defaults.prefetch if config.drain_prefetch is None else config.drain_prefetch
            sample = timed(
                "drain-limited",
                f"drain-limited: concurrency {config.limit_concurrency}, {keys} keys x "
                f"key_concurrency {config.limit_key_concurrency}; Worker SDK, "
                f"{len(targets)} process(es) x concurrency {c}, "
                f"prefetch {f}, {config.drain_handler} no-op handler{over(config)}",
                brokers.pids,
                body,
                workers.pids,
            )
        finally:
            report = workers.stop()
            workers.kill()
    if report.handled < total:
        raise RuntimeError(f"drain-limited: worker handled {report.handled} of {total} tasks")
    sample.rpcs = report.rpcs
    sample.label += f", transport {report.transport}"
    return [sample]
