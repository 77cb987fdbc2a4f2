"""StreamWork: tasks pushed as credits allow, outcomes on the same stream, clear errors."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from conveyor.v1 import task_pb2, task_service_pb2, worker_service_pb2
from tests.rpc.helpers import connect, enqueue, expect_status, ref, seconds

WS = worker_service_pb2
_END = object()


class Stream:
    """A StreamWork call driven from a test: send() requests, next() responses."""

    def __init__(self, stubs, opening: WS.StreamWorkRequest) -> None:
        self._requests: queue.Queue[object] = queue.Queue()
        self._requests.put(opening)
        self.call = stubs.workers.StreamWork(self._iterate(), timeout=30)

    def _iterate(self) -> Iterator[WS.StreamWorkRequest]:
        while (item := self._requests.get()) is not _END:
            yield item  # type: ignore[misc]

    def send(self, **fields) -> None:
        self._requests.put(WS.StreamWorkRequest(**fields))

    def next(self) -> WS.StreamWorkResponse:
        return next(self.call)

    def tasks(self, count: int) -> list[task_pb2.Task]:
        got: list[task_pb2.Task] = []
        while len(got) < count:
            got.extend(self.next().tasks)
        return got

    def close(self) -> None:
        self._requests.put(_END)


def opening(queue_name: str, **fields) -> WS.StreamWorkRequest:
    return WS.StreamWorkRequest(open=WS.StreamWorkOpen(queues=[queue_name], **fields))


def get(stubs, task_id: str) -> task_pb2.Task:
    return stubs.tasks.GetTask(task_service_pb2.GetTaskRequest(task_id=task_id)).task


def test_stream_pushes_no_more_tasks_than_credits(stubs, queue):
    ids = [enqueue(stubs, queue).id for _ in range(5)]
    stream = Stream(stubs, opening(queue, worker_id="s1"))
    stream.send(credits=2)
    first = stream.tasks(2)
    assert len(first) == 2 and all(t.lease_token for t in first)
    assert all(t.state == task_pb2.TASK_STATE_LEASED and t.worker_id == "s1" for t in first)
    # No credits left: the other three stay READY.
    time.sleep(0.3)
    others = [i for i in ids if i not in {t.id for t in first}]
    assert [get(stubs, i).state for i in others] == [task_pb2.TASK_STATE_READY] * 3
    stream.send(credits=3)
    assert {t.id for t in stream.tasks(3)} == set(others)
    stream.close()


def test_acks_on_the_stream_finish_tasks_and_report_outcomes(stubs, queue):
    for _ in range(3):
        enqueue(stubs, queue)
    stream = Stream(stubs, opening(queue))
    stream.send(credits=3)
    a, b, c = stream.tasks(3)
    stream.send(
        acks=[
            WS.AckItem(lease=ref(a), result=task_pb2.TaskResult(data=b"A")),
            WS.AckItem(lease=ref(b, "stale")),
        ],
        failures=[WS.FailItem(lease=ref(c), error=task_pb2.TaskError(type="E"), retryable=False)],
    )
    acks = fails = None
    while acks is None or fails is None:
        response = stream.next()
        if response.ack_outcomes:
            acks = [o.code for o in response.ack_outcomes]
        if response.fail_outcomes:
            fails = [o.code for o in response.fail_outcomes]
    assert acks == [0, grpc.StatusCode.FAILED_PRECONDITION.value[0]]
    assert fails == [0]
    assert get(stubs, a.id).result.data == b"A"
    assert get(stubs, c.id).state == task_pb2.TASK_STATE_DEAD
    stream.close()


def test_stream_waits_for_tasks_and_pushes_them_when_they_arrive(stubs, queue):
    stream = Stream(stubs, opening(queue))
    stream.send(credits=10)
    producer = threading.Timer(0.3, lambda: enqueue(stubs, queue))
    producer.start()
    started = time.monotonic()
    [task] = stream.tasks(1)
    assert time.monotonic() - started < 5
    producer.join(10)  # its Enqueue may answer after the push: not after the channel closes
    stream.send(releases=[ref(task)])
    released = again = None
    while released is None or again is None:
        response = stream.next()
        if response.release_outcomes:
            released = [o.code for o in response.release_outcomes]
        again = again or next(iter(response.tasks), None)
    assert released == [0]
    # Credits were left, so the released task came straight back, its attempt given back.
    assert again.id == task.id
    assert again.attempt == 1
    assert again.lease_token != task.lease_token
    stream.close()


def test_extensions_on_the_stream_report_cancel_requests(stubs, queue):
    task = enqueue(stubs, queue)
    stream = Stream(stubs, opening(queue, lease_duration=seconds(5)))
    stream.send(credits=1)
    [leased] = stream.tasks(1)
    stubs.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=task.id))
    stream.send(extensions=[WS.LeaseExtension(lease=ref(leased), lease_duration=seconds(60))])
    [result] = stream.next().extension_results
    assert result.outcome.code == 0
    assert result.cancel_requested
    stream.close()


def test_a_stream_without_open_is_invalid_argument(stubs):
    stream = Stream(stubs, WS.StreamWorkRequest(credits=1))
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, stream.next, match="open")


def test_a_bad_queue_in_open_is_invalid_argument(stubs):
    stream = Stream(stubs, opening("bad queue"))
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, stream.next, match="queues[0]")


def test_closing_the_stream_ends_it_cleanly(stubs, queue):
    stream = Stream(stubs, opening(queue))
    stream.send(credits=5)
    stream.close()
    assert list(stream.call) == []
    assert stream.call.code() == grpc.StatusCode.OK


def test_an_ack_outcome_with_no_task_to_ride_on_still_comes(stubs, queue):
    enqueue(stubs, queue)
    stream = Stream(stubs, opening(queue))
    stream.send(credits=1)
    (task,) = stream.tasks(1)
    stream.send(acks=[WS.AckItem(lease=ref(task))])
    alone = stream.next()  # held for a moment in case a task went out, then sent alone
    assert [o.task_id for o in alone.ack_outcomes] == [task.id] and not alone.tasks
    assert get(stubs, task.id).state == task_pb2.TASK_STATE_SUCCEEDED
    stream.close()


def test_a_waiting_stream_gets_a_new_task_in_the_enqueue_commit(stubs, queue):
    stream = Stream(stubs, opening(queue, worker_id="w-wait"))
    stream.send(credits=1)
    time.sleep(0.3)  # the stream looked, found nothing and waits
    created = enqueue(stubs, queue)
    assert created.state == task_pb2.TASK_STATE_LEASED  # handed over in the same commit
    assert created.worker_id == "w-wait" and created.attempt == 1 and not created.lease_token
    (pushed,) = stream.tasks(1)
    assert pushed.id == created.id and pushed.lease_token
    stream.send(acks=[WS.AckItem(lease=ref(pushed))])
    assert stream.next().ack_outcomes[0].task_id == created.id
    assert get(stubs, created.id).state == task_pb2.TASK_STATE_SUCCEEDED
    stream.close()


def test_a_waiting_stream_ends_unavailable_when_the_broker_shuts_down(broker_factory):
    broker = broker_factory()
    stubs = connect(broker.address)
    enqueue(stubs, "idle")
    stream = Stream(stubs, WS.StreamWorkRequest(open=WS.StreamWorkOpen(queues=["idle"]), credits=4))
    try:
        stream.tasks(1)  # sent in the same loop step in which the leaser parks for the rest
        assert broker.process is not None
        broker.process.terminate()
        with pytest.raises(grpc.RpcError) as info:
            stream.next()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
        assert "shutting down" in (info.value.details() or "")
        assert broker.process.wait(10) == 0
    finally:
        stubs.channel.close()
