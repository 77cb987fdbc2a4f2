"""Idempotent enqueue: client-supplied ids and unique keys with a time window."""

from __future__ import annotations

import pytest

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.errors import AlreadyExists, NotFound
from conveyor_server.core.model import TaskSpec, TaskState


def _enqueue(broker: Broker, **fields):
    return broker.enqueue(TaskSpec(kind="job", **fields)).result()


# -- client-supplied ids -------------------------------------------------------


def test_client_supplied_id_is_used(h) -> None:
    assert h.enqueue(id="order-17:charge").id == "order-17:charge"


def test_second_enqueue_with_the_same_id_returns_the_existing_task(broker: Broker, h) -> None:
    first = _enqueue(broker, id="abc", payload=b"one")
    second = _enqueue(broker, id="abc", payload=b"two")
    assert second.duplicate is True
    assert second.task == first.task
    assert h.get("abc").payload == b"one"
    assert h.count("tasks") == 1


def test_same_id_is_a_duplicate_even_in_another_queue(broker: Broker, h) -> None:
    _enqueue(broker, id="abc", queue="a")
    outcome = _enqueue(broker, id="abc", queue="b")
    assert outcome.duplicate is True
    assert outcome.task.queue == "a"


def test_same_id_is_a_duplicate_after_the_task_finished(broker: Broker, h) -> None:
    _enqueue(broker, id="abc")
    h.ack(h.lease_one())
    outcome = _enqueue(broker, id="abc")
    assert outcome.duplicate is True
    assert outcome.task.state is TaskState.SUCCEEDED


def test_id_is_free_again_after_retention_removed_the_task(broker: Broker, h) -> None:
    _enqueue(broker, id="abc", result_retention=10)
    h.ack(h.lease_one())
    h.advance(10)
    outcome = _enqueue(broker, id="abc")
    assert outcome.duplicate is False
    assert outcome.task.state is TaskState.READY


def test_duplicate_id_with_reject_duplicate_is_already_exists(broker: Broker, h) -> None:
    _enqueue(broker, id="abc")
    future = broker.enqueue(TaskSpec(kind="job", id="abc"), reject_duplicate=True)
    with pytest.raises(AlreadyExists, match="'abc'"):
        future.result()
    assert h.count("tasks") == 1


def test_duplicate_id_inside_one_batch_returns_the_first(broker: Broker, h) -> None:
    specs = [TaskSpec(kind="job", id="x", payload=b"1"), TaskSpec(kind="job", id="x")]
    first, second = broker.enqueue_batch(specs).result()
    assert first.duplicate is False
    assert second.duplicate is True
    assert second.task.id == first.task.id
    assert second.task.payload == b"1"
    assert h.count("tasks") == 1


# -- unique keys ---------------------------------------------------------------


def test_unique_key_inside_its_window_returns_the_existing_task(
    broker: Broker, h, clock: FakeClock
) -> None:
    first = _enqueue(broker, unique_key="daily-report", unique_window=60)
    clock.advance(59.9)
    second = _enqueue(broker, unique_key="daily-report", unique_window=60)
    assert second.duplicate is True
    assert second.task.id == first.task.id
    assert h.count("tasks") == 1


def test_unique_key_inside_its_window_holds_after_the_task_finished(
    broker: Broker, h, clock: FakeClock
) -> None:
    first = _enqueue(broker, unique_key="k", unique_window=60)
    h.ack(h.lease_one())
    clock.advance(30)
    outcome = _enqueue(broker, unique_key="k")
    assert outcome.duplicate is True
    assert outcome.task.id == first.task.id


def test_unique_key_outside_its_window_creates_a_new_task(
    broker: Broker, h, clock: FakeClock
) -> None:
    first = _enqueue(broker, unique_key="k", unique_window=60)
    clock.advance(60)
    second = _enqueue(broker, unique_key="k", unique_window=60)
    assert second.duplicate is False
    assert second.task.id != first.task.id
    assert broker.store.read(lambda txn: txn.get_unique("default", "k")) == second.task.id
    third = _enqueue(broker, unique_key="k")
    assert third.task.id == second.task.id


def test_unique_key_with_window_zero_holds_until_the_task_is_final(
    broker: Broker, h, clock: FakeClock
) -> None:
    first = _enqueue(broker, unique_key="k", unique_window=0)
    clock.advance(10 * 24 * 3600)
    assert _enqueue(broker, unique_key="k").task.id == first.task.id
    task = h.lease_one()
    assert _enqueue(broker, unique_key="k").task.id == first.task.id
    h.ack(task)
    outcome = _enqueue(broker, unique_key="k")
    assert outcome.duplicate is False
    assert outcome.task.id != first.task.id


def test_unique_key_without_window_is_held_through_retries(broker: Broker, h) -> None:
    first = _enqueue(broker, unique_key="k")
    h.fail(h.lease_one(), retry_delay=30)
    assert h.get(first.task.id).state is TaskState.SCHEDULED
    assert _enqueue(broker, unique_key="k").duplicate is True


@pytest.mark.parametrize("finish", ["dead", "cancel"])
def test_unique_key_without_window_is_freed_by_any_final_state(
    broker: Broker, h, finish: str
) -> None:
    first = _enqueue(broker, unique_key="k", max_attempts=1)
    if finish == "dead":
        h.fail(h.lease_one())
    else:
        broker.cancel(first.task.id).result()
    assert _enqueue(broker, unique_key="k").duplicate is False


def test_unique_keys_are_per_queue(broker: Broker) -> None:
    a = _enqueue(broker, unique_key="k", queue="a")
    b = _enqueue(broker, unique_key="k", queue="b")
    assert b.duplicate is False
    assert a.task.id != b.task.id


def test_unique_key_duplicate_with_reject_duplicate_is_already_exists(broker: Broker, h) -> None:
    first = _enqueue(broker, unique_key="k")
    future = broker.enqueue(TaskSpec(kind="job", unique_key="k"), reject_duplicate=True)
    with pytest.raises(AlreadyExists, match=repr(first.task.id)):
        future.result()
    assert h.count("tasks") == 1


def test_unique_key_duplicate_inside_one_batch_returns_the_first(broker: Broker, h) -> None:
    specs = [TaskSpec(kind="job", unique_key="k"), TaskSpec(kind="job", unique_key="k")]
    first, second = broker.enqueue_batch(specs).result()
    assert second.duplicate is True
    assert second.task.id == first.task.id
    assert h.count("tasks") == 1


def test_different_id_with_a_held_unique_key_returns_the_holder(broker: Broker, h) -> None:
    first = _enqueue(broker, unique_key="k")
    outcome = _enqueue(broker, unique_key="k", id="my-own-id")
    assert outcome.duplicate is True
    assert outcome.task.id == first.task.id
    with pytest.raises(NotFound, match="not found"):
        h.get("my-own-id")
