"""Scenario 5: does a deep queue slow the broker down? Enqueue and lease+ack rates with a
shallow queue, then with `depth` tasks queued; RSS both ways; restart time after SIGKILL."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import grpc

from bench.common import CALL_TIMEOUT, RunConfig, pid, prefill, running_broker
from bench.measure import Sample, rss_mib
from bench.scenarios._timing import deadline_in, timed
from bench.scenarios.drain import raw_drain
from bench.scenarios.enqueue import async_client_enqueues
from bench.sizes import Sizes
from conveyor.v1 import task_service_pb2, task_service_pb2_grpc

QUEUE = "deep"


def _probes(
    broker_pid: int, address: str, sizes: Sizes, config: RunConfig, tag: str
) -> list[Sample]:
    """Enqueue `depth_probe` tasks (AsyncClient, concurrent), then lease+ack as many."""
    c, n, limit = config.enqueue_concurrency, sizes.depth_probe, sizes.max_seconds
    enq = timed(
        f"depth-enqueue-{tag}",
        f"depth: AsyncClient.enqueue, {c} concurrent, {tag} queue",
        broker_pid,
        lambda: async_client_enqueues(address, n, c, QUEUE, limit),
    )
    lease = timed(
        f"depth-lease-{tag}",
        f"depth: stub Lease(100) + batched Ack, {tag} queue",
        broker_pid,
        lambda: raw_drain(address, n, limit, QUEUE),
    )
    return [enq, lease]


async def _first_answer(address: str, task_id: str, seconds: float) -> None:
    """Retry GetTask until the restarted broker answers it (UNAVAILABLE until it serves)."""
    deadline = deadline_in(seconds)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        request = task_service_pb2.GetTaskRequest(task_id=task_id)
        while True:
            try:
                await stub.GetTask(request, timeout=CALL_TIMEOUT, wait_for_ready=True)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.01)


def depth(sizes: Sizes, config: RunConfig) -> tuple[list[Sample], dict[str, float]]:
    with running_broker(config.durability, config.broker_args) as broker:
        address = broker.address
        samples = _probes(pid(broker), address, sizes, config, "shallow")
        rss_empty, anon_empty = rss_mib(pid(broker))
        filled = asyncio.run(prefill(address, sizes.depth, QUEUE, deadline_in(sizes.max_seconds)))
        rss_deep, anon_deep = rss_mib(pid(broker))
        samples += _probes(pid(broker), address, sizes, config, "deep")
        broker.kill()  # SIGKILL: the crash path, no clean close
        started = time.perf_counter()
        broker.start()
        asyncio.run(_first_answer(address, filled.last[-1].id, sizes.max_seconds))
        restart = time.perf_counter() - started
        scrape_ms = _scrape_ms(broker.metrics_address) if broker.metrics_address else None
        rss_restart, anon_restart = rss_mib(pid(broker))
    extras = {
        "depth_tasks": float(filled.tasks),
        "prefill_rate": filled.tasks / filled.seconds,
        "restart_s": restart,
        "rss_empty_mib": rss_empty,
        "rss_deep_mib": rss_deep,
        "rss_restart_mib": rss_restart,
        "anon_empty_mib": anon_empty,
        "anon_deep_mib": anon_deep,
        "anon_restart_mib": anon_restart,
    }
    if scrape_ms is not None:
        extras["scrape_ms"] = scrape_ms
    return samples, extras


def _scrape_ms(address: str) -> float:
    """One /metrics scrape of the deep store: O(queues), whatever the depth."""
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=CALL_TIMEOUT) as response:
        text = response.read().decode()
    elapsed = (time.perf_counter() - started) * 1000
    if f'conveyor_queue_depth{{queue="{QUEUE}",state="READY"}}' not in text:
        raise RuntimeError("the scrape has no depth for the deep queue")
    return elapsed
