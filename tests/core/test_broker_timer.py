"""The timer: lease expiry, delayed tasks, deadlines, retention, next_due_time and tick batches."""

from __future__ import annotations

import random

import pytest

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.errors import NotFound
from conveyor_server.core.model import TaskSpec, TaskState
from conveyor_server.core.settings import BrokerSettings
from conveyor_server.store.memory import MemoryStore

DAY = 24 * 3600.0


# -- lease expiry --------------------------------------------------------------


def test_expired_lease_makes_the_task_ready_again(h, clock: FakeClock) -> None:
    h.enqueue(lease_duration=30, max_attempts=3)
    task = h.lease_one(worker_id="w1")
    out = h.advance(30)
    again = h.get(task.id)
    assert again.state is TaskState.READY
    assert again.lease_token == ""
    assert again.lease_expires_at is None
    assert again.attempt == 1
    assert again.last_error.message == "lease expired"
    assert again.last_error.type == "LeaseExpired"
    assert "'w1'" in again.last_error.details
    assert out.ready_queues == {"default"}
    assert out.finished == []
    assert h.lease_one().attempt == 2


def test_lease_does_not_expire_before_its_time(h) -> None:
    h.enqueue(lease_duration=30)
    task = h.lease_one()
    h.advance(29.999)
    assert h.get(task.id).state is TaskState.LEASED
    assert h.lease() == []


def test_expired_lease_on_the_last_attempt_is_dead(h, clock: FakeClock) -> None:
    h.enqueue(lease_duration=10, max_attempts=2)
    h.lease_one()
    h.advance(10)
    task = h.lease_one()
    out = h.advance(10)
    dead = h.get(task.id)
    assert dead.state is TaskState.DEAD
    assert dead.attempt == 2
    assert dead.finished_at == clock.now()
    assert dead.last_error.message == "lease expired"
    assert dead.last_error.attempt == 2
    assert [t.id for t in out.finished] == [task.id]
    assert out.ready_queues == set()
    assert h.lease() == []


def test_expired_lease_keeps_the_task_s_place_by_its_run_time(h) -> None:
    h.enqueue(payload=b"old", lease_duration=5)
    h.lease_one()
    h.enqueue(payload=b"new")
    h.advance(5)
    assert [t.payload for t in h.lease(max_tasks=2)] == [b"old", b"new"]


# -- delayed tasks -------------------------------------------------------------


def test_tick_makes_due_scheduled_tasks_ready(h) -> None:
    task = h.enqueue(queue="later", delay=10)
    out = h.advance(9)
    assert out.ready_queues == set()
    assert h.get(task.id).state is TaskState.SCHEDULED
    out = h.advance(1)
    assert out.ready_queues == {"later"}
    assert h.get(task.id).state is TaskState.READY


def test_task_delayed_two_days_is_never_delivered_early(h) -> None:
    task = h.enqueue(delay=2 * DAY, lease_duration=30)
    for _ in range(int(2 * DAY // 3600) - 1):
        h.advance(3600)
        assert h.lease() == []
    h.advance(3599)
    assert h.lease() == []
    stored = h.get(task.id)
    assert stored.state is TaskState.SCHEDULED
    assert stored.attempt == 0
    assert stored.last_error is None
    h.advance(1)
    leased = h.lease_one()
    assert leased.id == task.id
    assert leased.attempt == 1


def test_delayed_task_is_untouched_by_other_tasks_lease_timeouts(h) -> None:
    delayed = h.enqueue(delay=2 * DAY, max_attempts=1)
    h.enqueue(lease_duration=1, max_attempts=100)
    for _ in range(50):
        h.lease_one()
        h.advance(1)
    assert h.get(delayed.id).state is TaskState.SCHEDULED
    assert h.get(delayed.id).attempt == 0


# -- deadlines -----------------------------------------------------------------


def test_ready_task_past_its_deadline_is_expired_by_tick(h, clock: FakeClock) -> None:
    task = h.enqueue(deadline=clock.now() + 10)
    h.advance(9.9)
    assert h.get(task.id).state is TaskState.READY
    out = h.advance(0.1)
    expired = h.get(task.id)
    assert expired.state is TaskState.EXPIRED
    assert expired.finished_at == clock.now()
    assert [t.id for t in out.finished] == [task.id]
    assert h.lease() == []


def test_scheduled_task_past_its_deadline_is_expired_by_tick(h, clock: FakeClock) -> None:
    task = h.enqueue(delay=100, deadline=clock.now() + 50)
    h.advance(50)
    assert h.get(task.id).state is TaskState.EXPIRED
    h.advance(100)
    assert h.lease() == []


def test_task_past_its_deadline_found_at_lease_time_is_expired(h, clock: FakeClock) -> None:
    doomed = h.enqueue(deadline=clock.now() + 10, priority=1)
    fine = h.enqueue()
    clock.advance(10)
    batch = h.lease_batch(max_tasks=1)
    assert [t.id for t in batch.tasks] == [fine.id]
    assert [t.id for t in batch.expired] == [doomed.id]
    assert h.get(doomed.id).state is TaskState.EXPIRED


def test_deadline_does_not_interrupt_a_running_lease(h, clock: FakeClock) -> None:
    h.enqueue(deadline=clock.now() + 10, lease_duration=60)
    task = h.lease_one()
    h.advance(20)
    assert h.get(task.id).state is TaskState.LEASED
    assert h.ack(task).error is None


def test_task_whose_lease_expires_after_its_deadline_expires_instead_of_running(
    broker: Broker, h, clock: FakeClock
) -> None:
    h.enqueue(deadline=clock.now() + 10, lease_duration=20, max_attempts=3)
    task = h.lease_one()
    h.advance(20)
    assert broker.next_due_time() <= clock.now()  # the timer comes back at once
    out = h.tick()
    assert [t.id for t in out.finished] == [task.id]
    assert h.get(task.id).state is TaskState.EXPIRED
    assert h.lease() == []


# -- retention -----------------------------------------------------------------


def test_finished_task_is_removed_after_its_retention(h) -> None:
    h.enqueue(result_retention=60)
    task = h.lease_one()
    h.ack(task)
    assert h.advance(59.9).removed == 0
    assert h.get(task.id).state is TaskState.SUCCEEDED
    assert h.advance(0.1).removed == 1
    with pytest.raises(NotFound):
        h.get(task.id)
    assert h.count("tasks") == 0
    assert h.count("retention") == 0


@pytest.mark.parametrize("finish", ["dead", "cancelled", "expired"])
def test_every_final_state_is_removed_after_retention(
    broker: Broker, h, clock: FakeClock, finish: str
) -> None:
    task = h.enqueue(result_retention=5, max_attempts=1, deadline=clock.now() + 1)
    if finish == "dead":
        h.fail(h.lease_one())
    elif finish == "cancelled":
        broker.cancel(task.id).result()
    h.advance(1)
    assert h.get(task.id).state.is_final
    h.advance(5)
    with pytest.raises(NotFound):
        h.get(task.id)


def test_zero_retention_removes_the_task_at_the_next_tick(h) -> None:
    h.enqueue(result_retention=0)
    task = h.lease_one()
    h.ack(task)
    assert h.tick().removed == 1
    with pytest.raises(NotFound):
        h.get(task.id)


def test_unfinished_tasks_are_never_removed(h) -> None:
    waiting = h.enqueue(result_retention=0, delay=10 * DAY)
    h.enqueue(result_retention=0, lease_duration=DAY)
    leased = h.lease_one()
    h.advance(DAY / 2)
    assert h.get(waiting.id).state is TaskState.SCHEDULED
    assert h.get(leased.id).state is TaskState.LEASED


def test_retention_frees_the_unique_key(broker: Broker, h) -> None:
    first = h.enqueue(unique_key="report", unique_window=3600, result_retention=60)
    h.ack(h.lease_one())
    h.advance(61)
    assert broker.store.read(lambda txn: txn.get_unique("default", "report")) is None
    outcome = broker.enqueue(TaskSpec(kind="job", unique_key="report")).result()
    assert outcome.duplicate is False
    assert outcome.task.id != first.id


def test_retention_keeps_a_unique_key_taken_over_by_a_newer_task(broker: Broker, h) -> None:
    old = h.enqueue(unique_key="k", unique_window=10, result_retention=100)
    h.ack(h.lease_one())
    h.advance(11)
    new = h.enqueue(unique_key="k")
    assert new.id != old.id
    h.advance(100)
    with pytest.raises(NotFound):
        h.get(old.id)
    again = broker.enqueue(TaskSpec(kind="job", unique_key="k")).result()
    assert again.duplicate is True
    assert again.task.id == new.id


# -- next_due_time and tick batches --------------------------------------------


def test_next_due_time_is_none_when_nothing_waits(broker: Broker, h) -> None:
    assert broker.next_due_time() is None
    h.enqueue()
    assert broker.next_due_time() is None


def test_next_due_time_names_the_earliest_timer(broker: Broker, h, clock: FakeClock) -> None:
    now = clock.now()
    h.enqueue(delay=100)
    assert broker.next_due_time() == pytest.approx(now + 100, abs=1e-6)
    h.enqueue(deadline=now + 50)
    assert broker.next_due_time() == pytest.approx(now + 50, abs=1e-6)
    h.enqueue(queue="fast", lease_duration=20)
    h.lease_one("fast")
    assert broker.next_due_time() == pytest.approx(now + 20, abs=1e-6)


def test_next_due_time_includes_retention(broker: Broker, h, clock: FakeClock) -> None:
    h.enqueue(result_retention=500)
    h.ack(h.lease_one())
    assert broker.next_due_time() == pytest.approx(clock.now() + 500, abs=1e-6)


def test_tick_reports_more_due_when_it_hits_its_batch_limit(clock: FakeClock) -> None:
    broker = Broker(MemoryStore(), clock, BrokerSettings(tick_batch=2), rng=random.Random(1))
    for _ in range(5):
        broker.enqueue(TaskSpec(kind="job", delay=1)).result()
    clock.advance(1)
    first = broker.tick().result()
    assert first.is_more_due is True
    broker.tick().result()
    last = broker.tick().result()
    assert last.is_more_due is False
    assert broker.store.read(lambda txn: txn.count("ready")) == 5


def test_tick_with_nothing_due_changes_nothing(h) -> None:
    task = h.enqueue(delay=10)
    out = h.tick()
    assert out.ready_queues == set()
    assert out.finished == []
    assert out.removed == 0
    assert out.is_more_due is False
    assert h.get(task.id) == task
