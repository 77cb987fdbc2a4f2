"""The default queue: an empty queue name means "default" in TaskSpec, Lease and StreamWork."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from conveyor.v1 import worker_service_pb2
from tests.rpc.helpers import connect, enqueue, lease, seconds

WS = worker_service_pb2


def test_a_task_without_a_queue_is_leased_by_an_empty_queue_name(broker):
    stubs = connect(broker.address)
    task = enqueue(stubs, "")
    assert task.queue == "default"
    [leased] = lease(stubs, "", wait=seconds(5))
    assert (leased.id, leased.queue) == (task.id, "default")
    stubs.channel.close()


def test_an_empty_queue_name_and_default_are_the_same_queue(broker):
    stubs = connect(broker.address)
    first = enqueue(stubs, "default")
    second = enqueue(stubs, "")
    request = WS.LeaseRequest(queues=["", "default"], max_tasks=10)
    assert [t.id for t in stubs.workers.Lease(request).tasks] == [first.id, second.id]
    stubs.channel.close()


def test_stream_work_with_an_empty_queue_name_takes_from_the_default_queue(broker):
    stubs = connect(broker.address)
    task = enqueue(stubs, "")
    done = threading.Event()

    def requests() -> Iterator[WS.StreamWorkRequest]:
        yield WS.StreamWorkRequest(open=WS.StreamWorkOpen(queues=[""]), credits=1)
        done.wait(10)  # a half-close would stop the broker leasing for this stream

    call = stubs.workers.StreamWork(requests(), timeout=10)
    response = next(call)
    done.set()
    assert [t.id for t in response.tasks] == [task.id]
    call.cancel()
    stubs.channel.close()
