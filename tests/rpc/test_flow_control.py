"""Flow control over a real broker: UpdateQueue, limits on Lease and StreamWork, fairness
between concurrency keys, parked Leases woken by a freed slot or a refilled bucket."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import field_mask_pb2

from conveyor.v1 import queue_service_pb2 as pb2
from conveyor.v1 import queue_service_pb2_grpc, task_service_pb2, worker_service_pb2
from tests.rpc.helpers import Stubs, connect, enqueue, expect_status, lease, ref, seconds, spec
from tests.rpc.test_work_stream import Stream, opening

INVALID = grpc.StatusCode.INVALID_ARGUMENT
WS = worker_service_pb2


@pytest.fixture
def admin(stubs: Stubs) -> queue_service_pb2_grpc.QueueServiceStub:
    return queue_service_pb2_grpc.QueueServiceStub(stubs.channel)


def update(admin, queue: str, *paths: str, paused: bool | None = None, **limits) -> pb2.Queue:
    request = pb2.UpdateQueueRequest(name=queue, limits=pb2.QueueLimits(**limits))
    if paused is not None:
        request.paused = paused
    request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(paths)))
    return admin.UpdateQueue(request).queue


def fill(stubs: Stubs, queue: str, n: int, **fields) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, 1000):
        batch = [spec(queue, **fields) for _ in range(min(1000, n - start))]
        response = stubs.tasks.EnqueueBatch(task_service_pb2.EnqueueBatchRequest(tasks=batch))
        ids += [r.task.id for r in response.results]
    return ids


def ack(stubs: Stubs, *tasks) -> None:
    stubs.workers.Ack(WS.AckRequest(acks=[WS.AckItem(lease=ref(t)) for t in tasks]))


def leased_now(admin, queue: str) -> int:
    got = admin.GetQueue(pb2.GetQueueRequest(name=queue)).queue
    return sum(c.count for c in got.counts if c.state == 3)  # TASK_STATE_LEASED


# -- UpdateQueue -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"name": "a b", "limits": pb2.QueueLimits(rate=1)}, "name"),
        ({"name": "ok", "limits": pb2.QueueLimits(rate=-1)}, "limits.rate"),
        ({"name": "ok", "limits": pb2.QueueLimits(rate=float("nan"))}, "limits.rate"),
        ({"name": "ok", "limits": pb2.QueueLimits(rate=float("inf"))}, "limits.rate"),
        (
            {"name": "ok", "update_mask": field_mask_pb2.FieldMask(paths=["limits.speed"])},
            "update_mask.paths[0]",
        ),
        (
            {"name": "ok", "update_mask": field_mask_pb2.FieldMask(paths=["paused", "x"])},
            "update_mask.paths[1]",
        ),
    ],
)
def test_update_queue_refuses_bad_input_naming_the_field(admin, request_fields, field) -> None:
    expect_status(INVALID, admin.UpdateQueue, pb2.UpdateQueueRequest(**request_fields), match=field)


def test_update_queue_changes_only_the_masked_fields(admin, queue) -> None:
    got = update(admin, queue, rate=5, burst=2, concurrency=9)
    assert (got.limits.rate, got.limits.burst, got.limits.concurrency) == (5, 2, 9)
    got = update(admin, queue, "limits.key_concurrency", rate=99, key_concurrency=3)
    assert (got.limits.rate, got.limits.key_concurrency) == (5, 3)  # rate not in the mask
    got = update(admin, queue, "paused", paused=True)
    assert got.paused and got.limits.concurrency == 9
    got = update(admin, queue, "limits", rate=1)  # "limits": replaced whole
    assert (got.limits.rate, got.limits.concurrency, got.limits.key_concurrency) == (1, 0, 0)
    got = update(admin, queue, paused=False)  # empty mask: what is present
    assert not got.paused and got.limits.rate == 0  # limits present (all zero): replaced
    listed = {q.name for q in admin.ListQueues(pb2.ListQueuesRequest()).queues}
    assert queue not in listed  # no tasks, not paused, no limits


def test_a_queue_with_limits_and_no_tasks_is_listed(admin, queue) -> None:
    update(admin, queue, concurrency=4)
    listed = {q.name: q for q in admin.ListQueues(pb2.ListQueuesRequest()).queues}
    assert listed[queue].limits.concurrency == 4 and not listed[queue].counts
    assert admin.GetQueue(pb2.GetQueueRequest(name=queue)).queue.limits.concurrency == 4


def test_update_queue_pause_goes_through_pause_and_resume(admin, stubs, queue) -> None:
    update(admin, queue, "paused", paused=True)
    enqueue(stubs, queue)
    assert lease(stubs, queue) == []
    with ThreadPoolExecutor(1) as pool:
        parked = pool.submit(lease, stubs, queue, 1, wait=seconds(10))
        time.sleep(0.3)
        assert not parked.done()
        started = time.monotonic()
        update(admin, queue, "paused", paused=False)  # resume wakes the parked Lease
        assert len(parked.result(timeout=5)) == 1
        assert time.monotonic() - started < 2


def test_limits_survive_a_broker_restart(broker_factory) -> None:
    broker = broker_factory()
    stubs = connect(broker.address)
    admin = queue_service_pb2_grpc.QueueServiceStub(stubs.channel)
    update(admin, "kept", concurrency=2, rate=1000, key_concurrency=1)
    fill(stubs, "kept", 3, concurrency_key="k")
    fill(stubs, "kept", 3)
    stubs.channel.close()
    broker.stop()
    broker.start()
    stubs = connect(broker.address)
    admin = queue_service_pb2_grpc.QueueServiceStub(stubs.channel)
    got = admin.GetQueue(pb2.GetQueueRequest(name="kept")).queue
    assert (got.limits.concurrency, got.limits.key_concurrency, got.limits.rate) == (2, 1, 1000)
    tasks = lease(stubs, "kept", 10)
    assert sorted(t.concurrency_key for t in tasks) == ["", "k"]  # both limits hold
    assert lease(stubs, "kept", 10) == []
    stubs.channel.close()


# -- concurrency -----------------------------------------------------------------------


def test_concurrency_is_never_exceeded_by_many_callers(admin, stubs, queue) -> None:
    update(admin, queue, concurrency=5)
    fill(stubs, queue, 120)
    held: list = []
    lock = threading.Lock()
    peak = 0
    done = 0

    def worker() -> None:
        nonlocal peak, done
        while True:
            with lock:
                if done >= 120:
                    return
            tasks = lease(stubs, queue, 3, wait=seconds(0.5))
            with lock:
                held.extend(tasks)
                peak = max(peak, len(held))
            time.sleep(0.005)
            with lock:
                for t in tasks:
                    held.remove(t)
                done += len(tasks)
            if tasks:
                ack(stubs, *tasks)

    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(worker) for _ in range(6)]
        samples = []
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            samples.append(leased_now(admin, queue))  # the broker's own count
            time.sleep(0.01)
        for f in futures:
            f.result(timeout=max(deadline - time.monotonic(), 1))
    assert done == 120
    assert peak <= 5 and max(samples) <= 5, (peak, max(samples))


def test_key_concurrency_caps_each_key(admin, stubs, queue) -> None:
    update(admin, queue, key_concurrency=2)
    fill(stubs, queue, 5, concurrency_key="a")
    fill(stubs, queue, 5, concurrency_key="b")
    first = lease(stubs, queue, 10)
    assert sorted(t.concurrency_key for t in first) == ["a", "a", "b", "b"]
    assert lease(stubs, queue, 10) == []
    ack(stubs, first[0])
    (one,) = lease(stubs, queue, 10)
    assert one.concurrency_key == first[0].concurrency_key


def test_a_parked_lease_wakes_when_a_slot_frees(admin, stubs, queue) -> None:
    update(admin, queue, concurrency=1)
    fill(stubs, queue, 3)
    (held,) = lease(stubs, queue, 1)
    with ThreadPoolExecutor(1) as pool:
        parked = pool.submit(lease, stubs, queue, 1, wait=seconds(10))
        time.sleep(0.3)
        enqueue(stubs, queue)  # a new READY task does not get past the limit
        time.sleep(0.2)
        assert not parked.done()
        started = time.monotonic()
        ack(stubs, held)
        assert len(parked.result(timeout=5)) == 1
        assert time.monotonic() - started < 1.0


# -- rate --------------------------------------------------------------------------------


def test_a_parked_lease_wakes_when_the_bucket_refills(admin, stubs, queue) -> None:
    update(admin, queue, rate=2, burst=1)
    fill(stubs, queue, 3)
    assert len(lease(stubs, queue, 5)) == 1  # the bucket held one token
    started = time.monotonic()
    assert len(lease(stubs, queue, 5, wait=seconds(5))) == 1  # parked until the next token
    waited = time.monotonic() - started
    assert 0.3 <= waited <= 1.5, waited


def _count_leases_unary(stubs: Stubs, queue: str, seconds_: float, callers: int) -> int:
    stop_at = time.monotonic() + seconds_
    total = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal total
        while time.monotonic() < stop_at:
            tasks = lease(stubs, queue, 20, wait=seconds(max(stop_at - time.monotonic(), 0.01)))
            if tasks:
                ack(stubs, *tasks)
                if time.monotonic() <= stop_at:
                    with lock:
                        total += len(tasks)

    with ThreadPoolExecutor(callers) as pool:
        for f in [pool.submit(worker) for _ in range(callers)]:
            f.result(timeout=seconds_ + 30)
    return total


def test_a_rate_limit_holds_on_unary_lease(admin, stubs, queue) -> None:
    update(admin, queue, rate=50, burst=5)
    fill(stubs, queue, 400)
    leased = _count_leases_unary(stubs, queue, 2.0, callers=3)
    assert 90 <= leased <= 5 + 50 * 2 + 2, leased


def test_a_rate_limit_holds_on_stream_work(admin, stubs, queue) -> None:
    update(admin, queue, rate=50, burst=5)
    fill(stubs, queue, 400)
    stream = Stream(stubs, opening(queue, worker_id="rate"))
    stream.send(credits=1000)
    got = []
    started = time.monotonic()
    first = stream.next()  # the burst comes at once
    got += list(first.tasks)
    while time.monotonic() - started < 2.0:
        got += list(stream.next().tasks)
    elapsed = time.monotonic() - started
    stream.close()
    assert len(got) <= 5 + 50 * elapsed + 2, (len(got), elapsed)
    assert len(got) >= 50 * elapsed * 0.85, (len(got), elapsed)


# -- fairness ----------------------------------------------------------------------------


def test_ten_tasks_of_one_key_are_not_stuck_behind_ten_thousand_of_another(stubs, queue) -> None:
    fill(stubs, queue, 10_000, concurrency_key="A")
    b_ids = set(fill(stubs, queue, 10, concurrency_key="B"))
    first = []
    for _ in range(40):
        first += [t.id for t in lease(stubs, queue, 1)]
    assert b_ids <= set(first)
