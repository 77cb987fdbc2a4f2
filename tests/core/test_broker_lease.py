"""Lease: state changes, ordering (priority > run time > enqueue order), queues, validation."""

from __future__ import annotations

import pytest

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.errors import InvalidArgument
from conveyor_server.core.model import QueueOrder, TaskState


def test_lease_moves_a_ready_task_to_leased(h, clock: FakeClock) -> None:
    task = h.enqueue(lease_duration=45)
    leased = h.lease_one(worker_id="worker-1")
    assert leased.id == task.id
    assert leased.state is TaskState.LEASED
    assert leased.attempt == 1
    assert leased.leased_at == clock.now()
    assert leased.lease_expires_at == clock.now() + 45
    assert leased.worker_id == "worker-1"
    assert len(leased.lease_token) >= 16
    assert h.get(task.id) == leased


def test_lease_duration_of_the_request_overrides_the_task(h, clock: FakeClock) -> None:
    h.enqueue(lease_duration=45)
    assert h.lease_one(lease_duration=3).lease_expires_at == clock.now() + 3


def test_each_lease_gets_a_new_token(h) -> None:
    h.enqueue(lease_duration=10)
    first = h.lease_one()
    h.advance(11)
    second = h.lease_one()
    assert second.lease_token != first.lease_token
    assert second.attempt == 2


def test_a_leased_task_is_not_leased_twice(h) -> None:
    h.enqueue()
    h.lease_one()
    assert h.lease() == []


def test_lease_on_an_empty_queue_returns_nothing(h) -> None:
    batch = h.lease_batch(["nothing-here"], 10)
    assert batch.tasks == []
    assert batch.expired == []


def test_lease_returns_at_most_max_tasks(h) -> None:
    for _ in range(5):
        h.enqueue()
    assert len(h.lease(max_tasks=3)) == 3
    assert len(h.lease(max_tasks=3)) == 2
    assert h.lease(max_tasks=3) == []


def test_lease_takes_only_from_the_named_queues(h) -> None:
    h.enqueue(queue="a")
    h.enqueue(queue="ab")
    h.enqueue(queue="a-b")
    assert [t.queue for t in h.lease(["a"])] == ["a"]
    assert [t.queue for t in h.lease(["a-b"])] == ["a-b"]


def test_ordering_is_priority_then_run_time_then_enqueue_order(h, clock: FakeClock) -> None:
    now = clock.now()
    names = {}
    names[h.enqueue(payload=b"d").id] = "d"  # priority 0, run_at now, first
    names[h.enqueue(payload=b"a", run_at=now - 10).id] = "a"
    names[h.enqueue(payload=b"high", priority=5).id] = "high"
    names[h.enqueue(payload=b"b", run_at=now - 20).id] = "b"
    names[h.enqueue(payload=b"e").id] = "e"  # priority 0, run_at now, second
    names[h.enqueue(payload=b"low", priority=-5, run_at=now - 1000).id] = "low"
    order = [names[t.id] for t in h.lease(max_tasks=10)]
    assert order == ["high", "b", "a", "d", "e", "low"]


def test_ordering_holds_across_separate_leases(h) -> None:
    h.enqueue(payload=b"1")
    h.enqueue(payload=b"2", priority=1)
    h.enqueue(payload=b"3")
    assert [h.lease_one().payload for _ in range(3)] == [b"2", b"1", b"3"]


def test_strict_order_drains_the_first_queue_before_the_next(h) -> None:
    for _ in range(2):
        h.enqueue(queue="high")
        h.enqueue(queue="low")
    queues = [t.queue for t in h.lease(["high", "low"], 3, order=QueueOrder.STRICT)]
    assert queues == ["high", "high", "low"]
    assert [t.queue for t in h.lease(["high", "low"], 1)] == ["low"]


def test_strict_order_takes_the_first_named_queue_each_time(h) -> None:
    for _ in range(3):
        h.enqueue(queue="a")
        h.enqueue(queue="b")
    picked = [h.lease(["b", "a"], 1)[0].queue for _ in range(4)]
    assert picked == ["b", "b", "b", "a"]


def test_round_robin_rotates_the_first_queue_between_calls(h) -> None:
    for _ in range(3):
        h.enqueue(queue="a")
        h.enqueue(queue="b")
        h.enqueue(queue="c")
    order = QueueOrder.ROUND_ROBIN
    picked = [h.lease(["a", "b", "c"], 1, order=order)[0].queue for _ in range(6)]
    assert picked == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_falls_through_to_other_queues_when_one_is_empty(h) -> None:
    for _ in range(4):
        h.enqueue(queue="b")
    order = QueueOrder.ROUND_ROBIN
    picked = [h.lease(["a", "b"], 1, order=order)[0].queue for _ in range(4)]
    assert picked == ["b", "b", "b", "b"]


def test_round_robin_fills_a_batch_from_several_queues(h) -> None:
    h.enqueue(queue="a")
    h.enqueue(queue="b")
    h.enqueue(queue="b")
    tasks = h.lease(["a", "b"], 3, order=QueueOrder.ROUND_ROBIN)
    assert sorted(t.queue for t in tasks) == ["a", "b", "b"]


def test_delayed_task_is_leased_only_once_due(h, clock: FakeClock) -> None:
    task = h.enqueue(delay=60)
    h.advance(59.9)
    assert h.lease() == []
    h.advance(0.1, tick=False)
    leased = h.lease_one()
    assert leased.id == task.id
    assert leased.attempt == 1


def test_lease_promotes_due_scheduled_tasks_without_a_tick(h) -> None:
    task = h.enqueue(delay=5)
    h.advance(5, tick=False)
    assert h.lease_one().id == task.id


def test_delayed_task_sorts_by_its_run_time_once_ready(h, clock: FakeClock) -> None:
    late = h.enqueue(payload=b"later")
    early = h.enqueue(payload=b"earlier", run_at=clock.now() - 1)
    assert [t.id for t in h.lease(max_tasks=2)] == [early.id, late.id]


@pytest.mark.parametrize(
    ("queues", "max_tasks", "kwargs", "field"),
    [
        ([], 1, {}, "queues"),
        ([""], 1, {}, "queues[0]"),
        (["ok", "bad name"], 1, {}, "queues[1]"),
        (["q" * 129], 1, {}, "queues[0]"),
        ([f"q{i}" for i in range(65)], 1, {}, "queues"),
        (["ok"], 0, {}, "max_tasks"),
        (["ok"], -1, {}, "max_tasks"),
        (["ok"], 1001, {}, "max_tasks"),
        (["ok"], 1, {"lease_duration": -1.0}, "lease_duration"),
        (["ok"], 1, {"lease_duration": 3 * 24 * 3600.0}, "lease_duration"),
        (["ok"], 1, {"worker_id": "w" * 257}, "worker_id"),
    ],
)
def test_invalid_lease_request_is_rejected_naming_the_field(
    broker: Broker, h, queues: list[str], max_tasks: int, kwargs: dict, field: str
) -> None:
    h.enqueue(queue="ok")
    with pytest.raises(InvalidArgument) as info:
        broker.lease(queues, max_tasks, **kwargs)
    assert str(info.value).startswith(f"{field}:")
    assert h.count("ready") == 1


def test_max_tasks_at_the_batch_limit_is_accepted(h) -> None:
    h.enqueue()
    assert len(h.lease(max_tasks=1000)) == 1
