"""core/queues.py: pause, purge, list, retry and delete over the memory store and a fake clock."""

from __future__ import annotations

import pytest

from conveyor_server.core.broker import LeaseGrant
from conveyor_server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from conveyor_server.core.model import TaskSpec, TaskState
from conveyor_server.core.queues import SCAN_BUDGET, QueueAdmin, TaskFilter
from tests.core.conftest import Harness


@pytest.fixture
def admin(h: Harness) -> QueueAdmin:
    return QueueAdmin(h.broker)


def drain(admin_call, *args):  # type: ignore[no-untyped-def]
    """Run a batched operation to the end, as service/queue_ops.py does."""
    total, after = 0, ""
    while True:
        batch = admin_call(*args, after, 0).result()
        total += batch.count
        if batch.is_done:
            return total
        after = batch.next_after


def test_paused_queue_leases_nothing_but_takes_enqueues(h: Harness, admin: QueueAdmin) -> None:
    admin.pause("q").result()
    task = h.enqueue(queue="q")
    assert task.state is TaskState.READY
    assert h.lease(["q"]) == []
    assert not h.broker.has_leasable(["q"])
    assert admin.resume("q").result() is True
    assert [t.id for t in h.lease(["q"])] == [task.id]


def test_pause_skips_only_that_queue(h: Harness, admin: QueueAdmin) -> None:
    h.enqueue(queue="a")
    b = h.enqueue(queue="b")
    admin.pause("a").result()
    assert [t.id for t in h.lease(["a", "b"])] == [b.id]


def test_paused_queue_gets_no_hand_over(h: Harness, admin: QueueAdmin) -> None:
    admin.pause("q").result()
    outcome = h.broker.enqueue(TaskSpec("job", queue="q"), lease_to=LeaseGrant(None, "w")).result()
    assert outcome.task.state is TaskState.READY


def test_resume_of_a_queue_not_paused_says_so(admin: QueueAdmin) -> None:
    assert admin.resume("q").result() is False


def test_queues_lists_depths_and_paused_empty_queues(h: Harness, admin: QueueAdmin) -> None:
    h.enqueue(queue="a")
    h.enqueue(queue="a", delay=60)
    admin.pause("z").result()
    listed = {q.name: q for q in admin.queues()}
    assert listed["a"].counts == {TaskState.READY: 1, TaskState.SCHEDULED: 1}
    assert listed["a"].oldest_ready_at == h.clock.now()
    assert listed["z"].is_paused and listed["z"].counts == {}
    assert admin.queue("nothing-here").counts == {}


def test_bad_queue_name_is_invalid(admin: QueueAdmin) -> None:
    with pytest.raises(InvalidArgument, match="name"):
        admin.pause("")
    with pytest.raises(InvalidArgument, match="name"):
        admin.queue("bad name")


def test_purge_ready_and_dead_counts_what_it_deleted(h: Harness, admin: QueueAdmin) -> None:
    for _ in range(3):
        h.enqueue(queue="q")
    other = h.enqueue(queue="other")
    dead = h.enqueue(queue="q", max_attempts=1)
    h.enqueue(queue="q", delay=60)
    # lease the oldest READY of q, then make the 'dead' one DEAD
    leased = h.lease(["q"], 10)
    for task in leased:
        if task.id == dead.id:
            h.fail(task, is_retryable=False)
        else:
            h.release(task)
    states = {TaskState.READY, TaskState.DEAD}
    assert drain(lambda *a: admin.purge_batch("q", states, *a)) == 4
    assert {q.name: q.counts for q in admin.queues()} == {
        "other": {TaskState.READY: 1},
        "q": {TaskState.SCHEDULED: 1},
    }
    assert h.get(other.id).state is TaskState.READY


def test_purge_runs_in_batches_of_the_given_size(h: Harness, admin: QueueAdmin) -> None:
    h.broker.enqueue_batch([TaskSpec("job", queue="q") for _ in range(25)]).result()
    batch = admin.purge_batch("q", {TaskState.READY}, "", 10).result()
    assert batch.count == 10 and not batch.is_done
    assert drain(lambda *a: admin.purge_batch("q", {TaskState.READY}, *a)) == 15


def test_purge_refuses_leased_and_empty_states(admin: QueueAdmin) -> None:
    with pytest.raises(InvalidArgument, match="LEASED"):
        admin.purge_batch("q", {TaskState.LEASED}, "", 0)
    with pytest.raises(InvalidArgument, match="states"):
        admin.purge_batch("q", set(), "", 0)


def test_purge_frees_unique_keys(h: Harness, admin: QueueAdmin) -> None:
    first = h.enqueue(queue="q", unique_key="k")
    drain(lambda *a: admin.purge_batch("q", {TaskState.READY}, *a))
    assert h.enqueue(queue="q", unique_key="k").id != first.id


def test_list_tasks_filters_and_pages_both_ways(h: Harness, admin: QueueAdmin) -> None:
    made = []
    for n in range(7):
        made.append(h.enqueue(queue="q", kind="a" if n % 2 else "b").id)
        h.clock.advance(1)
    h.enqueue(queue="other")
    where = TaskFilter(queue="q", kind="b")
    page = admin.list_tasks(where, "", 2)
    assert [t.id for t in page.tasks] == [made[0], made[2]]
    page2 = admin.list_tasks(where, page.next_after, 2)
    assert [t.id for t in page2.tasks] == [made[4], made[6]]
    assert admin.list_tasks(where, page2.next_after, 2).tasks == []
    newest = admin.list_tasks(TaskFilter(queue="q"), "", 3, newest_first=True)
    assert [t.id for t in newest.tasks] == made[::-1][:3]
    rest = admin.list_tasks(TaskFilter(queue="q"), newest.next_after, 10, newest_first=True)
    assert [t.id for t in rest.tasks] == made[::-1][3:] and rest.next_after == ""
    start = h.clock.now() - 7
    window = TaskFilter(created_after=start + 2, created_before=start + 4)
    assert [t.id for t in admin.list_tasks(window, "", 10).tasks] == made[2:4]


def test_list_tasks_reads_a_bounded_number_of_records(h: Harness, admin: QueueAdmin) -> None:
    h.broker.enqueue_batch([TaskSpec("job", queue="big") for _ in range(1000)]).result()
    for _ in range(SCAN_BUDGET // 1000):
        h.broker.enqueue_batch([TaskSpec("job", queue="big") for _ in range(1000)]).result()
    needle = h.enqueue(queue="needle")
    page = admin.list_tasks(TaskFilter(queue="needle"), "", 10)
    assert page.tasks == [] and page.next_after  # budget used up: continue from the token
    assert [
        t.id for t in admin.list_tasks(TaskFilter(queue="needle"), page.next_after, 10).tasks
    ] == [needle.id]


def test_list_tasks_refuses_a_huge_page(admin: QueueAdmin) -> None:
    with pytest.raises(InvalidArgument, match="page_size"):
        admin.list_tasks(TaskFilter(), "", 1001)


def _dead(h: Harness, queue: str = "q", **fields: object):  # type: ignore[no-untyped-def]
    task = h.enqueue(queue=queue, max_attempts=1, **fields)
    leased = h.lease_one(queue)
    assert leased.id == task.id
    h.fail(leased, is_retryable=False)
    return h.get(task.id)


def test_retry_by_id_makes_a_dead_task_ready_with_attempts_reset(
    h: Harness, admin: QueueAdmin
) -> None:
    dead = _dead(h)
    assert dead.state is TaskState.DEAD and dead.attempt == 1
    h.clock.advance(5)
    [task] = admin.retry_ids([dead.id]).result()
    assert task.state is TaskState.READY and task.attempt == 0
    assert task.finished_at is None and task.run_at == h.clock.now()
    assert task.last_error is not None  # history kept
    again = h.lease_one("q")
    assert again.id == dead.id and again.attempt == 1


def test_retry_of_an_expired_task_clears_its_deadline(h: Harness, admin: QueueAdmin) -> None:
    task = h.enqueue(queue="q", deadline=h.clock.now() + 1)
    h.advance(2)
    assert h.get(task.id).state is TaskState.EXPIRED
    admin.retry_ids([task.id]).result()
    h.advance(10)
    assert h.get(task.id).state is TaskState.READY


def test_retry_by_ids_is_all_or_nothing(h: Harness, admin: QueueAdmin) -> None:
    dead = _dead(h)
    ready = h.enqueue(queue="q")
    with pytest.raises(FailedPrecondition, match="READY"):
        admin.retry_ids([dead.id, ready.id]).result()
    assert h.get(dead.id).state is TaskState.DEAD
    with pytest.raises(NotFound):
        admin.retry_ids([dead.id, "missing"]).result()
    with pytest.raises(InvalidArgument, match="task_ids"):
        admin.retry_ids([])


def test_retry_by_filter_takes_only_final_matches(h: Harness, admin: QueueAdmin) -> None:
    dead = [_dead(h, kind="a") for _ in range(3)]
    _dead(h, kind="b")
    cancelled = h.enqueue(queue="q", kind="a")
    h.broker.cancel(cancelled.id).result()
    h.enqueue(queue="q", kind="a")
    where = admin.check_retry_filter(TaskFilter(queue="q", kind="a"), 0)
    assert drain(lambda *a: admin.retry_batch(where, *a)) == 4
    assert all(h.get(t.id).state is TaskState.READY for t in dead)
    with pytest.raises(InvalidArgument, match="states"):
        admin.retry_batch(TaskFilter(states=frozenset({TaskState.READY})), "", 0)


def test_retry_retakes_a_free_unique_key(h: Harness, admin: QueueAdmin) -> None:
    dead = _dead(h, unique_key="k")
    admin.retry_ids([dead.id]).result()
    assert h.enqueue(queue="q", unique_key="k").id == dead.id  # a duplicate of the retried


def test_delete_removes_a_task_but_not_a_leased_one(h: Harness, admin: QueueAdmin) -> None:
    task = h.enqueue(queue="q")
    admin.delete(task.id).result()
    with pytest.raises(NotFound):
        h.get(task.id)
    with pytest.raises(NotFound):
        admin.delete(task.id).result()
    h.enqueue(queue="q")
    leased = h.lease_one("q")
    with pytest.raises(FailedPrecondition, match="LEASED"):
        admin.delete(leased.id).result()


def test_leased_by_worker_counts_leases(h: Harness, admin: QueueAdmin) -> None:
    for _ in range(3):
        h.enqueue(queue="q")
    h.lease(["q"], 2, worker_id="w1")
    h.lease(["q"], 1, worker_id="w2")
    assert admin.leased_by_worker() == {"w1": 2, "w2": 1}
