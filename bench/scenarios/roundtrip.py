"""Scenario 4: enqueue -> worker -> result() returns, one at a time, with a warm worker in
another process. The producer is the blocking Client, as a web request handler would be.
With several brokers the producer talks to the first and the worker to the last, so each
task crosses brokers (PostgreSQL's LISTEN/NOTIFY wakes the parked calls)."""

from __future__ import annotations

import time

from bench.common import CALL_TIMEOUT, KIND, PAYLOAD_OBJ, RunConfig, over, running_brokers
from bench.measure import Sample
from bench.scenarios._timing import Moved, deadline_in, timed
from bench.sizes import Sizes
from bench.workers import WorkerProcesses
from conveyor import Client

WARMUP = 20
CONCURRENCY = 8


def _round_trips(client: Client, count: int, deadline: float) -> Moved:
    moved = Moved(0)
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        task = client.enqueue(KIND, PAYLOAD_OBJ, queue="rt")
        client.result(task.id, timeout=CALL_TIMEOUT)
        moved.latencies_ms.append((time.perf_counter() - started) * 1000)
        moved.tasks += 1
    return moved


def roundtrip(sizes: Sizes, config: RunConfig) -> list[Sample]:
    # The SDK's defaults but concurrency: one task at a time needs no prefetch.
    rt_config = RunConfig(
        **{**config.__dict__, "drain_concurrency": CONCURRENCY, "drain_prefetch": 0}
    )
    with running_brokers(config) as brokers:
        workers = WorkerProcesses(brokers.addresses[-1:], "rt", rt_config)
        workers.go()
        try:
            with Client(brokers.address, timeout=CALL_TIMEOUT) as client:
                _round_trips(client, WARMUP, deadline_in(sizes.max_seconds))  # warm both ends

                async def body() -> Moved:  # the blocking client, inside timed()'s loop
                    return _round_trips(client, sizes.roundtrip, deadline_in(sizes.max_seconds))

                sample = timed(
                    "roundtrip",
                    f"roundtrip: Client.enqueue + result(), sequential, worker concurrency "
                    f"{CONCURRENCY}{over(config)}",
                    brokers.pids,
                    body,
                    workers.pids,
                )
        finally:
            report = workers.stop()
            workers.kill()
    sample.label += f", transport {report.transport}"
    if sample.rpcs is not None and report.rpcs is not None:  # the worker's too (+ its warm-up)
        sample.rpcs += report.rpcs
    return [sample]
