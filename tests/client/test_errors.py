"""Every status the broker can return maps to a conveyor.errors class; no raw grpc.RpcError."""

from __future__ import annotations

import threading
from datetime import timedelta

import grpc
import pytest

from conveyor import Client, errors


@pytest.fixture(scope="module")
def client(shared_broker):
    with Client(shared_broker.address) as c:
        yield c


def test_every_grpc_code_maps_to_a_conveyor_error():
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        error = errors.error_for_code(code, "boom")
        assert isinstance(error, errors.ConveyorError)
        assert error.code is code and str(error) == "boom"
        assert errors.error_for_code(code.value[0], "boom").__class__ is error.__class__
    assert isinstance(errors.error_for_code(9, "x", is_lease_call=True), errors.LeaseLost)


def test_bad_queue_name_is_invalid_argument(client):
    with pytest.raises(errors.InvalidArgument, match="queue"):
        client.enqueue("k", None, queue="bad queue name!")


def test_naive_datetime_is_invalid_argument(client):
    from datetime import datetime

    with pytest.raises(errors.InvalidArgument, match="run_at"):
        client.enqueue("k", None, run_at=datetime(2030, 1, 1))


def test_unknown_task_is_not_found(client):
    with pytest.raises(errors.NotFound):
        client.get_task("no-such-task")
    with pytest.raises(errors.NotFound):
        client.result("no-such-task", timeout=1)


def test_rejected_duplicate_is_already_exists(client):
    client.enqueue("k", None, queue="e-dup", id="e-dup-1")
    with pytest.raises(errors.AlreadyExists):
        client.enqueue("k", None, queue="e-dup", id="e-dup-1", reject_duplicate=True)


def test_cancelling_a_finished_task_is_failed_precondition(client):
    t = client.enqueue("k", None, queue="e-fp")
    [leased] = client.lease("e-fp", wait=5)
    client.ack(leased)
    with pytest.raises(errors.FailedPrecondition) as info:
        client.cancel(t.id)
    assert not isinstance(info.value, errors.LeaseLost)


def test_stale_lease_token_is_lease_lost_on_every_worker_call(client):
    client.enqueue("k", None, queue="e-stale")
    [leased] = client.lease("e-stale", wait=5)
    stale = (leased.id, "0" * 24)
    for call in (client.ack, client.fail, client.release, client.extend):
        with pytest.raises(errors.LeaseLost) as info:
            call(stale)
        assert isinstance(info.value, errors.FailedPrecondition)
        assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION


def test_too_many_waiters_is_resource_exhausted(broker_factory):
    broker = broker_factory("--max-waiters", "1")
    outcomes: list[object] = []
    with Client(broker.address) as c:

        def park() -> None:
            try:
                outcomes.append(c.lease("e-empty", wait=2))
            except errors.ConveyorError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=park) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # Five overlapping 2 s parks, room for one: the others are refused.
    refused = [o for o in outcomes if isinstance(o, errors.ResourceExhausted)]
    assert refused and all(o == [] or isinstance(o, errors.ResourceExhausted) for o in outcomes)


def test_no_broker_is_unavailable():
    with Client("127.0.0.1:1", timeout=timedelta(seconds=5), retry_attempts=2) as c:
        with pytest.raises(errors.Unavailable) as info:
            c.get_task("x")
        assert isinstance(info.value, ConnectionError)
        with pytest.raises(errors.Unavailable):
            c.enqueue("k", None)


def test_tiny_deadline_is_deadline_exceeded(client):
    with pytest.raises(errors.DeadlineExceeded) as info:
        client.enqueue_many([("k", i) for i in range(1000)], queue="e-deadline", timeout=1e-6)
    assert isinstance(info.value, TimeoutError)


def test_closed_client_is_unavailable(shared_broker):
    c = Client(shared_broker.address)
    c.close()
    with pytest.raises(errors.Unavailable):
        c.get_task("x")
