"""TaskService over a real broker: every RPC's happy path and each status it documents."""

from __future__ import annotations

import threading
import time
import uuid

import grpc
import pytest
from google.protobuf import timestamp_pb2

from conveyor.v1 import task_pb2, task_service_pb2, worker_service_pb2
from tests.rpc.helpers import connect, enqueue, expect_status, lease, ref, seconds, spec

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def test_enqueue_returns_a_ready_task_that_get_task_finds(stubs, queue):
    task = enqueue(stubs, queue, headers={"trace": "abc"}, priority=5)
    assert len(task.id) == 26
    assert task.state == task_pb2.TASK_STATE_READY
    stored = stubs.tasks.GetTask(task_service_pb2.GetTaskRequest(task_id=task.id)).task
    assert stored.queue == queue
    assert stored.headers["trace"] == "abc"
    assert stored.priority == 5
    assert stored.payload == b'{"n": 1}'
    assert stored.lease_token == ""


def test_enqueue_with_delay_is_scheduled(stubs, queue):
    task = enqueue(stubs, queue, delay=seconds(3600))
    assert task.state == task_pb2.TASK_STATE_SCHEDULED
    assert task.run_at.seconds >= time.time() + 3500
    assert lease(stubs, queue) == []


def test_server_made_ids_are_time_ordered(stubs, queue):
    ids = [enqueue(stubs, queue).id for _ in range(5)]
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"kind": ""}, "kind"),
        ({"kind": "x" * 129}, "kind"),
        ({"queue": "bad queue"}, "queue"),
        ({"queue": "q" * 129}, "queue"),
        ({"delay": seconds(-1)}, "delay"),
        ({"priority": 101}, "priority"),
        ({"priority": -101}, "priority"),
        ({"max_attempts": 1001}, "max_attempts"),
        ({"lease_duration": seconds(-5)}, "lease_duration"),
        ({"result_retention": seconds(-5)}, "result_retention"),
        ({"id": "has space"}, "id"),
        ({"run_at": timestamp_pb2.Timestamp(seconds=1), "delay": seconds(1)}, "run_at"),
        ({"deadline": timestamp_pb2.Timestamp(seconds=1)}, "deadline"),
        ({"retry_policy": task_pb2.RetryPolicy(jitter=2.0)}, "retry_policy.jitter"),
    ],
)
def test_enqueue_rejects_bad_fields_naming_them(stubs, queue, fields, named):
    fields = dict(fields)  # the parameter is shared by the lmdb and postgres runs
    kind = fields.pop("kind", "job")
    task_queue = fields.pop("queue", queue)
    request = task_service_pb2.EnqueueRequest(task=spec(task_queue, kind, **fields))
    details = expect_status(INVALID, stubs.tasks.Enqueue, request)
    assert details.startswith(named), details


def test_enqueue_rejects_payload_over_the_limit(stubs, queue):
    request = task_service_pb2.EnqueueRequest(
        task=task_pb2.TaskSpec(queue=queue, kind="job", payload=b"x" * (1024 * 1024 + 1))
    )
    expect_status(INVALID, stubs.tasks.Enqueue, request, match="payload")


def test_enqueue_with_existing_client_id_returns_existing_task(stubs, queue):
    task_id = f"order-{uuid.uuid4().hex}"
    first = stubs.tasks.Enqueue(task_service_pb2.EnqueueRequest(task=spec(queue, id=task_id)))
    again = stubs.tasks.Enqueue(task_service_pb2.EnqueueRequest(task=spec(queue, id=task_id)))
    assert not first.duplicate
    assert again.duplicate
    assert again.task.id == task_id
    assert again.task.sequence == first.task.sequence


def test_enqueue_reject_duplicate_gives_already_exists(stubs, queue):
    enqueue(stubs, queue, unique_key="k1")
    request = task_service_pb2.EnqueueRequest(
        task=spec(queue, unique_key="k1"), reject_duplicate=True
    )
    expect_status(grpc.StatusCode.ALREADY_EXISTS, stubs.tasks.Enqueue, request)


def test_unique_key_returns_the_pending_task(stubs, queue):
    first = enqueue(stubs, queue, unique_key="report-1")
    response = stubs.tasks.Enqueue(
        task_service_pb2.EnqueueRequest(task=spec(queue, unique_key="report-1"))
    )
    assert response.duplicate
    assert response.task.id == first.id


def test_enqueue_batch_creates_all_in_order(stubs, queue):
    specs = [spec(queue, kind=f"k{i}") for i in range(10)]
    response = stubs.tasks.EnqueueBatch(task_service_pb2.EnqueueBatchRequest(tasks=specs))
    assert [r.task.kind for r in response.results] == [f"k{i}" for i in range(10)]
    assert all(not r.duplicate for r in response.results)
    assert len(lease(stubs, queue, max_tasks=100)) == 10


def test_enqueue_batch_with_one_bad_task_creates_none(stubs, queue):
    ids = [f"b-{uuid.uuid4().hex}" for _ in range(3)]
    specs = [spec(queue, id=ids[0]), spec(queue, kind="", id=ids[1]), spec(queue, id=ids[2])]
    request = task_service_pb2.EnqueueBatchRequest(tasks=specs)
    expect_status(INVALID, stubs.tasks.EnqueueBatch, request, match="tasks[1].kind")
    for task_id in ids:
        expect_status(
            grpc.StatusCode.NOT_FOUND,
            stubs.tasks.GetTask,
            task_service_pb2.GetTaskRequest(task_id=task_id),
        )


def test_enqueue_batch_reject_duplicate_creates_none(stubs, queue):
    enqueue(stubs, queue, unique_key="dup")
    fresh_id = f"f-{uuid.uuid4().hex}"
    request = task_service_pb2.EnqueueBatchRequest(
        tasks=[spec(queue, id=fresh_id), spec(queue, unique_key="dup")], reject_duplicate=True
    )
    expect_status(grpc.StatusCode.ALREADY_EXISTS, stubs.tasks.EnqueueBatch, request)
    expect_status(
        grpc.StatusCode.NOT_FOUND,
        stubs.tasks.GetTask,
        task_service_pb2.GetTaskRequest(task_id=fresh_id),
    )


def test_enqueue_batch_limits(stubs, queue):
    expect_status(
        INVALID, stubs.tasks.EnqueueBatch, task_service_pb2.EnqueueBatchRequest(), match="empty"
    )
    too_many = task_service_pb2.EnqueueBatchRequest(tasks=[spec(queue)] * 1001)
    expect_status(INVALID, stubs.tasks.EnqueueBatch, too_many, match="1000")


def test_get_task_errors(stubs):
    expect_status(INVALID, stubs.tasks.GetTask, task_service_pb2.GetTaskRequest())
    expect_status(
        grpc.StatusCode.NOT_FOUND,
        stubs.tasks.GetTask,
        task_service_pb2.GetTaskRequest(task_id="nope"),
        match="nope",
    )


def test_get_result_waits_until_the_task_finishes(stubs, queue):
    task = enqueue(stubs, queue)
    leased = lease(stubs, queue)[0]

    def ack_later() -> None:
        time.sleep(0.3)
        item = worker_service_pb2.AckItem(
            lease=ref(leased), result=task_pb2.TaskResult(data=b"42", content_type="text/plain")
        )
        stubs.workers.Ack(worker_service_pb2.AckRequest(acks=[item]))

    acker = threading.Thread(target=ack_later)
    acker.start()
    started = time.monotonic()
    response = stubs.tasks.GetResult(
        task_service_pb2.GetResultRequest(task_id=task.id, wait=seconds(10))
    )
    acker.join(10)  # its Ack may answer after GetResult: not after the channel closes
    assert response.is_final
    assert response.task.state == task_pb2.TASK_STATE_SUCCEEDED
    assert response.task.result.data == b"42"
    assert 0.2 < time.monotonic() - started < 5


def test_get_result_wait_ends_with_the_unfinished_task(stubs, queue):
    task = enqueue(stubs, queue)
    started = time.monotonic()
    response = stubs.tasks.GetResult(
        task_service_pb2.GetResultRequest(task_id=task.id, wait=seconds(0.3))
    )
    assert not response.is_final
    assert response.task.state == task_pb2.TASK_STATE_READY
    assert time.monotonic() - started >= 0.25


def test_get_result_errors(stubs):
    expect_status(
        grpc.StatusCode.NOT_FOUND,
        stubs.tasks.GetResult,
        task_service_pb2.GetResultRequest(task_id="missing", wait=seconds(1)),
    )
    expect_status(
        INVALID,
        stubs.tasks.GetResult,
        task_service_pb2.GetResultRequest(task_id="x", wait=seconds(-1)),
        match="wait",
    )
    expect_status(INVALID, stubs.tasks.GetResult, task_service_pb2.GetResultRequest())


def test_too_many_waiters_is_resource_exhausted(broker_factory):
    broker = broker_factory("--max-waiters", "1")
    stubs = connect(broker.address)
    task = enqueue(stubs, "default")
    parked = stubs.tasks.GetResult.future(
        task_service_pb2.GetResultRequest(task_id=task.id, wait=seconds(10))
    )
    time.sleep(0.3)
    expect_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        stubs.tasks.GetResult,
        task_service_pb2.GetResultRequest(task_id=task.id, wait=seconds(3)),
    )
    # A Lease that would have to wait needs a slot too.
    expect_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        stubs.workers.Lease,
        worker_service_pb2.LeaseRequest(queues=["empty"], wait=seconds(3)),
    )
    # The parked call was not disturbed: finishing its task answers it.
    (leased,) = lease(stubs, "default")  # READY tasks need no slot
    stubs.workers.Ack(
        worker_service_pb2.AckRequest(acks=[worker_service_pb2.AckItem(lease=ref(leased))])
    )
    assert parked.result(timeout=5).is_final


def test_a_stream_that_cannot_wait_ends_with_resource_exhausted(broker_factory):
    broker = broker_factory("--max-waiters", "1")
    stubs = connect(broker.address)
    task = enqueue(stubs, "default")
    parked = stubs.tasks.GetResult.future(
        task_service_pb2.GetResultRequest(task_id=task.id, wait=seconds(5))
    )
    time.sleep(0.3)
    opening = worker_service_pb2.StreamWorkRequest(
        open=worker_service_pb2.StreamWorkOpen(queues=["empty"]), credits=1
    )
    with pytest.raises(grpc.RpcError) as info:
        for _ in stubs.workers.StreamWork(iter([opening]), timeout=10):
            pass
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    parked.cancel()


def test_cancel_ready_task_is_cancelled_at_once(stubs, queue):
    task = enqueue(stubs, queue)
    response = stubs.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=task.id))
    assert response.task.state == task_pb2.TASK_STATE_CANCELLED
    assert lease(stubs, queue) == []


def test_cancel_leased_task_is_requested_then_cancelled_on_fail(stubs, queue):
    enqueue(stubs, queue)
    leased = lease(stubs, queue)[0]
    response = stubs.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=leased.id))
    assert response.task.state == task_pb2.TASK_STATE_LEASED
    assert response.task.cancel_requested
    extension = stubs.workers.ExtendLease(
        worker_service_pb2.ExtendLeaseRequest(
            leases=[worker_service_pb2.LeaseExtension(lease=ref(leased))]
        )
    )
    assert extension.results[0].cancel_requested
    failure = worker_service_pb2.FailItem(
        lease=ref(leased), error=task_pb2.TaskError(type="Cancelled", message="stopped")
    )
    stubs.workers.Fail(worker_service_pb2.FailRequest(failures=[failure]))
    final = stubs.tasks.GetTask(task_service_pb2.GetTaskRequest(task_id=leased.id)).task
    assert final.state == task_pb2.TASK_STATE_CANCELLED


def test_cancel_errors(stubs, queue):
    expect_status(INVALID, stubs.tasks.CancelTask, task_service_pb2.CancelTaskRequest())
    expect_status(
        grpc.StatusCode.NOT_FOUND,
        stubs.tasks.CancelTask,
        task_service_pb2.CancelTaskRequest(task_id="ghost"),
    )
    enqueue(stubs, queue)
    leased = lease(stubs, queue)[0]
    stubs.workers.Ack(
        worker_service_pb2.AckRequest(acks=[worker_service_pb2.AckItem(lease=ref(leased))])
    )
    expect_status(
        grpc.StatusCode.FAILED_PRECONDITION,
        stubs.tasks.CancelTask,
        task_service_pb2.CancelTaskRequest(task_id=leased.id),
        match="SUCCEEDED",
    )


@pytest.mark.lmdb_only  # --max-store-bytes caps the LMDB map (refused with --database-url)
def test_full_store_is_resource_exhausted(broker_factory):
    broker = broker_factory("--max-store-bytes", "1MiB", "--max-payload-bytes", "600KiB")
    stubs = connect(broker.address)
    payload = b"x" * (500 * 1024)
    with pytest.raises(grpc.RpcError) as info:
        for _ in range(10):
            stubs.tasks.Enqueue(
                task_service_pb2.EnqueueRequest(task=task_pb2.TaskSpec(kind="big", payload=payload))
            )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "full" in info.value.details()
    batch = task_service_pb2.EnqueueBatchRequest(tasks=[spec("default")])
    expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, stubs.tasks.EnqueueBatch, batch, match="full")
    # Reads still work, and the broker stays up.
    assert stubs.workers.Lease(worker_service_pb2.LeaseRequest(queues=["default"])).tasks


def test_calls_during_shutdown_are_unavailable(broker_factory):
    broker = broker_factory()
    stubs = connect(broker.address)
    parked = stubs.workers.Lease.future(
        worker_service_pb2.LeaseRequest(queues=["idle"], wait=seconds(30))
    )
    time.sleep(0.3)
    assert broker.process is not None
    broker.process.terminate()
    started = time.monotonic()
    assert list(parked.result(timeout=10).tasks) == []  # the long poll ends at once, empty
    assert time.monotonic() - started < 5
    with pytest.raises(grpc.RpcError) as info:
        for _ in range(200):
            enqueue(stubs, "late")
            time.sleep(0.01)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert broker.process.wait(10) == 0
