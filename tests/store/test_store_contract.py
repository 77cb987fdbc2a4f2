"""The Store contract, run against every store: TaskTxn verbs, commit, read and rollback."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from conveyor_server.core.model import RetryPolicy, Task, TaskError, TaskResult, TaskState
from conveyor_server.core.store import TaskTxn
from conveyor_server.store.base import WriteInReadTransaction

NOW = 1_800_000_000.0


class Boom(Exception):
    """A write function's own error; it must reach the caller unchanged."""


def write(store: Any, fn: Callable[[TaskTxn], Any]) -> Any:
    return store.write(fn).result(timeout=10)


def read(store: Any, fn: Callable[[TaskTxn], Any]) -> Any:
    return store.read(fn)


def put(store: Any, *tasks: Task) -> None:
    def apply(txn: TaskTxn) -> None:
        for task in tasks:
            txn.put_task(task)

    write(store, apply)


def counts(store: Any) -> dict[str, int]:
    names = ("tasks", "ready", "scheduled", "leases", "deadlines", "retention", "unique")
    return read(store, lambda txn: {name: txn.count(name) for name in names})


def nonzero(store: Any) -> dict[str, int]:
    return {name: n for name, n in counts(store).items() if n}


# -- write and read ------------------------------------------------------------


def test_write_future_carries_the_function_result(store: Any) -> None:
    assert write(store, lambda txn: 42) == 42


def test_read_returns_the_function_result(store: Any) -> None:
    assert read(store, lambda txn: "value") == "value"


def test_read_of_a_missing_task_is_none(store: Any) -> None:
    assert read(store, lambda txn: txn.get_task("missing")) is None


def test_empty_store_has_no_entries_and_no_due_time(store: Any) -> None:
    assert nonzero(store) == {}
    assert read(store, lambda txn: txn.next_due_time()) is None


def test_committed_task_round_trips_every_field(store: Any, make_task) -> None:
    task = make_task(
        queue="mail",
        kind="send",
        payload=bytes(range(256)),
        content_type="application/octet-stream",
        headers={"a": "1", "trace-id": "xyz"},
        priority=-7,
        run_at=NOW + 0.25,
        deadline=NOW + 100.5,
        max_attempts=9,
        retry_policy=RetryPolicy(initial_backoff=0.5, multiplier=3, max_backoff=90, jitter=0.1),
        lease_duration=12.5,
        unique_key="uk",
        unique_window=60,
        result_retention=7,
        state=TaskState.LEASED,
        sequence=12345,
        created_at=NOW - 1,
        updated_at=NOW + 2,
        attempt=2,
        leased_at=NOW + 1,
        lease_expires_at=NOW + 13.5,
        lease_token="abcdef0123456789abcdef01",
        worker_id="worker-7",
        cancel_requested=True,
        last_error=TaskError("E", "message", "details", 1, NOW + 0.5),
        result=TaskResult(b"\x00result", "text/plain"),
    )
    put(store, task)
    assert read(store, lambda txn: txn.get_task(task.id)) == task


def test_finished_task_round_trips_its_finish_time(store: Any, make_task) -> None:
    task = make_task(state=TaskState.SUCCEEDED, finished_at=NOW + 3)
    put(store, task)
    assert read(store, lambda txn: txn.get_task(task.id)) == task


def test_later_write_sees_an_earlier_commit(store: Any, make_task) -> None:
    task = make_task()
    put(store, task)
    assert write(store, lambda txn: txn.get_task(task.id)) == task


def test_write_in_a_read_transaction_fails(store: Any, make_task) -> None:
    with pytest.raises(WriteInReadTransaction):
        read(store, lambda txn: txn.put_task(make_task()))
    assert nonzero(store) == {}


# -- indexes follow the task state ---------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"state": TaskState.READY}, {"ready": 1}),
        ({"state": TaskState.SCHEDULED, "run_at": NOW + 5}, {"scheduled": 1}),
        ({"state": TaskState.LEASED, "lease_expires_at": NOW + 30}, {"leases": 1}),
        ({"state": TaskState.READY, "deadline": NOW + 9}, {"ready": 1, "deadlines": 1}),
        ({"state": TaskState.SCHEDULED, "deadline": NOW + 9}, {"scheduled": 1, "deadlines": 1}),
        ({"state": TaskState.LEASED, "deadline": NOW + 9, "lease_expires_at": NOW}, {"leases": 1}),
        ({"state": TaskState.SUCCEEDED, "finished_at": NOW}, {"retention": 1}),
        ({"state": TaskState.DEAD, "finished_at": NOW, "deadline": NOW + 9}, {"retention": 1}),
        ({"state": TaskState.CANCELLED, "finished_at": NOW}, {"retention": 1}),
        ({"state": TaskState.EXPIRED, "finished_at": NOW}, {"retention": 1}),
    ],
)
def test_put_task_indexes_the_task_by_its_state(
    store: Any, make_task, fields: dict, expected: dict[str, int]
) -> None:
    put(store, make_task(**fields))
    assert nonzero(store) == {"tasks": 1, **expected}


def test_put_task_moves_a_loaded_task_between_indexes(store: Any, make_task) -> None:
    task = make_task(state=TaskState.SCHEDULED, run_at=NOW + 5, deadline=NOW + 50)
    put(store, task)

    def lease(txn: TaskTxn) -> None:
        loaded = txn.get_task(task.id)
        loaded.state = TaskState.LEASED
        loaded.lease_expires_at = NOW + 30
        txn.put_task(loaded)

    write(store, lease)
    assert nonzero(store) == {"tasks": 1, "leases": 1}


def test_put_task_without_loading_it_first_replaces_its_old_entries(store: Any, make_task) -> None:
    task = make_task(state=TaskState.READY, deadline=NOW + 50)
    put(store, task)
    task.state = TaskState.SUCCEEDED
    task.finished_at = NOW + 1
    put(store, task)
    assert nonzero(store) == {"tasks": 1, "retention": 1}


def test_put_task_twice_in_one_transaction_keeps_only_the_last_entries(
    store: Any, make_task
) -> None:
    task = make_task(state=TaskState.READY)

    def apply(txn: TaskTxn) -> None:
        txn.put_task(task)
        task.state = TaskState.SCHEDULED
        task.run_at = NOW + 10
        txn.put_task(task)
        task.run_at = NOW + 20
        txn.put_task(task)

    write(store, apply)
    assert nonzero(store) == {"tasks": 1, "scheduled": 1}
    due = read(store, lambda txn: txn.due_task_ids("scheduled", NOW + 15, 10))
    assert due == []
    assert read(store, lambda txn: txn.next_due_time()) == pytest.approx(NOW + 20)


def test_changing_priority_of_a_ready_task_moves_its_index_entry(store: Any, make_task) -> None:
    low = make_task(priority=0)
    other = make_task(priority=5)
    put(store, low, other)
    low.priority = 10
    put(store, low)
    assert read(store, lambda txn: txn.ready_task_ids("default", 10)) == [low.id, other.id]
    assert counts(store)["ready"] == 2


def test_delete_task_removes_the_record_and_its_entries(store: Any, make_task) -> None:
    task = make_task(state=TaskState.SUCCEEDED, finished_at=NOW)
    keep = make_task()
    put(store, task, keep)

    def delete(txn: TaskTxn) -> None:
        txn.delete_task(txn.get_task(task.id))

    write(store, delete)
    assert read(store, lambda txn: txn.get_task(task.id)) is None
    assert nonzero(store) == {"tasks": 1, "ready": 1}


def test_delete_task_without_loading_it_uses_the_given_record(store: Any, make_task) -> None:
    task = make_task(state=TaskState.SCHEDULED, run_at=NOW + 1, deadline=NOW + 2)
    put(store, task)
    write(store, lambda txn: txn.delete_task(task))
    assert nonzero(store) == {}


# -- ready order ---------------------------------------------------------------


def test_ready_ids_are_in_priority_then_run_time_then_sequence_order(store: Any, make_task) -> None:
    tasks = [
        make_task(id="p0-late", priority=0, run_at=NOW + 1, sequence=1),
        make_task(id="p0-early-seq9", priority=0, run_at=NOW, sequence=9),
        make_task(id="p0-early-seq3", priority=0, run_at=NOW, sequence=3),
        make_task(id="p100", priority=100, run_at=NOW + 99, sequence=99),
        make_task(id="p-100", priority=-100, run_at=0.0, sequence=0),
        make_task(id="p1", priority=1, run_at=NOW + 50, sequence=50),
    ]
    put(store, *tasks)
    ids = read(store, lambda txn: txn.ready_task_ids("default", 100))
    assert ids == ["p100", "p1", "p0-early-seq3", "p0-early-seq9", "p0-late", "p-100"]


def test_ready_ids_respect_the_limit(store: Any, make_task) -> None:
    put(store, *(make_task() for _ in range(5)))
    assert len(read(store, lambda txn: txn.ready_task_ids("default", 3))) == 3
    assert read(store, lambda txn: txn.ready_task_ids("default", 0)) == []


def test_ready_ids_of_one_queue_never_include_a_queue_sharing_its_prefix(
    store: Any, make_task
) -> None:
    queues = ["a", "ab", "a-b", "a.b", "a/b", "b", "A"]
    put(store, *(make_task(id=f"in-{q}", queue=q) for q in queues))
    for queue in queues:
        assert read(store, lambda txn, q=queue: txn.ready_task_ids(q, 100)) == [f"in-{queue}"]
    assert read(store, lambda txn: txn.ready_task_ids("c", 100)) == []


def test_only_ready_tasks_are_in_the_ready_order(store: Any, make_task) -> None:
    put(
        store,
        make_task(id="ready"),
        make_task(id="scheduled", state=TaskState.SCHEDULED, run_at=NOW + 1),
        make_task(id="leased", state=TaskState.LEASED, lease_expires_at=NOW + 1),
        make_task(id="done", state=TaskState.DEAD, finished_at=NOW),
    )
    assert read(store, lambda txn: txn.ready_task_ids("default", 100)) == ["ready"]


# -- time indexes --------------------------------------------------------------


def _timed(make_task, index: str, at: float, **fields: Any) -> Task:
    if index == "scheduled":
        return make_task(state=TaskState.SCHEDULED, run_at=at, **fields)
    if index == "leases":
        return make_task(state=TaskState.LEASED, lease_expires_at=at, **fields)
    if index == "deadlines":
        return make_task(deadline=at, **fields)
    return make_task(state=TaskState.SUCCEEDED, finished_at=at - 10, result_retention=10, **fields)


@pytest.mark.parametrize("index", ["scheduled", "leases", "deadlines", "retention"])
def test_due_ids_are_those_at_or_before_now_in_time_order(
    store: Any, make_task, index: str
) -> None:
    put(
        store,
        _timed(make_task, index, NOW + 3, id="third"),
        _timed(make_task, index, NOW + 1, id="first"),
        _timed(make_task, index, NOW + 2, id="second"),
        _timed(make_task, index, NOW + 2.5, id="not-yet"),
    )
    assert read(store, lambda txn: txn.due_task_ids(index, NOW + 0.5, 10)) == []
    assert read(store, lambda txn: txn.due_task_ids(index, NOW + 1, 10)) == ["first"]
    assert read(store, lambda txn: txn.due_task_ids(index, NOW + 2, 10)) == ["first", "second"]
    assert read(store, lambda txn: txn.due_task_ids(index, NOW + 3, 2)) == ["first", "second"]
    all_due = read(store, lambda txn: txn.due_task_ids(index, NOW + 10, 10))
    assert all_due == ["first", "second", "not-yet", "third"]


@pytest.mark.parametrize("index", ["scheduled", "leases", "deadlines", "retention"])
def test_next_due_time_is_the_earliest_entry_of_any_timer(
    store: Any, make_task, index: str
) -> None:
    put(store, make_task(state=TaskState.SCHEDULED, run_at=NOW + 100))
    put(store, _timed(make_task, index, NOW + 7))
    assert read(store, lambda txn: txn.next_due_time()) == pytest.approx(NOW + 7, abs=1e-6)


def test_scheduled_tasks_due_at_the_same_time_come_in_sequence_order(store: Any, make_task) -> None:
    put(
        store,
        make_task(id="b", state=TaskState.SCHEDULED, run_at=NOW, sequence=2),
        make_task(id="a", state=TaskState.SCHEDULED, run_at=NOW, sequence=1),
    )
    assert read(store, lambda txn: txn.due_task_ids("scheduled", NOW, 10)) == ["a", "b"]


# -- uniqueness and sequence ---------------------------------------------------


def test_unique_keys_map_to_task_ids_per_queue(store: Any) -> None:
    def apply(txn: TaskTxn) -> None:
        txn.put_unique("a", "key", "task-a")
        txn.put_unique("b", "key", "task-b")

    write(store, apply)
    assert read(store, lambda txn: txn.get_unique("a", "key")) == "task-a"
    assert read(store, lambda txn: txn.get_unique("b", "key")) == "task-b"
    assert read(store, lambda txn: txn.get_unique("c", "key")) is None
    assert read(store, lambda txn: txn.get_unique("a", "other")) is None


def test_put_unique_replaces_and_delete_unique_removes(store: Any) -> None:
    write(store, lambda txn: txn.put_unique("q", "k", "old"))
    write(store, lambda txn: txn.put_unique("q", "k", "new"))
    assert read(store, lambda txn: txn.get_unique("q", "k")) == "new"
    write(store, lambda txn: txn.delete_unique("q", "k"))
    assert read(store, lambda txn: txn.get_unique("q", "k")) is None
    write(store, lambda txn: txn.delete_unique("q", "never-there"))
    assert counts(store)["unique"] == 0


def test_next_sequence_counts_up_from_one_across_transactions(store: Any) -> None:
    first = write(store, lambda txn: [txn.next_sequence(), txn.next_sequence()])
    second = write(store, lambda txn: txn.next_sequence())
    assert first == [1, 2]
    assert second == 3


# -- rollback ------------------------------------------------------------------


def _dirty_then_raise(make_task, existing: Task) -> Callable[[TaskTxn], None]:
    """A write function that touches every kind of data, then fails."""

    def apply(txn: TaskTxn) -> None:
        txn.put_task(make_task(id="ghost", deadline=NOW + 5))
        txn.put_unique("default", "ghost-key", "ghost")
        txn.next_sequence()
        loaded = txn.get_task(existing.id)
        loaded.state = TaskState.LEASED
        loaded.lease_expires_at = NOW + 30
        txn.put_task(loaded)
        txn.delete_unique("default", "kept-key")
        raise Boom("changed my mind")

    return apply


def test_write_that_raises_leaves_no_trace(store: Any, make_task) -> None:
    existing = make_task(id="existing")

    def setup(txn: TaskTxn) -> None:
        txn.put_task(existing)
        txn.put_unique("default", "kept-key", "existing")
        txn.next_sequence()

    write(store, setup)
    before = counts(store)
    future = store.write(_dirty_then_raise(make_task, existing))
    with pytest.raises(Boom, match="changed my mind"):
        future.result(timeout=10)
    assert counts(store) == before
    assert read(store, lambda txn: txn.get_task("ghost")) is None
    assert read(store, lambda txn: txn.get_task("existing")) == existing
    assert read(store, lambda txn: txn.ready_task_ids("default", 10)) == ["existing"]
    assert read(store, lambda txn: txn.get_unique("default", "ghost-key")) is None
    assert read(store, lambda txn: txn.get_unique("default", "kept-key")) == "existing"
    assert write(store, lambda txn: txn.next_sequence()) == 2


def test_write_that_raises_does_not_affect_the_writes_around_it(store: Any, make_task) -> None:
    existing = make_task(id="existing")
    put(store, existing)
    futures = [
        store.write(lambda txn: txn.put_task(make_task(id="before"))),
        store.write(_dirty_then_raise(make_task, existing)),
        store.write(lambda txn: txn.put_task(make_task(id="after"))),
        store.write(lambda txn: txn.next_sequence()),
    ]
    assert futures[0].result(timeout=10) is None
    with pytest.raises(Boom):
        futures[1].result(timeout=10)
    assert futures[2].result(timeout=10) is None
    assert futures[3].result(timeout=10) == 1
    ids = read(store, lambda txn: txn.ready_task_ids("default", 10))
    assert sorted(ids) == ["after", "before", "existing"]
    assert read(store, lambda txn: txn.get_task("ghost")) is None


def test_write_that_raises_a_key_error_is_reported_not_swallowed(store: Any) -> None:
    def apply(txn: TaskTxn) -> None:
        txn.put_unique("q", "k", "t")
        raise KeyError("inner")

    with pytest.raises(KeyError):
        store.write(apply).result(timeout=10)
    assert read(store, lambda txn: txn.get_unique("q", "k")) is None


def test_concurrent_writers_each_get_their_own_commit(store: Any) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        futures = [store.write(lambda txn: txn.next_sequence()) for _ in range(50)]
        values = [f.result(timeout=30) for f in futures]
        with lock:
            results.extend(values)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 201))


def test_queue_depths_count_tasks_by_queue_and_state(store: Any, make_task) -> None:
    put(store, make_task(queue="b", state=TaskState.READY, run_at=NOW + 5))
    put(store, make_task(queue="b", state=TaskState.READY, run_at=NOW + 2))
    put(store, make_task(queue="a", state=TaskState.DEAD, finished_at=NOW))
    depths = read(store, lambda txn: txn.queue_depths())
    assert [d.queue for d in depths] == ["a", "b"]
    assert depths[0].counts == {TaskState.DEAD: 1} and depths[0].oldest_ready_at is None
    assert depths[1].counts == {TaskState.READY: 2} and depths[1].oldest_ready_at == NOW + 2
