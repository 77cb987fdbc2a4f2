"""Depth counts kept per (queue, state) in each write: right through every transition, rolled
back with a failing write, rebuilt once for a data dir from before they were kept."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import lmdb
import pytest

from conveyor_server.core.broker import Broker, LeaseGrant
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.errors import StoreSchemaError
from conveyor_server.core.model import (
    Ack,
    Failure,
    LeaseRef,
    Task,
    TaskResult,
    TaskSpec,
    TaskState,
)
from conveyor_server.core.settings import BrokerSettings
from conveyor_server.core.store import TaskTxn
from conveyor_server.store import keys
from conveyor_server.store.base import DATABASES
from conveyor_server.store.lmdb_store import LmdbStore
from conveyor_server.upgrades import LMDB_UPGRADES

NOW = 1_800_000_000.0


class Book:
    """A broker over the store under test, and every task id it ever created."""

    def __init__(self, store: Any) -> None:
        self.clock = FakeClock(NOW)
        settings = BrokerSettings(default_result_retention=100.0)
        self.broker = Broker(store, self.clock, settings, rng=random.Random(7))
        self.store = store
        self.ids: list[str] = []

    def enqueue(self, queue: str, **fields: Any) -> Task:
        task = self.broker.enqueue(TaskSpec(kind="job", queue=queue, **fields)).result().task
        self.ids.append(task.id)
        return task

    def lease(self, queue: str, n: int) -> list[Task]:
        return self.broker.lease([queue], n, lease_duration=10.0).result(timeout=10).tasks

    def depths(self) -> dict[str, dict[TaskState, int]]:
        return {d.queue: d.counts for d in self.store.read(lambda txn: txn.queue_depths())}

    def recount(self) -> dict[str, dict[TaskState, int]]:
        """The counts the hard way: read every task ever created."""

        def look(txn: TaskTxn) -> list[Task]:
            return [t for i in self.ids if (t := txn.get_task(i)) is not None]

        counted = Counter((t.queue, t.state) for t in self.store.read(look))
        out: dict[str, dict[TaskState, int]] = {}
        for (queue, state), n in counted.items():
            out.setdefault(queue, {})[state] = n
        return out

    def check(self, expected: dict[str, dict[TaskState, int]]) -> None:
        assert self.recount() == expected, "the test's own expectation is wrong"
        assert self.depths() == expected


def test_counts_follow_lease_ack_fail_expiry_cancel_and_retention(store: Any) -> None:
    book = Book(store)
    R, S, L = TaskState.READY, TaskState.SCHEDULED, TaskState.LEASED
    for _ in range(4):
        book.enqueue("a")
    book.enqueue("a", delay=50.0)
    doomed = book.enqueue("b", deadline=NOW + 5)
    cancelled = book.enqueue("b")
    book.check({"a": {R: 4, S: 1}, "b": {R: 2}})

    leased = book.lease("a", 3)
    book.check({"a": {R: 1, S: 1, L: 3}, "b": {R: 2}})

    first, second, third = leased
    book.broker.ack([Ack(LeaseRef(first.id, first.lease_token), TaskResult(b"ok"))]).result()
    book.broker.fail(
        [
            Failure(LeaseRef(second.id, second.lease_token), "E", "retry me", retry_delay=30.0),
            Failure(LeaseRef(third.id, third.lease_token), "E", "no", is_retryable=False),
        ]
    ).result()
    book.broker.cancel(cancelled.id).result()
    book.check(
        {
            "a": {R: 1, S: 2, TaskState.SUCCEEDED: 1, TaskState.DEAD: 1},
            "b": {R: 1, TaskState.CANCELLED: 1},
        }
    )

    # A lease that runs out goes back to READY; a deadline that passes expires the task.
    book.lease("a", 1)
    book.clock.advance(11)
    book.broker.tick().result()
    assert book.store.read(lambda txn: txn.get_task(doomed.id)).state is TaskState.EXPIRED
    book.check(
        {
            "a": {R: 1, S: 2, TaskState.SUCCEEDED: 1, TaskState.DEAD: 1},
            "b": {TaskState.EXPIRED: 1, TaskState.CANCELLED: 1},
        }
    )

    # Delays end (READY), then retention removes every finished task: queue b vanishes.
    book.clock.advance(100)
    book.broker.tick().result()
    book.check({"a": {R: 3}})


def test_a_task_handed_over_at_enqueue_counts_as_leased(store: Any) -> None:
    book = Book(store)
    spec = TaskSpec(kind="job", queue="q")
    task = book.broker.enqueue(spec, lease_to=LeaseGrant(5.0, "w")).result().task
    book.ids.append(task.id)
    book.check({"q": {TaskState.LEASED: 1}})


def test_a_failing_write_leaves_the_counts_as_they_were(store: Any, make_task) -> None:
    book = Book(store)
    kept = book.enqueue("q")
    book.enqueue("q")

    def half_done(txn: TaskTxn) -> None:
        txn.put_task(make_task(id="new-one", queue="q"), is_new=True)
        task = txn.get_task(kept.id)
        assert task is not None
        task.state = TaskState.DEAD
        task.finished_at = NOW
        txn.put_task(task)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.write(half_done).result(timeout=10)
    book.check({"q": {TaskState.READY: 2}})
    # The next write still counts from the right numbers.
    book.lease("q", 1)
    book.check({"q": {TaskState.READY: 1, TaskState.LEASED: 1}})


def test_put_and_delete_without_loading_first_keep_counts(store: Any, make_task) -> None:
    task = make_task(queue="q")
    store.write(lambda txn: txn.put_task(task)).result(timeout=10)  # not is_new, not loaded
    moved = make_task(id=task.id, queue="q", state=TaskState.DEAD, finished_at=NOW)
    store.write(lambda txn: txn.put_task(moved)).result(timeout=10)
    depths = store.read(lambda txn: txn.queue_depths())
    assert [(d.queue, d.counts) for d in depths] == [("q", {TaskState.DEAD: 1})]
    store.write(lambda txn: txn.delete_task(moved)).result(timeout=10)
    assert store.read(lambda txn: txn.queue_depths()) == []


def test_oldest_ready_is_the_earliest_across_priorities(store: Any, make_task) -> None:
    tasks = [
        make_task(queue="q", priority=9, run_at=NOW + 30),
        make_task(queue="q", priority=0, run_at=NOW + 2),  # the oldest, though not first out
        make_task(queue="q", priority=-5, run_at=NOW + 7),
        make_task(queue="q", priority=0, run_at=NOW + 20),
        make_task(queue="qq", priority=0, run_at=NOW - 100),  # another queue, prefix "q"
    ]

    def apply(txn: TaskTxn) -> None:
        for task in tasks:
            txn.put_task(task, is_new=True)

    store.write(apply).result(timeout=10)
    depths = {d.queue: d for d in store.read(lambda txn: txn.queue_depths())}
    assert depths["q"].oldest_ready_at == NOW + 2
    assert depths["q"].counts == {TaskState.READY: 4}
    assert depths["qq"].oldest_ready_at == NOW - 100


def test_counts_survive_a_reopen(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "d", initial_map_bytes=16 << 20, max_bytes=64 << 20)
    book = Book(store)
    for _ in range(3):
        book.enqueue("q")
    book.lease("q", 1)
    store.close()
    again = LmdbStore(tmp_path / "d", initial_map_bytes=16 << 20, max_bytes=64 << 20)
    try:
        depths = again.read(lambda txn: txn.queue_depths())
        assert depths[0].counts == {TaskState.READY: 2, TaskState.LEASED: 1}
    finally:
        again.close()


def _make_schema_2(path: Path) -> None:
    """Turn a current data dir into one as schema 2 left it: no counts database contents."""
    env = lmdb.open(str(path), max_dbs=len(DATABASES) + 1)
    try:
        with env.begin(write=True) as txn:
            txn.drop(env.open_db(b"counts", txn=txn), delete=False)
            txn.put(b"schema_version", keys.pack_u64(2), db=env.open_db(b"meta", txn=txn))
    finally:
        env.close()


def test_a_schema_2_data_dir_gets_its_counts_at_open(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    store = LmdbStore(data_dir, initial_map_bytes=16 << 20, max_bytes=64 << 20)
    book = Book(store)
    for _ in range(5):
        book.enqueue("a")
    book.enqueue("b", delay=60.0)
    book.lease("a", 2)
    expected = book.recount()
    store.close()
    _make_schema_2(data_dir)

    with pytest.raises(StoreSchemaError, match="schema version 2"):
        LmdbStore(data_dir, initial_map_bytes=16 << 20, max_bytes=64 << 20)
    upgraded = LmdbStore(
        data_dir, initial_map_bytes=16 << 20, max_bytes=64 << 20, upgrades=LMDB_UPGRADES
    )
    try:
        book.store = upgraded
        assert expected == {
            "a": {TaskState.READY: 3, TaskState.LEASED: 2},
            "b": {TaskState.SCHEDULED: 1},
        }
        assert book.depths() == expected
    finally:
        upgraded.close()
