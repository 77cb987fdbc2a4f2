"""The broker's lease path under flow limits and concurrency keys (memory store, fake clock)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from conveyor_server.core import fair
from conveyor_server.core.broker import LeaseGrant
from conveyor_server.core.errors import InvalidArgument
from conveyor_server.core.flow import QueueLimits
from conveyor_server.core.model import TaskSpec, TaskState
from conveyor_server.core.queues import QueueAdmin, QueueUpdate
from tests.core.conftest import Harness


@pytest.fixture
def admin(h: Harness) -> QueueAdmin:
    return QueueAdmin(h.broker)


def limit(h: Harness, admin: QueueAdmin, queue: str = "q", **values: Any) -> None:
    """UpdateQueue as service/queue_ops.py runs it: store, then tell the broker's cache."""
    outcome = admin.update(queue, QueueUpdate(values)).result()
    h.broker.note_limits(queue, outcome.limits)


def fill(h: Harness, n: int, queue: str = "q", **fields: Any) -> list[str]:
    return [h.enqueue(queue=queue, **fields).id for _ in range(n)]


def test_concurrency_caps_the_leased_tasks_across_calls(h: Harness, admin: QueueAdmin) -> None:
    limit(h, admin, concurrency=3)
    fill(h, 10)
    first = h.lease(["q"], 2)
    second = h.lease_batch(["q"], 5)
    assert len(first) == 2 and len(second.tasks) == 1
    assert second.throttled == [("q", "concurrency")]
    third = h.lease_batch(["q"], 5)
    assert third.tasks == [] and third.throttled == [("q", "concurrency")]
    h.ack(first[0])
    assert len(h.lease(["q"], 5)) == 1  # one slot freed, one more task
    assert h.broker.store.read(lambda txn: txn.leased_count("q")) == 3


def test_a_limit_holds_back_nothing_it_does_not_need_to(h: Harness, admin: QueueAdmin) -> None:
    limit(h, admin, concurrency=5)
    fill(h, 2)
    batch = h.lease_batch(["q"], 10)
    assert len(batch.tasks) == 2 and batch.throttled == []


def test_expired_leases_and_failures_free_slots(h: Harness, admin: QueueAdmin) -> None:
    limit(h, admin, concurrency=1)
    fill(h, 3)
    h.lease_one("q", lease_duration=5)
    assert h.lease(["q"]) == []
    h.advance(6)  # the lease runs out: READY again, the slot is free
    again = h.lease_one("q")
    assert h.lease(["q"]) == []
    h.fail(again, retry_delay=0)  # READY again at once: the slot is free
    h.lease_one("q")
    assert h.broker.store.read(lambda txn: txn.leased_count("q")) == 1


def test_key_concurrency_caps_each_key_and_other_keys_go_on(h: Harness, admin: QueueAdmin) -> None:
    limit(h, admin, key_concurrency=2)
    fill(h, 5, concurrency_key="a")
    fill(h, 5, concurrency_key="b")
    fill(h, 1)  # no key: not capped by key_concurrency
    batch = h.lease_batch(["q"], 10)
    keys = Counter(t.concurrency_key for t in batch.tasks)
    assert keys == {"a": 2, "b": 2, "": 1}
    assert ("q", "key_concurrency") not in batch.throttled  # every key had its turn
    again = h.lease_batch(["q"], 10)
    assert again.tasks == [] and again.throttled == [("q", "key_concurrency")]
    h.ack(batch.tasks[0])
    (one,) = h.lease(["q"], 10)
    assert one.concurrency_key == batch.tasks[0].concurrency_key
    read = h.broker.store.read
    assert read(lambda txn: txn.leased_count("q", "a")) == 2
    assert read(lambda txn: txn.leased_count("q")) == 5


def test_leasing_takes_turns_between_keys(h: Harness) -> None:
    fill(h, 300, concurrency_key="A")
    b = set(fill(h, 10, concurrency_key="B"))
    order: list[str] = []
    while len(order) < 40:
        order += [t.id for t in h.lease(["q"], 3)]
    assert b <= set(order[:40])


def test_turns_resume_after_the_key_served_last(h: Harness) -> None:
    for key in ("a", "b", "c"):
        fill(h, 4, concurrency_key=key)
    served = [h.lease_one("q").concurrency_key for _ in range(6)]
    assert served == ["a", "b", "c", "a", "b", "c"]


def test_unkeyed_tasks_are_one_more_key_in_the_turns(h: Harness) -> None:
    fill(h, 50)  # no key
    fill(h, 2, concurrency_key="k")
    served = [t.concurrency_key for t in h.lease(["q"], 4)]
    assert sorted(served) == ["", "", "k", "k"]


def test_priority_orders_tasks_within_a_key(h: Harness) -> None:
    low = h.enqueue(queue="q", concurrency_key="a", priority=-5).id
    high = h.enqueue(queue="q", concurrency_key="a", priority=9).id
    other = h.enqueue(queue="q", concurrency_key="b", priority=-50).id
    ids = [t.id for t in h.lease(["q"], 3)]
    assert ids.index(high) < ids.index(low) and other in ids[:2]


def test_rate_limit_leases_the_burst_then_one_per_interval(h: Harness, admin: QueueAdmin) -> None:
    limit(h, admin, rate=10, burst=3)
    fill(h, 50)
    assert len(h.lease(["q"], 50)) == 3
    empty = h.lease_batch(["q"], 50)
    assert empty.tasks == [] and empty.throttled == [("q", "rate")]
    assert empty.refill_at == pytest.approx(h.clock.now() + 0.1)
    h.clock.advance(0.25)
    assert len(h.lease(["q"], 50)) == 2
    h.clock.advance(10)
    assert len(h.lease(["q"], 50)) == 3  # the bucket holds no more than burst


def test_limits_are_stored_and_read_back(h: Harness, admin: QueueAdmin) -> None:
    limit(h, admin, rate=2.5, concurrency=4)
    limit(h, admin, key_concurrency=1)  # only the named field changes
    (info,) = [q for q in admin.queues() if q.name == "q"]
    assert (info.limits.rate, info.limits.concurrency, info.limits.key_concurrency) == (2.5, 4, 1)
    assert info.counts == {}  # listed with no task, like a paused queue
    limit(h, admin, rate=0, concurrency=0, key_concurrency=0)
    assert "q" not in {q.name for q in admin.queues()}
    assert not h.broker.is_limited("q")


def test_update_refuses_bad_values_naming_the_field(admin: QueueAdmin) -> None:
    with pytest.raises(InvalidArgument, match=r"limits\.rate"):
        admin.update("q", QueueUpdate({"rate": float("nan")}))
    with pytest.raises(InvalidArgument, match=r"limits\.concurrency"):
        admin.update("q", QueueUpdate({"concurrency": -1}))
    with pytest.raises(InvalidArgument, match="name"):
        admin.update("bad name", QueueUpdate({"rate": 1.0}))


def test_a_burst_needs_a_rate(h: Harness, admin: QueueAdmin) -> None:
    """A burst alone limits nothing: refused naming limits.burst, not dropped silently."""
    with pytest.raises(InvalidArgument, match=r"^limits\.burst: burst needs a rate"):
        admin.update("q", QueueUpdate({"burst": 20})).result()
    limit(h, admin, concurrency=2)
    with pytest.raises(InvalidArgument, match=r"limits\.burst"):  # a limit, but no rate
        admin.update("q", QueueUpdate({"burst": 20})).result()
    with pytest.raises(InvalidArgument, match=r"limits\.burst"):
        admin.update("q", QueueUpdate({"rate": 0.0, "burst": 20})).result()
    assert admin.queue("q").limits == QueueLimits(concurrency=2)  # nothing was written
    limit(h, admin, rate=5, burst=20)
    assert admin.queue("q").limits == QueueLimits(5.0, 20, 2)


def test_a_burst_alone_changes_on_a_queue_with_a_rate(h: Harness, admin: QueueAdmin) -> None:
    limit(h, admin, rate=5)
    limit(h, admin, burst=20)  # a mask of limits.burst only
    assert admin.queue("q").limits == QueueLimits(rate=5.0, burst=20)
    fill(h, 30)
    assert len(h.lease(["q"], 50)) == 5  # the bucket was full at its old size
    h.clock.advance(10)
    assert len(h.lease(["q"], 50)) == 20  # and fills up to the new burst
    limit(h, admin, rate=0)  # clearing the rate drops its burst with it
    assert admin.queue("q").limits == QueueLimits()
    assert h.broker.store.read(lambda txn: txn.get_queue_flow("q")) is None
    limit(h, admin, rate=2)
    assert admin.queue("q").limits == QueueLimits(rate=2.0)


def test_update_pauses_and_resumes(h: Harness, admin: QueueAdmin) -> None:
    fill(h, 1)
    assert admin.update("q", QueueUpdate(paused=True)).result().is_paused
    assert h.lease(["q"]) == []
    outcome = admin.update("q", QueueUpdate(paused=False)).result()
    assert outcome.was_paused and not outcome.is_paused
    assert len(h.lease(["q"])) == 1


def test_an_enqueue_hands_no_task_over_past_a_limit(h: Harness, admin: QueueAdmin) -> None:
    limit(h, admin, concurrency=1)
    fill(h, 1)
    h.lease_one("q")
    grant = LeaseGrant(None, "w")
    outcome = h.broker.enqueue(TaskSpec(kind="job", queue="q"), lease_to=grant).result()
    assert outcome.task.state is TaskState.READY


def test_keyed_tasks_count_as_leasable_and_are_purged(h: Harness, admin: QueueAdmin) -> None:
    fill(h, 3, concurrency_key="a")
    fill(h, 2, concurrency_key="b")
    assert h.broker.has_leasable(["q"])
    (info,) = admin.queues()
    assert info.oldest_ready_at is not None and info.counts == {TaskState.READY: 5}
    batch = admin.purge_batch("q", {TaskState.READY}, "", 0).result()
    assert batch.count == 5
    assert not h.broker.has_leasable(["q"])


def test_a_keyed_task_another_broker_enqueued_is_still_leased(h: Harness) -> None:
    h.broker.store.is_shared = True  # type: ignore[misc]  # a store other brokers write
    h.enqueue(queue="q", concurrency_key="z")
    h.broker.keyed_queues.clear()  # as if enqueued through another broker
    assert [t.concurrency_key for t in h.lease(["q"])] == ["z"]


def test_keyed_tasks_become_ready_again_after_a_release(h: Harness) -> None:
    task = h.enqueue(queue="q", concurrency_key="k")
    leased = h.lease_one("q")
    h.broker.keyed_queues.clear()
    h.release(leased)
    assert h.lease_one("q").id == task.id


def test_keys_cut_off_by_a_full_answer_keep_their_turn(h: Harness, admin: QueueAdmin) -> None:
    """The key cursor moves to the last key actually leased, not the last one picked: a
    lease that the answer's byte budget cuts short leaves the rest their turn."""
    limit(h, admin, key_concurrency=1000)
    payload = b"x" * (1024 * 1024)  # 1 MiB: about 63 fit one answer
    for k in range(100):
        fill(h, 3, concurrency_key=f"k{k:03d}", payload=payload)
    served: Counter[str] = Counter()
    for _ in range(3):
        batch = h.lease_batch(["q"], 100)
        assert 0 < len(batch.tasks) < 100  # cut by the answer size, not by the keys
        served.update(t.concurrency_key for t in batch.tasks)
    assert sorted(served) == [f"k{k:03d}" for k in range(100)]
    assert max(served.values()) <= 2


def test_a_free_key_past_the_walk_cap_is_still_leased(h: Harness, admin: QueueAdmin) -> None:
    """A ring longer than one pick's walk, all at key_concurrency but one key far on: the
    lease finds it instead of coming back empty (nothing would wake a parked Lease)."""
    limit(h, admin, key_concurrency=1)
    n = fair.MAX_KEYS_LOOKED_AT + 76
    for k in range(n):
        fill(h, 2, concurrency_key=f"k{k:05d}")
    # each key's first task: all keys at their limit, the cursor on the last key
    assert len(h.lease(["q"], 1000)) + len(h.lease(["q"], 1000)) == n
    fill(h, 1, concurrency_key=f"k{n - 50:05d}x")  # a new key, free, a whole walk on
    batch = h.lease_batch(["q"], 1)
    assert [t.concurrency_key for t in batch.tasks] == [f"k{n - 50:05d}x"]


def test_keys_past_a_long_run_at_their_limit_get_their_turn(h: Harness, admin: QueueAdmin) -> None:
    """A free key, then more keys at their limit than one walk looks at, then another free
    key: the next lease goes on where the walk stopped, not back at the first free key."""
    limit(h, admin, key_concurrency=1)
    n = fair.MAX_KEYS_LOOKED_AT + 76
    fill(h, 10, concurrency_key="a")
    for k in range(n):
        fill(h, 2, concurrency_key=f"k{k:05d}")
    fill(h, 10, concurrency_key="z")
    first = h.lease(["q"], 1000) + h.lease(["q"], 1000)  # every key's head: all at 1
    assert len(first) == n + 2
    for task in first:
        if task.concurrency_key in ("a", "z"):
            h.ack(task)
    served = []
    for _ in range(2):  # a, then (the walk goes on where it stopped) z
        tasks = h.lease(["q"], 10)
        served += [t.concurrency_key for t in tasks]
        for task in tasks:
            h.ack(task)
    assert "a" in served and "z" in served
