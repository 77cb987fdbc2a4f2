"""result() and wait() while the broker shuts down: keep waiting, never a false timeout."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conveyor import AsyncClient, Client, errors


def ack_when_reachable(address: str, queue: str) -> None:
    """Lease and ack the task; channels in one process share a connection that is
    still in its reconnect backoff for a moment after the restart."""
    deadline = time.monotonic() + 15
    with Client(address) as worker:
        while True:
            try:
                [leased] = worker.lease(queue, wait=5)
                break
            except errors.Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        worker.ack(leased, "done")


def test_result_parked_across_a_broker_restart_keeps_waiting(broker):
    with Client(broker.address) as producer:
        task = producer.enqueue("k", 1, queue="restart")
    outcome: dict[str, object] = {}

    def wait() -> None:
        with Client(broker.address) as waiter:
            try:
                outcome["result"] = waiter.result(task.id, timeout=30)
            except Exception as exc:  # reported to the test below
                outcome["error"] = exc

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.5)  # parked in GetResult
    broker.stop()
    time.sleep(2.5)  # longer than the old false timeout
    broker.start()
    ack_when_reachable(broker.address, "restart")
    thread.join(30)
    assert outcome == {"result": "done"}


def test_async_result_parked_across_a_broker_restart_keeps_waiting(broker):
    with Client(broker.address) as producer:
        task = producer.enqueue("k", 1, queue="restart-a")

    async def wait() -> object:
        async with AsyncClient(broker.address) as waiter:
            return await waiter.result(task.id, timeout=30)

    outcome: dict[str, object] = {}
    thread = threading.Thread(target=lambda: outcome.update(result=asyncio.run(wait())))
    thread.start()
    time.sleep(0.5)
    broker.stop()
    time.sleep(2.5)
    broker.start()
    ack_when_reachable(broker.address, "restart-a")
    thread.join(30)
    assert outcome == {"result": "done"}


def test_result_with_the_broker_gone_raises_unavailable_at_its_deadline(broker):
    with Client(broker.address) as client:
        task = client.enqueue("k", 1, queue="gone")
        broker.stop()
        started = time.monotonic()
        with pytest.raises(errors.Unavailable):
            client.result(task.id, timeout=3)
        assert 2.5 < time.monotonic() - started < 8
