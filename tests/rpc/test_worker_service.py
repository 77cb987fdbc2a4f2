"""WorkerService over a real broker: every RPC's happy path and each status it documents."""

from __future__ import annotations

import threading
import time

import grpc

from conveyor.v1 import task_pb2, task_service_pb2, worker_service_pb2
from tests.rpc.helpers import enqueue, expect_status, lease, ref, seconds

INVALID = grpc.StatusCode.INVALID_ARGUMENT
STALE = grpc.StatusCode.FAILED_PRECONDITION
WS = worker_service_pb2


def get(stubs, task_id: str) -> task_pb2.Task:
    return stubs.tasks.GetTask(task_service_pb2.GetTaskRequest(task_id=task_id)).task


def ack_request(*tasks: task_pb2.Task, token: str | None = None) -> WS.AckRequest:
    return WS.AckRequest(
        acks=[
            WS.AckItem(lease=ref(t, token), result=task_pb2.TaskResult(data=b"done")) for t in tasks
        ]
    )


def test_lease_hands_out_tasks_with_token_and_expiry(stubs, queue):
    enqueue(stubs, queue)
    before = time.time()
    [task] = lease(stubs, queue, lease_duration=seconds(60), worker_id="w1")
    assert task.state == task_pb2.TASK_STATE_LEASED
    assert task.attempt == 1
    assert task.lease_token
    assert task.worker_id == "w1"
    assert before + 55 < task.lease_expires_at.seconds < before + 65
    assert get(stubs, task.id).lease_token == ""  # the token is not shown to others


def test_lease_orders_by_priority_then_enqueue_order(stubs, queue):
    low = enqueue(stubs, queue, priority=-5)
    first = enqueue(stubs, queue)
    urgent = enqueue(stubs, queue, priority=9)
    second = enqueue(stubs, queue)
    leased = [t.id for t in lease(stubs, queue, max_tasks=10)]
    assert leased == [urgent.id, first.id, second.id, low.id]


def test_lease_takes_queues_in_the_order_named(stubs, queue):
    other = queue + "-b"
    in_b = enqueue(stubs, other)
    in_a = enqueue(stubs, queue)
    request = WS.LeaseRequest(queues=[other, queue], max_tasks=1)
    assert stubs.workers.Lease(request).tasks[0].id == in_b.id
    assert stubs.workers.Lease(request).tasks[0].id == in_a.id


def test_lease_with_wait_returns_when_a_task_arrives(stubs, queue):
    producer = threading.Timer(0.3, lambda: enqueue(stubs, queue))
    producer.start()
    started = time.monotonic()
    tasks = lease(stubs, queue, wait=seconds(10))
    assert len(tasks) == 1
    assert time.monotonic() - started < 5
    producer.join(10)  # its Enqueue may answer after the Lease: not after the channel closes


def test_lease_wait_ends_empty_not_with_an_error(stubs, queue):
    started = time.monotonic()
    assert lease(stubs, queue, wait=seconds(0.3)) == []
    assert time.monotonic() - started >= 0.25


def test_lease_rejects_bad_requests(stubs, queue):
    cases = [
        (WS.LeaseRequest(), "queues"),
        (WS.LeaseRequest(queues=["bad name"]), "queues[0]"),
        (WS.LeaseRequest(queues=[queue], wait=seconds(-1)), "wait"),
        (WS.LeaseRequest(queues=[queue], lease_duration=seconds(-1)), "lease_duration"),
        (WS.LeaseRequest(queues=[queue], queue_order=99), "queue_order"),  # type: ignore[arg-type]
        (WS.LeaseRequest(queues=[queue], max_tasks=1001), "max_tasks"),
    ]
    for request, named in cases:
        expect_status(INVALID, stubs.workers.Lease, request, match=named)


def test_expired_lease_is_redelivered_and_old_token_rejected(stubs, queue):
    enqueue(stubs, queue)
    [first] = lease(stubs, queue, lease_duration=seconds(0.3))
    [second] = lease(stubs, queue, wait=seconds(5))
    assert second.id == first.id
    assert second.attempt == 2
    assert second.lease_token != first.lease_token
    assert get(stubs, first.id).last_error.message == "lease expired"
    expect_status(STALE, stubs.workers.Ack, ack_request(first))
    stubs.workers.Ack(ack_request(second))
    assert get(stubs, first.id).state == task_pb2.TASK_STATE_SUCCEEDED


def test_extend_lease_moves_the_expiry(stubs, queue):
    enqueue(stubs, queue)
    [task] = lease(stubs, queue, lease_duration=seconds(5))
    response = stubs.workers.ExtendLease(
        WS.ExtendLeaseRequest(
            leases=[WS.LeaseExtension(lease=ref(task), lease_duration=seconds(120))]
        )
    )
    [result] = response.results
    assert result.outcome.code == 0
    assert result.lease_expires_at.seconds > task.lease_expires_at.seconds + 100
    assert not result.cancel_requested


def test_extend_lease_errors(stubs, queue):
    enqueue(stubs, queue)
    [task] = lease(stubs, queue)
    bad_token = WS.ExtendLeaseRequest(leases=[WS.LeaseExtension(lease=ref(task, "stale"))])
    expect_status(STALE, stubs.workers.ExtendLease, bad_token)
    unknown = WS.ExtendLeaseRequest(
        leases=[WS.LeaseExtension(lease=WS.LeaseRef(task_id="nope", lease_token="t"))]
    )
    expect_status(grpc.StatusCode.NOT_FOUND, stubs.workers.ExtendLease, unknown)
    negative = WS.ExtendLeaseRequest(
        leases=[WS.LeaseExtension(lease=ref(task), lease_duration=seconds(-1))]
    )
    expect_status(INVALID, stubs.workers.ExtendLease, negative, match="lease_duration")
    expect_status(INVALID, stubs.workers.ExtendLease, WS.ExtendLeaseRequest())


def test_batched_calls_report_each_item(stubs, queue):
    for _ in range(3):
        enqueue(stubs, queue)
    a, b, c = lease(stubs, queue, max_tasks=3)
    request = WS.AckRequest(
        acks=[
            WS.AckItem(lease=ref(a)),
            WS.AckItem(lease=ref(b, "stale")),
            WS.AckItem(lease=WS.LeaseRef(task_id="ghost", lease_token="x")),
            WS.AckItem(lease=ref(c)),
        ]
    )
    outcomes = stubs.workers.Ack(request).outcomes
    assert [o.code for o in outcomes] == [0, STALE.value[0], grpc.StatusCode.NOT_FOUND.value[0], 0]
    assert outcomes[1].message
    assert get(stubs, a.id).state == task_pb2.TASK_STATE_SUCCEEDED
    assert get(stubs, b.id).state == task_pb2.TASK_STATE_LEASED


def test_ack_stores_the_result(stubs, queue):
    enqueue(stubs, queue)
    [task] = lease(stubs, queue)
    item = WS.AckItem(
        lease=ref(task),
        result=task_pb2.TaskResult(data=b'{"ok":1}', content_type="application/json"),
    )
    stubs.workers.Ack(WS.AckRequest(acks=[item]))
    done = get(stubs, task.id)
    assert done.state == task_pb2.TASK_STATE_SUCCEEDED
    assert done.result.data == b'{"ok":1}'
    assert done.result.content_type == "application/json"
    assert done.HasField("finished_at")


def test_ack_errors(stubs, queue):
    enqueue(stubs, queue)
    [task] = lease(stubs, queue)
    expect_status(STALE, stubs.workers.Ack, ack_request(task, token="stale"))
    unknown = WS.AckRequest(acks=[WS.AckItem(lease=WS.LeaseRef(task_id="nope", lease_token="x"))])
    expect_status(grpc.StatusCode.NOT_FOUND, stubs.workers.Ack, unknown)
    too_big = WS.AckRequest(
        acks=[WS.AckItem(lease=ref(task), result=task_pb2.TaskResult(data=b"x" * ((1 << 20) + 1)))]
    )
    expect_status(INVALID, stubs.workers.Ack, too_big, match="result")
    expect_status(INVALID, stubs.workers.Ack, WS.AckRequest())
    assert get(stubs, task.id).state == task_pb2.TASK_STATE_LEASED  # nothing changed


def fail_request(task: task_pb2.Task, **fields) -> WS.FailRequest:
    error = task_pb2.TaskError(type="ValueError", message="bad input", details="Traceback ...")
    return WS.FailRequest(failures=[WS.FailItem(lease=ref(task), error=error, **fields)])


def test_retryable_fail_schedules_a_retry(stubs, queue):
    enqueue(stubs, queue, max_attempts=3)
    [task] = lease(stubs, queue)
    stubs.workers.Fail(fail_request(task, retry_delay=seconds(3600)))
    after = get(stubs, task.id)
    assert after.state == task_pb2.TASK_STATE_SCHEDULED
    assert after.run_at.seconds > time.time() + 3500
    assert after.last_error.type == "ValueError"
    assert after.last_error.attempt == 1


def test_fail_without_delay_retries_after_backoff(stubs, queue):
    policy = task_pb2.RetryPolicy(
        initial_backoff=seconds(0.2), multiplier=2, max_backoff=seconds(1)
    )
    enqueue(stubs, queue, max_attempts=2, retry_policy=policy)
    [task] = lease(stubs, queue)
    stubs.workers.Fail(fail_request(task))
    assert lease(stubs, queue) == []  # backing off
    [again] = lease(stubs, queue, wait=seconds(5))
    assert again.attempt == 2
    stubs.workers.Fail(fail_request(again))
    dead = get(stubs, task.id)
    assert dead.state == task_pb2.TASK_STATE_DEAD  # attempts exhausted
    assert dead.last_error.message == "bad input"


def test_non_retryable_fail_is_dead_at_once(stubs, queue):
    enqueue(stubs, queue, max_attempts=5)
    [task] = lease(stubs, queue)
    stubs.workers.Fail(fail_request(task, retryable=False))
    dead = get(stubs, task.id)
    assert dead.state == task_pb2.TASK_STATE_DEAD
    assert dead.last_error.details == "Traceback ..."


def test_fail_errors(stubs, queue):
    enqueue(stubs, queue)
    [task] = lease(stubs, queue)
    expect_status(
        STALE,
        stubs.workers.Fail,
        fail_request(task, retry_delay=seconds(1)).__class__(
            failures=[WS.FailItem(lease=ref(task, "stale"))]
        ),
    )
    unknown = WS.FailRequest(
        failures=[WS.FailItem(lease=WS.LeaseRef(task_id="no", lease_token="x"))]
    )
    expect_status(grpc.StatusCode.NOT_FOUND, stubs.workers.Fail, unknown)
    expect_status(INVALID, stubs.workers.Fail, fail_request(task, retry_delay=seconds(-1)))


def test_release_gives_the_task_back_without_an_attempt(stubs, queue):
    enqueue(stubs, queue)
    [task] = lease(stubs, queue)
    stubs.workers.Release(WS.ReleaseRequest(leases=[ref(task)]))
    released = get(stubs, task.id)
    assert released.state == task_pb2.TASK_STATE_READY
    assert released.attempt == 0
    [again] = lease(stubs, queue)
    assert again.id == task.id and again.attempt == 1
    expect_status(STALE, stubs.workers.Release, WS.ReleaseRequest(leases=[ref(task)]))
    unknown = WS.ReleaseRequest(leases=[WS.LeaseRef(task_id="no", lease_token="x")])
    expect_status(grpc.StatusCode.NOT_FOUND, stubs.workers.Release, unknown)
    expect_status(INVALID, stubs.workers.Release, WS.ReleaseRequest(), match="no leases")


def test_a_waiting_lease_call_gets_a_new_task_in_the_enqueue_commit(stubs, queue):
    request = worker_service_pb2.LeaseRequest(
        queues=[queue], max_tasks=5, wait=seconds(10), worker_id="w-unary"
    )
    waiting = stubs.workers.Lease.future(request, timeout=20)
    time.sleep(0.3)  # parked
    created = enqueue(stubs, queue)
    leased = waiting.result(timeout=5).tasks
    assert created.state == task_pb2.TASK_STATE_LEASED and created.worker_id == "w-unary"
    assert [t.id for t in leased] == [created.id] and leased[0].lease_token
