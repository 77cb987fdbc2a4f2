"""Answers never exceed what gRPC can send or the caller can receive: a limit is met before
the commit, never after it (where it used to burn attempts or duplicate tasks)."""

from __future__ import annotations

import grpc
import pytest

from conveyor.v1 import (
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from tests.rpc.helpers import Feed, Stubs

MIB = 1 << 20
#: The broker's gRPC message limit, both ways.
MAX_MESSAGE = 64 * MIB
TS = task_service_pb2
WS = worker_service_pb2


def _big_stubs(address: str) -> Stubs:
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    channel = grpc.insecure_channel(address, options=options)
    return Stubs(
        channel,
        task_service_pb2_grpc.TaskServiceStub(channel),
        worker_service_pb2_grpc.WorkerServiceStub(channel),
    )


def _enqueue_big(stubs: Stubs, queue: str, count: int, size: int) -> set[str]:
    ids: set[str] = set()
    for start in range(0, count, 8):
        specs = [
            task_pb2.TaskSpec(queue=queue, kind="big", payload=bytes([i % 256]) * size)
            for i in range(start, min(count, start + 8))
        ]
        response = stubs.tasks.EnqueueBatch(TS.EnqueueBatchRequest(tasks=specs), timeout=60)
        ids |= {r.task.id for r in response.results}
    return ids


def test_a_lease_larger_than_one_message_hands_out_what_fits(broker):
    stubs = _big_stubs(broker.address)
    ids = _enqueue_big(stubs, "big", 70, MIB)
    leased: list[task_pb2.Task] = []
    calls = 0
    while len(leased) < 70 and calls < 10:
        response = stubs.workers.Lease(WS.LeaseRequest(queues=["big"], max_tasks=100), timeout=60)
        assert response.tasks, "a Lease with READY tasks must hand out at least one"
        assert response.ByteSize() <= MAX_MESSAGE
        leased += response.tasks
        calls += 1
    assert {t.id for t in leased} == ids
    assert all(t.attempt == 1 and len(t.payload) == MIB for t in leased)
    assert calls >= 2  # it did not all fit in one answer


def test_a_stream_pushes_large_tasks_in_messages_that_fit(broker):
    stubs = _big_stubs(broker.address)
    ids = _enqueue_big(stubs, "big-stream", 70, MIB)
    opening = WS.StreamWorkRequest(open=WS.StreamWorkOpen(queues=["big-stream"]), credits=100)
    got: list[task_pb2.Task] = []
    requests = Feed(opening)
    responses = stubs.workers.StreamWork(iter(requests), timeout=60)
    try:
        for response in responses:
            got += response.tasks
            if len(got) >= 70:
                break
    finally:
        requests.close()
        responses.cancel()
    assert {t.id for t in got} == ids
    assert all(t.attempt == 1 for t in got)


def test_an_enqueue_batch_at_the_request_limit_is_answered(broker):
    """The answer holds no payloads: it is small whatever the request's size."""
    stubs = _big_stubs(broker.address)
    count = 70
    specs = [
        task_pb2.TaskSpec(queue="near-limit", kind="k", payload=b"x" * (MAX_MESSAGE // count - 64))
        for _ in range(count)
    ]
    request = TS.EnqueueBatchRequest(tasks=specs)
    # Pad the last task up to a few hundred bytes short of the limit.
    specs[-1].payload += b"x" * (MAX_MESSAGE - 512 - request.ByteSize())
    request = TS.EnqueueBatchRequest(tasks=specs)
    assert MAX_MESSAGE - 1024 < request.ByteSize() <= MAX_MESSAGE
    response = stubs.tasks.EnqueueBatch(request, timeout=60)
    assert len(response.results) == count
    assert response.ByteSize() < 64 * 1024
    assert all(not r.task.payload for r in response.results)


def test_enqueue_answers_fit_a_default_client_receive_limit(broker):
    """A full batch of duplicates of finished tasks with large results still answers small."""
    stubs = _big_stubs(broker.address)
    spec = task_pb2.TaskSpec(queue="dups", kind="k", id="dup-1", payload=b"p" * MIB)
    stubs.tasks.Enqueue(TS.EnqueueRequest(task=spec), timeout=30)
    [task] = stubs.workers.Lease(WS.LeaseRequest(queues=["dups"]), timeout=30).tasks
    ack = WS.AckItem(
        lease=WS.LeaseRef(task_id=task.id, lease_token=task.lease_token),
        result=task_pb2.TaskResult(data=b"r" * MIB),
    )
    stubs.workers.Ack(WS.AckRequest(acks=[ack]), timeout=30)
    with grpc.insecure_channel(broker.address) as channel:  # default 4 MiB receive limit
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        batch = TS.EnqueueBatchRequest(
            tasks=[task_pb2.TaskSpec(queue="dups", kind="k", id="dup-1")] * 1000
        )
        response = tasks.EnqueueBatch(batch, timeout=30)
    assert all(
        r.duplicate and r.task.state == task_pb2.TASK_STATE_SUCCEEDED for r in response.results
    )


@pytest.mark.parametrize("payload_limit", ["70MiB", "63MiB"])
def test_a_payload_limit_that_cannot_fit_one_message_refuses_to_start(
    broker_factory, payload_limit
):
    with pytest.raises(RuntimeError) as info:
        broker_factory("--max-payload-bytes", payload_limit)
    assert "--max-payload-bytes" in str(info.value)
    assert "Traceback" not in str(info.value)
