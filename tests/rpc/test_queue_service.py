"""QueueService over a real broker: each RPC's happy path and every status it documents."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from conveyor.v1 import queue_service_pb2 as pb2
from conveyor.v1 import queue_service_pb2_grpc, task_pb2, task_service_pb2, worker_service_pb2
from tests.rpc.helpers import Stubs, connect, enqueue, expect_status, lease, ref, seconds

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
READY, DEAD = task_pb2.TASK_STATE_READY, task_pb2.TASK_STATE_DEAD


@pytest.fixture
def admin(stubs: Stubs) -> queue_service_pb2_grpc.QueueServiceStub:
    return queue_service_pb2_grpc.QueueServiceStub(stubs.channel)


def counts(queue: pb2.Queue) -> dict[int, int]:
    return {c.state: c.count for c in queue.counts}


def make_dead(stubs: Stubs, queue: str, n: int = 1) -> list[str]:
    ids = []
    for _ in range(n):
        ids.append(enqueue(stubs, queue, max_attempts=1).id)
    for task in lease(stubs, queue, n):
        item = worker_service_pb2.FailItem(lease=ref(task), retryable=False, error={"type": "E"})
        stubs.workers.Fail(worker_service_pb2.FailRequest(failures=[item]))
    return ids


def test_list_and_get_queue_report_counts_pause_and_age(admin, stubs, queue) -> None:
    enqueue(stubs, queue)
    enqueue(stubs, queue, delay=seconds(60))
    time.sleep(0.05)
    got = admin.GetQueue(pb2.GetQueueRequest(name=queue)).queue
    assert counts(got) == {READY: 1, task_pb2.TASK_STATE_SCHEDULED: 1}
    assert not got.paused and got.HasField("oldest_ready_at")
    assert got.oldest_ready_age.ToTimedelta().total_seconds() >= 0.04
    listed = {q.name: q for q in admin.ListQueues(pb2.ListQueuesRequest()).queues}
    assert counts(listed[queue]) == counts(got)


def test_get_queue_statuses(admin) -> None:
    expect_status(NOT_FOUND, admin.GetQueue, pb2.GetQueueRequest(name="never-used-queue"))
    expect_status(INVALID, admin.GetQueue, pb2.GetQueueRequest(name=""), match="name")
    expect_status(INVALID, admin.PauseQueue, pb2.PauseQueueRequest(name="a b"), match="name")
    expect_status(INVALID, admin.ResumeQueue, pb2.ResumeQueueRequest(name=""), match="name")


def test_paused_queue_leases_nothing_and_a_parked_lease_wakes_on_resume(
    admin, stubs, queue
) -> None:
    assert admin.PauseQueue(pb2.PauseQueueRequest(name=queue)).queue.paused
    task = enqueue(stubs, queue)  # Enqueue still works
    assert task.state == READY
    assert lease(stubs, queue) == []
    got: list = []
    parked = threading.Thread(target=lambda: got.extend(lease(stubs, queue, wait=seconds(10))))
    started = time.monotonic()
    parked.start()
    time.sleep(0.3)
    assert got == []
    assert not admin.ResumeQueue(pb2.ResumeQueueRequest(name=queue)).queue.paused
    parked.join(10)
    assert [t.id for t in got] == [task.id]
    assert time.monotonic() - started < 5


def test_paused_queue_sends_nothing_on_a_stream_until_resumed(admin, stubs, queue) -> None:
    admin.PauseQueue(pb2.PauseQueueRequest(name=queue))
    task = enqueue(stubs, queue)
    requests = [
        worker_service_pb2.StreamWorkRequest(
            open=worker_service_pb2.StreamWorkOpen(queues=[queue], worker_id="w-stream"), credits=5
        )
    ]
    done = threading.Event()

    def feed():  # type: ignore[no-untyped-def]
        yield from requests
        done.wait(10)

    stream = stubs.workers.StreamWork(feed())
    try:
        time.sleep(0.3)
        workers = {w.id: w for w in admin.ListWorkers(pb2.ListWorkersRequest()).workers}
        assert workers["w-stream"].streams == 1 and list(workers["w-stream"].queues) == [queue]
        assert workers["w-stream"].HasField("connected_at")
        admin.ResumeQueue(pb2.ResumeQueueRequest(name=queue))
        first = next(stream)
        assert [t.id for t in first.tasks] == [task.id]
        time.sleep(0.05)
        workers = {w.id: w for w in admin.ListWorkers(pb2.ListWorkersRequest()).workers}
        assert workers["w-stream"].tasks_in_flight == 1
    finally:
        done.set()
        stream.cancel()


def test_purge_by_state_returns_the_count(admin, stubs, queue) -> None:
    for _ in range(5):
        enqueue(stubs, queue)
    make_dead(stubs, queue, 2)
    request = pb2.PurgeQueueRequest(name=queue, states=[READY], limit=2)
    assert admin.PurgeQueue(request).purged_count == 2
    request = pb2.PurgeQueueRequest(name=queue, states=[READY, DEAD])
    assert admin.PurgeQueue(request).purged_count == 5
    assert counts(admin.GetQueue(pb2.GetQueueRequest(name=queue)).queue) == {}


def test_purge_statuses(admin, queue) -> None:
    expect_status(INVALID, admin.PurgeQueue, pb2.PurgeQueueRequest(name=queue), match="states")
    leased = pb2.PurgeQueueRequest(name=queue, states=[task_pb2.TASK_STATE_LEASED])
    expect_status(INVALID, admin.PurgeQueue, leased, match="LEASED")
    unknown = pb2.PurgeQueueRequest(name=queue, states=[0])
    expect_status(INVALID, admin.PurgeQueue, unknown, match="states[0]")
    negative = pb2.PurgeQueueRequest(name=queue, states=[READY], limit=-1)
    expect_status(INVALID, admin.PurgeQueue, negative, match="limit")


def test_list_tasks_pages_with_tokens_newest_first(admin, stubs, queue) -> None:
    ids = [enqueue(stubs, queue, kind="a" if n % 2 else "b").id for n in range(5)]
    where = pb2.TaskFilter(queue=queue)
    request = pb2.ListTasksRequest(filter=where, page_size=2, order=pb2.TASK_ORDER_NEWEST_FIRST)
    seen: list[str] = []
    while True:
        page = admin.ListTasks(request)
        seen += [t.id for t in page.tasks]
        assert all(not t.payload for t in page.tasks)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert seen == ids[::-1]
    kind_a = pb2.ListTasksRequest(filter=pb2.TaskFilter(queue=queue, kind="a", states=[READY]))
    assert [t.id for t in admin.ListTasks(kind_a).tasks] == [ids[1], ids[3]]


def test_list_tasks_statuses(admin, queue) -> None:
    big = pb2.ListTasksRequest(page_size=1001)
    expect_status(INVALID, admin.ListTasks, big, match="page_size")
    junk = pb2.ListTasksRequest(page_token="!!!")
    expect_status(INVALID, admin.ListTasks, junk, match="page_token")
    first = admin.ListTasks(pb2.ListTasksRequest(page_size=1))
    if first.next_page_token:
        other_order = pb2.ListTasksRequest(
            page_token=first.next_page_token, order=pb2.TASK_ORDER_NEWEST_FIRST
        )
        expect_status(INVALID, admin.ListTasks, other_order, match="other order")
    bad_queue = pb2.ListTasksRequest(filter=pb2.TaskFilter(queue="a b"))
    expect_status(INVALID, admin.ListTasks, bad_queue, match="filter.queue")


def test_retry_dead_task_by_id_then_it_runs_again(admin, stubs, queue) -> None:
    [dead_id] = make_dead(stubs, queue)
    # before: re-enqueueing its id answers the DEAD task as a duplicate
    again = stubs.tasks.Enqueue(
        task_service_pb2.EnqueueRequest(task=task_pb2.TaskSpec(id=dead_id, queue=queue, kind="j"))
    )
    assert again.duplicate and again.task.state == DEAD
    response = admin.RetryTasks(pb2.RetryTasksRequest(task_ids=[dead_id]))
    assert response.retried_count == 1
    [leased] = lease(stubs, queue)
    assert leased.id == dead_id and leased.attempt == 1


def test_retry_by_filter_counts(admin, stubs, queue) -> None:
    make_dead(stubs, queue, 3)
    request = pb2.RetryTasksRequest(filter=pb2.TaskFilter(queue=queue), limit=2)
    assert admin.RetryTasks(request).retried_count == 2
    request = pb2.RetryTasksRequest(filter=pb2.TaskFilter(queue=queue, states=[DEAD]))
    assert admin.RetryTasks(request).retried_count == 1
    assert counts(admin.GetQueue(pb2.GetQueueRequest(name=queue)).queue) == {READY: 3}


def test_retry_statuses(admin, stubs, queue) -> None:
    expect_status(INVALID, admin.RetryTasks, pb2.RetryTasksRequest(), match="exactly one")
    both = pb2.RetryTasksRequest(task_ids=["x"], filter=pb2.TaskFilter(queue=queue))
    expect_status(INVALID, admin.RetryTasks, both, match="exactly one")
    ready_filter = pb2.RetryTasksRequest(filter=pb2.TaskFilter(states=[READY]))
    expect_status(INVALID, admin.RetryTasks, ready_filter, match="filter.states")
    expect_status(NOT_FOUND, admin.RetryTasks, pb2.RetryTasksRequest(task_ids=["nope-123"]))
    ready = enqueue(stubs, queue)
    expect_status(
        PRECONDITION, admin.RetryTasks, pb2.RetryTasksRequest(task_ids=[ready.id]), match="READY"
    )
    many = pb2.RetryTasksRequest(task_ids=[f"t{n}" for n in range(1001)])
    expect_status(INVALID, admin.RetryTasks, many, match="task_ids")


def test_delete_task_and_its_statuses(admin, stubs, queue) -> None:
    task = enqueue(stubs, queue)
    admin.DeleteTask(pb2.DeleteTaskRequest(task_id=task.id))
    get = task_service_pb2.GetTaskRequest(task_id=task.id)
    expect_status(NOT_FOUND, stubs.tasks.GetTask, get)
    expect_status(NOT_FOUND, admin.DeleteTask, pb2.DeleteTaskRequest(task_id=task.id))
    expect_status(INVALID, admin.DeleteTask, pb2.DeleteTaskRequest(task_id=""))
    enqueue(stubs, queue)
    [leased] = lease(stubs, queue)
    request = pb2.DeleteTaskRequest(task_id=leased.id)
    expect_status(PRECONDITION, admin.DeleteTask, request, match="LEASED")


def test_list_workers_shows_lease_callers(admin, stubs, queue) -> None:
    enqueue(stubs, queue)
    lease(stubs, queue, worker_id="w-unary")
    workers = {w.id: w for w in admin.ListWorkers(pb2.ListWorkersRequest()).workers}
    me = workers["w-unary"]
    assert list(me.queues) == [queue] and me.host == "127.0.0.1"
    assert me.tasks_in_flight == 1 and me.streams == 0 and not me.HasField("connected_at")
    assert admin.GetQueue(pb2.GetQueueRequest(name=queue)).queue.workers >= 1


def test_pause_survives_a_restart(broker) -> None:  # its own broker: it restarts it
    stubs = connect(broker.address)
    try:
        admin = queue_service_pb2_grpc.QueueServiceStub(stubs.channel)
        admin.PauseQueue(pb2.PauseQueueRequest(name="held"))
        enqueue(stubs, "held")
    finally:
        stubs.channel.close()
    broker.restart()
    stubs = connect(broker.address)
    try:
        admin = queue_service_pb2_grpc.QueueServiceStub(stubs.channel)
        assert admin.GetQueue(pb2.GetQueueRequest(name="held")).queue.paused
        assert lease(stubs, "held") == []
        admin.ResumeQueue(pb2.ResumeQueueRequest(name="held"))
        assert len(lease(stubs, "held")) == 1
    finally:
        stubs.channel.close()


def test_big_purge_does_not_stall_other_rpcs(admin, stubs, queue) -> None:
    for _ in range(10):
        specs = [task_pb2.TaskSpec(queue=queue, kind="j") for _ in range(1000)]
        stubs.tasks.EnqueueBatch(task_service_pb2.EnqueueBatchRequest(tasks=specs))
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            began = time.monotonic()
            enqueue(stubs, queue + "-other")
            latencies.append(time.monotonic() - began)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        purged = admin.PurgeQueue(pb2.PurgeQueueRequest(name=queue, states=[READY])).purged_count
    finally:
        stop.set()
        prober.join(10)
    assert purged == 10_000
    assert len(latencies) >= 3  # enqueues were committed between the purge's batches
    assert max(latencies) < 1.0
