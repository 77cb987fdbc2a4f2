"""TaskMetrics through the engine (in process: memory store, fake clock): each outcome is
counted once, where it happens, with capped labels; histograms bucket as Prometheus does."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.model import Ack, Failure, LeaseRef, QueueOrder, TaskResult, TaskSpec
from conveyor_server.service.engine import Engine
from conveyor_server.service.metrics.histogram import OTHER, Histogram, LabelCap
from conveyor_server.service.metrics.tasks import TaskMetrics
from conveyor_server.store.memory import MemoryStore


def run(test: Callable[[Engine, FakeClock, TaskMetrics], Awaitable[None]]) -> TaskMetrics:
    async def main() -> TaskMetrics:
        clock = FakeClock()
        metrics = TaskMetrics(max_queues=3, max_kinds=2)
        engine = Engine(Broker(MemoryStore(), clock, rng=random.Random(3)), metrics=metrics)
        await engine.start()
        try:
            await test(engine, clock, metrics)
        finally:
            await engine.stop()
        return metrics

    return asyncio.run(main())


def counted(metrics: TaskMetrics, outcome: str, **labels: str) -> int:
    return sum(
        n
        for (o, queue, kind), n in metrics.counts.items()
        if o == outcome and labels.get("queue", queue) == queue and labels.get("kind", kind) == kind
    )


async def lease(engine: Engine, queue: str, n: int, **kw: Any) -> list[Any]:
    return await engine.lease([queue], n, kw.get("lease_duration"), "w", QueueOrder.STRICT, 0)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for the engine's timer to do something."""
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met within 2 s")


def test_a_lease_that_runs_out_counts_as_lease_expired_and_retried_then_dead() -> None:
    async def scenario(engine: Engine, clock: FakeClock, metrics: TaskMetrics) -> None:
        await engine.enqueue(TaskSpec(kind="job", queue="q", max_attempts=2), False)
        await lease(engine, "q", 1, lease_duration=5.0)
        clock.advance(6)
        engine.timer.poke(clock.now())
        await until(lambda: counted(metrics, "lease_expired") == 1)
        assert counted(metrics, "retried") == 1 and counted(metrics, "dead") == 0
        await lease(engine, "q", 1, lease_duration=5.0)
        clock.advance(6)
        engine.timer.poke(clock.now())
        await until(lambda: counted(metrics, "lease_expired") == 2)
        assert counted(metrics, "dead") == 1 and counted(metrics, "retried") == 1
        assert counted(metrics, "leased") == 2 and counted(metrics, "failed") == 0
        assert sum(metrics.turnaround["q"].counts) == 1  # only the final one

    run(scenario)


def test_fail_counts_retried_dead_and_run_time() -> None:
    async def scenario(engine: Engine, clock: FakeClock, metrics: TaskMetrics) -> None:
        await engine.enqueue_batch([TaskSpec(kind="job", queue="q")] * 2, False)
        first, second = await lease(engine, "q", 2)
        clock.advance(2.0)
        await engine.fail(
            [
                Failure(LeaseRef(first.id, first.lease_token), "E", "again"),
                Failure(LeaseRef(second.id, second.lease_token), "E", "no", is_retryable=False),
            ]
        )
        assert counted(metrics, "failed") == 2
        assert counted(metrics, "retried") == 1 and counted(metrics, "dead") == 1
        run_time = metrics.run_time["q"]
        assert sum(run_time.counts) == 2 and run_time.sum == 4.0

    run(scenario)


def test_cancel_counts_once_however_often_it_is_asked() -> None:
    async def scenario(engine: Engine, clock: FakeClock, metrics: TaskMetrics) -> None:
        task = (await engine.enqueue(TaskSpec(kind="job", queue="q"), False)).task
        await engine.cancel(task.id)
        await engine.cancel(task.id)
        assert counted(metrics, "cancelled") == 1

    run(scenario)


def test_a_deadline_that_passes_counts_as_expired() -> None:
    async def scenario(engine: Engine, clock: FakeClock, metrics: TaskMetrics) -> None:
        spec = TaskSpec(kind="job", queue="q", deadline=clock.now() + 1)
        await engine.enqueue(spec, False)
        clock.advance(2)
        engine.timer.poke(clock.now())
        await until(lambda: counted(metrics, "expired") == 1)

    run(scenario)


def test_a_duplicate_is_not_counted_and_a_handover_counts_as_leased() -> None:
    async def scenario(engine: Engine, clock: FakeClock, metrics: TaskMetrics) -> None:
        await engine.enqueue(TaskSpec(kind="job", queue="q", id="same"), False)
        await engine.enqueue(TaskSpec(kind="job", queue="q", id="same"), False)
        assert counted(metrics, "enqueued") == 1
        parked = asyncio.ensure_future(
            engine.lease(["p"], 1, None, "w", QueueOrder.STRICT, wait=5.0)
        )
        await until(lambda: engine.waiters.parked == 1)
        await engine.enqueue(TaskSpec(kind="job", queue="p"), False)
        (task,) = await parked
        await engine.ack([Ack(LeaseRef(task.id, task.lease_token), TaskResult(b""))])
        assert counted(metrics, "leased", queue="p") == 1
        assert counted(metrics, "acked", queue="p") == 1
        assert metrics.workers_seen() == 1

    run(scenario)


def test_queues_and_kinds_past_their_cap_are_counted_as_other() -> None:
    async def scenario(engine: Engine, clock: FakeClock, metrics: TaskMetrics) -> None:
        specs = [TaskSpec(kind=f"k{i % 4}", queue=f"q{i}") for i in range(6)]
        await engine.enqueue_batch(specs, False)
        await lease(engine, "q5", 1)

    metrics = run(scenario)
    queues = {queue for (_, queue, _) in metrics.counts}
    kinds = {kind for (_, _, kind) in metrics.counts}
    assert queues == {"q0", "q1", "q2", OTHER} and kinds == {"k0", "k1", OTHER}
    assert counted(metrics, "enqueued") == 6
    assert counted(metrics, "enqueued", queue=OTHER) == 3
    assert set(metrics.queue_wait) == {OTHER}


def test_label_cap_admits_the_first_values_only() -> None:
    cap = LabelCap(2)
    assert [cap(v) for v in ("a", "b", "c", "a", OTHER, "d")] == [
        "a",
        "b",
        OTHER,
        "a",
        OTHER,
        OTHER,
    ]


def test_histogram_buckets_are_upper_bounds_inclusive_and_cumulative() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    buckets, total = histogram.cumulative()
    assert buckets == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert total == 8.65
