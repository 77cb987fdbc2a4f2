"""Crash tests: SIGKILL the real broker process and check what survives a restart."""

from __future__ import annotations

import random
import threading
import time

import grpc

from conveyor.v1 import task_pb2, task_service_pb2, worker_service_pb2
from tests.rpc.helpers import connect, enqueue, expect_status, lease, ref, seconds


def test_task_leased_before_a_crash_is_leased_again_after_its_lease_expires(broker):
    stubs = connect(broker.address)
    task = enqueue(stubs, "crash", kind="resize")
    [first] = lease(stubs, "crash", lease_duration=seconds(8))  # outlasts a loaded restart
    broker.kill()
    broker.start()
    stubs = connect(broker.address)
    stored = stubs.tasks.GetTask(task_service_pb2.GetTaskRequest(task_id=task.id)).task
    assert stored.state == task_pb2.TASK_STATE_LEASED  # the lease itself survived
    [second] = lease(stubs, "crash", wait=seconds(15))
    assert second.id == task.id
    assert second.attempt == 2
    assert time.time() >= first.lease_expires_at.seconds  # not redelivered early
    stale = worker_service_pb2.AckRequest(acks=[worker_service_pb2.AckItem(lease=ref(first))])
    expect_status(grpc.StatusCode.FAILED_PRECONDITION, stubs.workers.Ack, stale)
    stubs.workers.Ack(
        worker_service_pb2.AckRequest(acks=[worker_service_pb2.AckItem(lease=ref(second))])
    )


def _produce(address: str, name: str, stop: threading.Event, acknowledged: list[str]) -> None:
    """Enqueue with client-chosen ids; remember every id whose Enqueue returned OK."""
    stubs = connect(address)
    counter = 0
    while not stop.is_set():
        task_id = f"{name}-{counter}"
        counter += 1
        request = task_service_pb2.EnqueueRequest(
            task=task_pb2.TaskSpec(id=task_id, queue="crash", kind="job", payload=b"{}")
        )
        try:
            stubs.tasks.Enqueue(request, timeout=2)
        except grpc.RpcError:
            time.sleep(0.02)  # the broker is down or restarting; this id was not acknowledged
            continue
        acknowledged.append(task_id)


def test_every_acknowledged_enqueue_survives_repeated_sigkill(broker):
    rng = random.Random(7)
    stop = threading.Event()
    acknowledged: list[list[str]] = [[] for _ in range(4)]
    producers = [
        threading.Thread(target=_produce, args=(broker.address, f"p{i}", stop, acknowledged[i]))
        for i in range(4)
    ]
    for thread in producers:
        thread.start()
    try:
        for _ in range(20):
            time.sleep(rng.uniform(0.2, 0.5))
            broker.kill()
            broker.start()
    finally:
        time.sleep(0.3)
        stop.set()
        for thread in producers:
            thread.join(10)
    broker.kill()
    broker.start()
    stubs = connect(broker.address)
    ids = [task_id for produced in acknowledged for task_id in produced]
    found = 0
    for task_id in ids:
        try:
            stubs.tasks.GetTask(task_service_pb2.GetTaskRequest(task_id=task_id))
            found += 1
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
    print(f"20 SIGKILL cycles: acknowledged={len(ids)} found={found} lost={len(ids) - found}")
    assert len(ids) > 40  # the producers really ran between the kills (a loaded CI runner is slow)
    assert found == len(ids)
