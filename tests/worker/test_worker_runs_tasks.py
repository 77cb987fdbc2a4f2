"""A Worker in a thread against a real broker: results, concurrency, sync + async handlers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest

from conveyor import TaskState, task
from conveyor_worker import Worker


@pytest.mark.parametrize("transport", ["stream", "unary"])
def test_a_thousand_tasks_each_run_and_acked_once(shared_broker, client, run_worker, transport):
    queue = f"w-1000-{transport}"
    worker = Worker(
        shared_broker.address, queues=[queue], concurrency=8, poll_wait=1, transport=transport
    )
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    running = 0
    most_running = 0

    @worker.handler("double")
    def double(payload, ctx):
        nonlocal running, most_running
        with lock:
            calls[ctx.task_id] += 1
            running += 1
            most_running = max(most_running, running)
        try:
            return {"n": payload["n"] * 2}
        finally:
            with lock:
                running -= 1

    tasks = client.enqueue_many([("double", {"n": i}) for i in range(1000)], queue=queue)
    with run_worker(worker):
        for t in tasks:
            assert client.result(t.id, timeout=60) == {"n": t.payload["n"] * 2}
    assert set(calls) == {t.id for t in tasks} and set(calls.values()) == {1}
    assert most_running <= 8
    for t in tasks[::50]:
        got = client.get_task(t.id)
        assert got.state is TaskState.SUCCEEDED and got.attempt == 1


def test_sync_and_async_handlers_in_one_worker(shared_broker, client, run_worker):
    worker = Worker(shared_broker.address, queues=["w-mixed"], concurrency=4, poll_wait=1)
    loops = []

    @worker.handler("sync.kind")
    def sync_kind(payload, ctx):
        return ["sync", threading.current_thread().name.startswith("conveyor-handler")]

    @worker.handler("async.kind")
    async def async_kind(payload, ctx):
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0.01)
        return ["async", ctx.attempt]

    a = client.enqueue("sync.kind", None, queue="w-mixed")
    b = client.enqueue("async.kind", None, queue="w-mixed")
    with run_worker(worker):
        assert client.result(a.id, timeout=10) == ["sync", True]
        assert client.result(b.id, timeout=10) == ["async", 1]
    assert loops


def test_async_handlers_run_concurrently_on_the_loop(shared_broker, client, run_worker):
    worker = Worker(shared_broker.address, queues=["w-async"], concurrency=20, poll_wait=1)

    @worker.handler("sleepy")
    async def sleepy(payload):
        await asyncio.sleep(0.5)
        return payload

    tasks = client.enqueue_many([("sleepy", i) for i in range(20)], queue="w-async")
    started = time.monotonic()
    with run_worker(worker):
        assert [client.result(t.id, timeout=10) for t in tasks] == list(range(20))
    assert time.monotonic() - started < 6.0  # one at a time would take 10 s


@pytest.mark.parametrize("transport", ["stream", "unary"])
def test_only_idle_slots_are_leased(shared_broker, client, run_worker, transport):
    queue = f"w-slots-{transport}"
    worker = Worker(
        shared_broker.address,
        queues=[queue],
        concurrency=2,
        prefetch=0,  # the default leases ahead (test_worker_prefetch.py)
        poll_wait=1,
        transport=transport,
    )
    release = threading.Event()

    @worker.handler("block")
    def block(payload, ctx):
        release.wait(10)

    tasks = client.enqueue_many([("block", i) for i in range(6)], queue=queue)
    with run_worker(worker):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = Counter(client.get_task(t.id).state for t in tasks)
            if states[TaskState.LEASED] == 2:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        states = Counter(client.get_task(t.id).state for t in tasks)
        assert states == {TaskState.LEASED: 2, TaskState.READY: 4}
        release.set()
        for t in tasks:
            client.result(t.id, timeout=10)


def test_long_handler_keeps_its_lease(shared_broker, client, run_worker):
    worker = Worker(
        shared_broker.address,
        queues=["w-keep"],
        concurrency=1,
        poll_wait=1,
        lease_duration=timedelta(seconds=1),
    )

    @worker.handler("slow")
    def slow(payload, ctx):
        time.sleep(2.5)
        return ctx.attempt

    t = client.enqueue("slow", None, queue="w-keep")
    with run_worker(worker):
        assert client.result(t.id, timeout=15) == 1


def test_handler_enqueue_and_task_decorator_name_the_function(shared_broker, client, run_worker):
    worker = Worker(shared_broker.address, queues=["w-produce"], concurrency=2, poll_wait=1)

    @worker.handler("w.add")
    def add(payload, ctx):
        return payload["a"] + payload["b"]

    @task("w.neg", queue="w-produce")
    def neg(payload):
        return -payload

    worker.register(neg)
    assert add({"a": 1, "b": 2}, None) == 3
    first = add.enqueue({"a": 2, "b": 3})
    second = neg.enqueue(5, client=client)
    assert first.queue == "w-produce" and first.kind == "w.add"
    with run_worker(worker):
        assert client.result(first.id, timeout=10) == 5
        assert client.result(second.id, timeout=10) == -5
    worker.producer_client().close()


def test_inline_sync_handlers_run_on_the_event_loop(shared_broker, client, run_worker):
    worker = Worker(shared_broker.address, queues=["w-inline"], concurrency=4, poll_wait=1)

    @worker.handler("inline.kind", inline=True)
    def inline_kind(payload, ctx):
        if payload == "boom":
            raise ValueError("inline failure")
        return [payload, threading.current_thread().name.startswith("conveyor-handler")]

    with pytest.raises(ValueError, match="sync handlers"):

        @worker.handler("inline.async", inline=True)
        async def inline_async(payload):
            return payload

    tasks = client.enqueue_many([("inline.kind", i) for i in range(200)], queue="w-inline")
    bad = client.enqueue("inline.kind", "boom", queue="w-inline", max_attempts=1)
    with run_worker(worker):
        assert [client.result(t.id, timeout=10) for t in tasks] == [[i, False] for i in range(200)]
        assert client.wait(bad.id, timeout=10).last_error.type == "ValueError"


def test_each_task_gets_one_structured_log_line(shared_broker, client, run_worker, caplog):
    worker = Worker(shared_broker.address, queues=["w-logs"], concurrency=2, poll_wait=1)

    @worker.handler("logged.ok")
    def ok(payload, ctx):
        return None

    @worker.handler("logged.bad", non_retryable=[ValueError])
    def bad(payload, ctx):
        raise ValueError("nope")

    good = client.enqueue("logged.ok", None, queue="w-logs")
    failing = client.enqueue("logged.bad", None, queue="w-logs")
    with caplog.at_level("INFO", logger="conveyor.worker.task"), run_worker(worker):
        client.wait(good.id, timeout=30)
        client.wait(failing.id, timeout=30)
        deadline = time.monotonic() + 5
        while len(caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    task_records = [r for r in caplog.records if r.name == "conveyor.worker.task"]
    assert Counter(r.task_id for r in task_records) == {good.id: 1, failing.id: 1}
    records = {r.task_id: r for r in task_records}
    assert records[good.id].levelname == "INFO"
    assert records[good.id].outcome == "succeeded"
    assert records[good.id].kind == "logged.ok" and records[good.id].attempt == 1
    assert records[good.id].duration >= 0
    assert records[failing.id].levelname == "WARNING"
    assert "ValueError" in records[failing.id].getMessage()
