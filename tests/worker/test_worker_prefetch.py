"""Prefetch by default: tasks leased ahead of the idle slots wait in a buffer with their
leases kept alive, run exactly once, and are released (not left to expire) on shutdown."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from conveyor import Client, TaskState
from conveyor_worker import Worker
from conveyor_worker._worker import default_prefetch


def _states(client: Client, tasks) -> Counter:
    return Counter(client.get_task(t.id).state for t in tasks)


def _wait_for(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_default_prefetch_scales_with_concurrency_and_explicit_values_win() -> None:
    assert Worker().prefetch == default_prefetch(8) == 512
    assert Worker(concurrency=1).prefetch == 64
    assert Worker(concurrency=512).prefetch == 512  # capped
    assert Worker(concurrency=4, prefetch=0).prefetch == 0
    assert Worker(concurrency=4, prefetch=3).prefetch == 3
    worker = Worker(concurrency=2)
    worker.concurrency = 4  # e.g. `conveyor worker --concurrency 4`
    assert worker.prefetch == 256
    with pytest.raises(ValueError, match="prefetch"):
        Worker(prefetch=-1)


def _holding_worker(address: str, queue: str, transport: str, **options):
    worker = Worker(
        address, queues=[queue], concurrency=1, poll_wait=1, transport=transport, **options
    )
    started = threading.Event()
    may_finish = threading.Event()
    runs: Counter = Counter()
    attempts: list[int] = []

    @worker.handler("hold")
    def hold(payload, ctx):
        runs[ctx.task.id] += 1
        attempts.append(ctx.attempt)
        started.set()
        if payload == 0:
            may_finish.wait(10)
        return payload

    return worker, started, may_finish, runs, attempts


@pytest.mark.parametrize("transport", ["stream", "unary"])
def test_default_worker_leases_ahead_into_a_buffer(shared_broker, client, run_worker, transport):
    queue = f"pf-buffer-{transport}"
    worker, started, may_finish, runs, _ = _holding_worker(shared_broker.address, queue, transport)
    held = 1 + default_prefetch(1)  # one running, the rest leased into the buffer
    tasks = client.enqueue_many([("hold", i) for i in range(held + 3)], queue=queue)
    with run_worker(worker):
        assert started.wait(10)
        assert _wait_for(lambda: _states(client, tasks)[TaskState.LEASED] == held)
        time.sleep(0.3)
        assert _states(client, tasks) == {TaskState.LEASED: held, TaskState.READY: 3}
        may_finish.set()
        assert [client.result(t.id, timeout=10) for t in tasks] == list(range(held + 3))
    assert set(runs.values()) == {1} and len(runs) == held + 3


@pytest.mark.parametrize("transport", ["stream", "unary"])
def test_prefetch_zero_leases_only_for_idle_slots(shared_broker, client, run_worker, transport):
    queue = f"pf-zero-{transport}"
    worker, started, may_finish, _, _ = _holding_worker(
        shared_broker.address, queue, transport, prefetch=0
    )
    tasks = client.enqueue_many([("hold", i) for i in range(5)], queue=queue)
    with run_worker(worker):
        assert started.wait(10)
        time.sleep(0.5)
        assert _states(client, tasks) == {TaskState.LEASED: 1, TaskState.READY: 4}
        may_finish.set()
        assert [client.result(t.id, timeout=10) for t in tasks] == list(range(5))


@pytest.mark.parametrize("transport", ["stream", "unary"])
def test_buffered_leases_are_extended_and_each_task_runs_once(
    broker_factory, run_worker, transport
):
    # 1 s leases: the buffered tasks wait 3 s behind the first, three lease lengths.
    broker = broker_factory("--default-lease-duration", "1s")
    queue = "pf-extend"
    worker, started, may_finish, runs, attempts = _holding_worker(broker.address, queue, transport)
    with Client(broker.address) as client:
        tasks = client.enqueue_many([("hold", i) for i in range(6)], queue=queue)
        with run_worker(worker):
            assert started.wait(10)
            assert _wait_for(lambda: _states(client, tasks)[TaskState.LEASED] == 6)
            tokens = {t.id: client.get_task(t.id).lease_expires_at for t in tasks}
            time.sleep(3.0)
            after = {t.id: client.get_task(t.id) for t in tasks}
            assert all(s.state is TaskState.LEASED and s.attempt == 1 for s in after.values())
            assert all(after[i].lease_expires_at > tokens[i] for i in tokens)  # extended
            may_finish.set()
            assert [client.result(t.id, timeout=10) for t in tasks] == list(range(6))
        final = [client.get_task(t.id) for t in tasks]
    assert all(s.state is TaskState.SUCCEEDED and s.attempt == 1 for s in final)
    assert runs == Counter({t.id: 1 for t in tasks}) and attempts == [1] * 6


@pytest.mark.parametrize("transport", ["stream", "unary"])
def test_stop_releases_buffered_tasks_at_once(broker_factory, run_worker, transport):
    # 60 s leases: a task READY within seconds of the stop was released, not expired.
    broker = broker_factory("--default-lease-duration", "60s")
    queue = "pf-release"
    worker, started, may_finish, runs, _ = _holding_worker(broker.address, queue, transport)
    with Client(broker.address) as client:
        tasks = client.enqueue_many([("hold", i) for i in range(5)], queue=queue)
        with run_worker(worker):
            assert started.wait(10)
            assert _wait_for(lambda: _states(client, tasks)[TaskState.LEASED] == 5)
            worker.stop()  # the four buffered are released now; then the running one ends
            assert _wait_for(lambda: _states(client, tasks)[TaskState.READY] == 4, 5)
            may_finish.set()
        final = [client.get_task(t.id) for t in tasks]
    assert Counter(s.state for s in final) == {TaskState.SUCCEEDED: 1, TaskState.READY: 4}
    assert all(s.attempt == 0 for s in final if s.state is TaskState.READY)
    assert list(runs.values()) == [1]
