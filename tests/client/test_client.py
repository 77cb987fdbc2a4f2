"""The blocking client against a real broker: enqueue options, batches, results, cancel."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from conveyor import (
    Client,
    ResultTimeout,
    RetryPolicy,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskSpec,
    TaskState,
    task,
)
from conveyor.serializer import OCTET_STREAM


@pytest.fixture(scope="module")
def client(shared_broker):
    with Client(shared_broker.address) as c:
        yield c


def test_enqueue_keeps_every_option(client):
    run_at = datetime.now(UTC) + timedelta(hours=1)
    t = client.enqueue(
        "thumbnails.make",
        {"path": "a.png"},
        queue="c-options",
        run_at=run_at,
        priority=7,
        max_attempts=5,
        unique_key="a.png",
        headers={"trace": "abc"},
        retry_policy=RetryPolicy(initial_backoff=timedelta(seconds=2), multiplier=3),
    )
    got = client.get_task(t.id)
    assert got.state is TaskState.SCHEDULED and got.state == "SCHEDULED"
    assert (got.queue, got.kind, got.priority, got.max_attempts) == (
        "c-options",
        "thumbnails.make",
        7,
        5,
    )
    assert got.headers == {"trace": "abc"} and got.unique_key == "a.png"
    assert got.payload == {"path": "a.png"} and got.content_type == "application/json"
    assert got.created_at.tzinfo is not None
    assert abs((got.run_at - run_at).total_seconds()) < 0.01


def test_unique_key_returns_the_existing_task(client):
    first = client.enqueue("k", 1, queue="c-unique", unique_key="u")
    second = client.enqueue("k", 2, queue="c-unique", unique_key="u")
    assert second.id == first.id and second.duplicate and not first.duplicate


def test_delay_schedules_the_task(client):
    t = client.enqueue("k", None, queue="c-delay", delay=timedelta(seconds=30))
    assert t.state is TaskState.SCHEDULED
    assert t.run_at - t.created_at >= timedelta(seconds=29.9)


def test_bytes_payload_passes_through_as_octet_stream(client):
    t = client.enqueue("k", b"\x00\x01raw", queue="c-bytes")
    got = client.get_task(t.id)
    assert got.content_type == OCTET_STREAM and got.payload == b"\x00\x01raw"


def test_enqueue_many_returns_tasks_in_order_and_applies_options(client):
    items = [("k", {"i": i}) for i in range(2500)]
    items[3] = TaskSpec("special", {"i": 3}, priority=9)
    tasks = client.enqueue_many(items, queue="c-many", priority=1)
    assert [t.payload["i"] for t in tasks] == list(range(2500))
    assert tasks[0].priority == 1 and tasks[3].priority == 9 and tasks[3].kind == "special"
    assert all(t.queue == "c-many" for t in tasks)
    assert len({t.id for t in tasks}) == 2500


def test_result_returns_the_acked_result(client):
    t = client.enqueue("k", 21, queue="c-result")
    [leased] = client.lease("c-result", wait=5)
    client.ack(leased, {"answer": leased.payload * 2})
    assert client.result(t.id, timeout=5) == {"answer": 42}
    assert client.get_task(t.id).result == {"answer": 42}


def test_result_raises_task_failed_with_the_remote_error(client):
    t = client.enqueue("k", None, queue="c-dead")
    [leased] = client.lease("c-dead", wait=5)
    client.fail(leased, "ValueError", "bad input", details="Traceback...", retryable=False)
    with pytest.raises(TaskFailed) as info:
        client.result(t.id, timeout=5)
    assert info.value.error_type == "ValueError" and info.value.error_message == "bad input"
    assert info.value.task.state is TaskState.DEAD


def test_result_raises_task_cancelled(client):
    t = client.enqueue("k", None, queue="c-cancel")
    assert client.cancel(t.id).state is TaskState.CANCELLED
    with pytest.raises(TaskCancelled):
        client.result(t.id, timeout=5)


def test_result_raises_task_expired(client):
    t = client.enqueue(
        "k", None, queue="c-expire", deadline=datetime.now(UTC) + timedelta(milliseconds=300)
    )
    with pytest.raises(TaskExpired):
        client.result(t.id, timeout=5)


def test_result_wait_ends_with_a_timeout_error_after_the_timeout(client):
    t = client.enqueue("k", None, queue="c-timeout")
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        client.result(t.id, timeout=1.0)
    assert isinstance(info.value, ResultTimeout)
    assert 0.9 <= time.monotonic() - started < 4.0


def test_result_is_woken_by_the_ack_not_by_polling(client):
    t = client.enqueue("k", 5, queue="c-wake")
    [leased] = client.lease("c-wake", wait=5)
    import threading

    timer = threading.Timer(0.5, client.ack, args=(leased, "done"))
    timer.start()
    started = time.monotonic()
    assert client.result(t.id, timeout=10) == "done"
    assert time.monotonic() - started < 3.0
    timer.join()


def test_cancel_of_a_leased_task_is_requested_and_seen_by_extend(client):
    t = client.enqueue("k", None, queue="c-cancel-leased")
    [leased] = client.lease("c-cancel-leased", wait=5)
    after = client.cancel(t.id)
    assert after.state is TaskState.LEASED and after.cancel_requested
    assert client.extend(leased).cancel_requested
    client.release(leased)
    assert client.get_task(t.id).state is TaskState.CANCELLED


def test_lower_level_worker_calls_batch_with_one_outcome_per_item(client):
    client.enqueue_many([("k", i) for i in range(3)], queue="c-batch")
    leased = client.lease("c-batch", 3, wait=5)
    assert len(leased) == 3
    extended = client.extend_many(leased, lease_duration=timedelta(seconds=60))
    assert all(o.ok and o.lease_expires_at is not None for o in extended)
    outcomes = client.ack_many([(t, t.payload) for t in leased])
    assert [o.ok for o in outcomes] == [True, True, True]
    again = client.ack_many([(t, None) for t in leased])
    assert [type(o.error).__name__ for o in again] == ["LeaseLost"] * 3


def test_task_decorator_enqueues_its_kind(client):
    @task("c.decorated", queue="c-decorated", priority=3, client=client)
    def decorated(payload):
        return payload + 1

    assert decorated(1) == 2
    t = decorated.enqueue(41)
    assert (t.kind, t.queue, t.priority, t.payload) == ("c.decorated", "c-decorated", 3, 41)
