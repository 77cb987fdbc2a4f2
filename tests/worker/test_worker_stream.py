"""The Worker on StreamWork: credits track idle slots, reconnect after a broker crash, fallback."""

from __future__ import annotations

import threading
import time
from collections import Counter

from conveyor import AsyncClient, Client, TaskState
from conveyor.errors import Unimplemented
from conveyor_worker import Worker


def test_credits_never_exceed_idle_slots(shared_broker, client, run_worker):
    worker = Worker(
        shared_broker.address,
        queues=["st-credits"],
        concurrency=2,
        prefetch=0,  # the default leases ahead (test_worker_prefetch.py)
        poll_wait=1,
        transport="stream",
    )

    finished: set[str] = set()

    @worker.handler("slow")
    def slow(payload, ctx):
        time.sleep(0.15)
        finished.add(ctx.task_id)

    tasks = client.enqueue_many([("slow", i) for i in range(10)], queue="st-credits")
    most_held = 0
    with run_worker(worker):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            leased = {t.id for t in tasks if client.get_task(t.id).state is TaskState.LEASED}
            # Taken after the reads: a task LEASED when read and not finished by now is
            # held by the worker now (running or waiting). A finished task stays LEASED
            # until its ack commits, which is not a lease the worker holds.
            most_held = max(most_held, len(leased - set(finished)))
            if len(finished) == len(tasks):
                break
        for t in tasks:
            client.result(t.id, timeout=10)
    assert 1 <= most_held <= 2


def test_reconnects_after_a_broker_crash_and_finishes_every_task(broker, run_worker):
    """SIGKILL the broker mid-drain and start it again on the same port and data."""
    ran: Counter[str] = Counter()
    lock = threading.Lock()
    slow_started = threading.Event()
    worker = Worker(
        broker.address,
        queues=["st-crash"],
        concurrency=4,
        poll_wait=1,
        lease_duration=5,
        heartbeat=0.5,
        transport="stream",
    )

    @worker.handler("step")
    def step(payload, ctx):
        with lock:
            ran[ctx.task_id] += 1
        time.sleep(0.01)
        return payload

    @worker.handler("across")
    def across(payload, ctx):
        slow_started.set()
        time.sleep(2.5)  # runs while the broker is down; its ack goes on the new stream
        return {"attempt": ctx.attempt}

    with Client(broker.address) as client:
        slow = client.enqueue("across", None, queue="st-crash")
        tasks = client.enqueue_many([("step", i) for i in range(300)], queue="st-crash")
    with run_worker(worker):
        assert slow_started.wait(10)
        deadline = time.monotonic() + 10
        while sum(ran.values()) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        broker.kill()
        time.sleep(0.3)
        broker.start()
        with Client(broker.address) as client:
            assert client.result(slow.id, timeout=30) == {"attempt": 1}
            for t in tasks:
                assert client.result(t.id, timeout=30) == t.payload
    assert set(ran) == {t.id for t in tasks}  # every task ran; some twice (leases lost)


def test_a_stream_broken_during_shutdown_still_carries_heartbeats_and_the_last_ack(
    broker, run_worker
):
    """The broker restarts just as the worker begins its graceful stop: the handler still
    running keeps its lease (heartbeats go on) and its ack lands (attempt 1, not rerun)."""
    started = threading.Event()
    worker = Worker(
        broker.address,
        queues=["st-grace"],
        concurrency=1,
        lease_duration=4,  # longer than the outage (restart + gRPC's reconnect backoff)
        heartbeat=0.3,
        grace_period=20,
        transport="stream",
    )

    @worker.handler("long")
    def long(payload, ctx):
        started.set()
        time.sleep(7)  # well past the lease: it lives on heartbeats across the restart
        return "done"

    with Client(broker.address) as client:
        task = client.enqueue("long", None, queue="st-grace")
    with run_worker(worker):
        assert started.wait(10)
        broker.kill()
        worker.stop()  # the stream is broken now: shutdown must reopen it, not give up
        time.sleep(0.3)
        broker.start()
    with Client(broker.address) as client:
        assert client.result(task.id, timeout=10) == "done"
        assert client.get_task(task.id).attempt == 1


def test_falls_back_to_unary_calls_when_the_broker_has_no_stream(
    shared_broker, client, run_worker, monkeypatch
):
    class OldBrokerStream:
        def __aiter__(self):
            return self

        async def __anext__(self):
            raise Unimplemented("Method not found: StreamWork")

        def cancel(self) -> None:
            pass

    monkeypatch.setattr(AsyncClient, "work_stream", lambda self, *a, **k: OldBrokerStream())
    worker = Worker(shared_broker.address, queues=["st-fallback"], poll_wait=1)

    @worker.handler("k")
    def k(payload, ctx):
        return payload + 1

    tasks = client.enqueue_many([("k", i) for i in range(20)], queue="st-fallback")
    with run_worker(worker):
        assert [client.result(t.id, timeout=10) for t in tasks] == list(range(1, 21))


def test_stop_releases_tasks_pushed_but_not_started(shared_broker, client, run_worker):
    worker = Worker(
        shared_broker.address,
        queues=["st-release"],
        concurrency=1,
        prefetch=3,
        poll_wait=1,
        lease_duration=60,
        transport="stream",
    )
    started = threading.Event()
    may_finish = threading.Event()

    @worker.handler("hold")
    def hold(payload, ctx):
        started.set()
        may_finish.wait(10)  # runs until the stop has begun, however slow the machine
        return "done"

    tasks = client.enqueue_many([("hold", i) for i in range(4)], queue="st-release")
    with run_worker(worker):
        assert started.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # one running, three waiting in the buffer
            states = Counter(client.get_task(t.id).state for t in tasks)
            if states[TaskState.LEASED] == 4:
                break
            time.sleep(0.05)
        worker.stop()  # the three waiting are released now; then the running one may end
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = Counter(client.get_task(t.id).state for t in tasks)
            if states[TaskState.READY] == 3:
                break
            time.sleep(0.05)
        may_finish.set()
    states = [client.get_task(t.id) for t in tasks]
    assert Counter(s.state for s in states) == {TaskState.SUCCEEDED: 1, TaskState.READY: 3}
    assert all(s.attempt == 0 for s in states if s.state is TaskState.READY)
