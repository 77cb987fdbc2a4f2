"""The flow-control store verbs on every store (memory, LMDB, PostgreSQL): keyed ready
tasks, the distinct keys, LEASED counts per queue and per key, stored queue flows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor_server.core.flow import QueueFlow, QueueLimits
from conveyor_server.core.model import TaskState
from conveyor_server.core.store import TaskTxn
from conveyor_server.store.lmdb_store import LmdbStore
from tests.store.conftest import NOW


def write(store: Any, fn: Callable[[TaskTxn], Any]) -> Any:
    return store.write(fn).result(timeout=10)


def put(store: Any, *tasks: Any) -> None:
    def apply(txn: TaskTxn) -> None:
        for task in tasks:
            txn.put_task(task, is_new=True)

    write(store, apply)


def test_ready_task_ids_takes_exactly_one_key(store: Any, make_task) -> None:
    plain = make_task(queue="q")
    a_low = make_task(queue="q", concurrency_key="a", priority=-1)
    a_high = make_task(queue="q", concurrency_key="a", priority=5)
    b = make_task(queue="q", concurrency_key="b")
    other_queue = make_task(queue="q2", concurrency_key="a")
    put(store, plain, a_low, a_high, b, other_queue)
    read = store.read
    assert read(lambda txn: txn.ready_task_ids("q", 10)) == [plain.id]
    assert read(lambda txn: txn.ready_task_ids("q", 10, "")) == [plain.id]
    assert read(lambda txn: txn.ready_task_ids("q", 10, "a")) == [a_high.id, a_low.id]
    assert read(lambda txn: txn.ready_task_ids("q", 1, "a")) == [a_high.id]
    assert read(lambda txn: txn.ready_task_ids("q", 10, "b")) == [b.id]
    assert read(lambda txn: txn.ready_task_ids("q", 10, "c")) == []


def test_ready_keys_are_distinct_in_key_order_past_after(store: Any, make_task) -> None:
    keys = ["b", "a", "ab", "Z", "é", "a/b", "b"]
    put(store, make_task(queue="q"), *(make_task(queue="q", concurrency_key=k) for k in keys))
    put(store, make_task(queue="q", concurrency_key="leased", state=TaskState.LEASED,
                         lease_expires_at=NOW + 30, lease_token="t"))  # fmt: skip
    put(store, make_task(queue="other", concurrency_key="x"))
    expected = sorted(set(keys), key=lambda k: k.encode())
    read = store.read
    assert read(lambda txn: txn.ready_keys("q", "", 100)) == expected
    assert read(lambda txn: txn.ready_keys("q", "", 2)) == expected[:2]
    assert read(lambda txn: txn.ready_keys("q", "a", 100)) == expected[expected.index("a") + 1 :]
    assert read(lambda txn: txn.ready_keys("q", "é", 100)) == []
    assert read(lambda txn: txn.ready_keys("none", "", 100)) == []


def test_leased_counts_count_a_page_of_keys_in_one_look(store: Any, make_task) -> None:
    def leased(key: str, queue: str = "q") -> Any:
        return make_task(
            queue=queue, concurrency_key=key, state=TaskState.LEASED,
            lease_expires_at=NOW + 30, lease_token="t",
        )  # fmt: skip

    put(store, leased("a"), leased("a"), leased("ab"), leased("a/b"), leased("b"), leased(""))
    put(store, leased("b", queue="q2"), leased("c"), make_task(queue="q", concurrency_key="d"))
    page = ["a", "a/b", "ab", "b", "bb", "d"]  # ready_keys order; "c" is between but not asked

    def counts(txn: TaskTxn) -> dict[str, int]:
        return txn.leased_counts("q", page)

    expected = {"a": 2, "a/b": 1, "ab": 1, "b": 1, "bb": 0, "d": 0}
    assert store.read(counts) == expected
    assert store.read(lambda txn: {k: txn.leased_count("q", k) for k in page}) == expected
    assert store.read(lambda txn: txn.leased_counts("q", ["b"])) == {"b": 1}
    assert store.read(lambda txn: txn.leased_counts("q", [])) == {}
    assert store.read(lambda txn: txn.leased_counts("none", ["a"])) == {"a": 0}

    def lease_d_then_count(txn: TaskTxn) -> dict[str, int]:
        [task_id] = txn.ready_task_ids("q", 1, "d")
        task = txn.get_task(task_id)
        assert task is not None
        task.state, task.lease_expires_at, task.lease_token = TaskState.LEASED, NOW + 30, "t"
        txn.put_task(task)
        return txn.leased_counts("q", ["b", "d"])  # this write's own changes count

    assert write(store, lease_d_then_count) == {"b": 1, "d": 1}


def test_ready_heads_name_each_keys_first_task(store: Any, make_task) -> None:
    a_low = make_task(queue="q", concurrency_key="a", priority=-1)
    a_high = make_task(queue="q", concurrency_key="a", priority=5)
    b = make_task(queue="q", concurrency_key="b")
    put(store, make_task(queue="q"), a_low, a_high, b)
    heads = store.read(lambda txn: txn.ready_heads("q", "", 10))
    assert heads == [("a", a_high.id), ("b", b.id)]
    assert store.read(lambda txn: txn.ready_heads("q", "a", 10)) == [("b", b.id)]


def test_leased_counts_per_queue_and_per_key_follow_state_changes(store: Any, make_task) -> None:
    tasks = [make_task(queue="q", concurrency_key=k) for k in ("a", "a", "b", "")]
    put(store, *tasks)

    def lease(task_ids: list[str]) -> Callable[[TaskTxn], tuple[int, int, int]]:
        def apply(txn: TaskTxn) -> tuple[int, int, int]:
            for task_id in task_ids:
                task = txn.get_task(task_id)
                assert task is not None
                task.state = TaskState.LEASED
                task.lease_expires_at = NOW + 30
                task.lease_token = "t-" + task_id
                txn.put_task(task)
            # this write's own changes count before it commits
            return txn.leased_count("q"), txn.leased_count("q", "a"), txn.leased_count("q", "b")

        return apply

    assert write(store, lease([t.id for t in tasks])) == (4, 2, 1)
    read = store.read
    assert read(lambda txn: (txn.leased_count("q"), txn.leased_count("q", "a"))) == (4, 2)
    assert read(lambda txn: txn.ready_keys("q", "", 10)) == []
    assert read(lambda txn: txn.keyed_queues()) == ["q"]

    def finish_one_a(txn: TaskTxn) -> None:
        task = txn.get_task(tasks[0].id)
        assert task is not None
        task.state = TaskState.SUCCEEDED
        task.finished_at = NOW
        task.lease_token = ""
        task.lease_expires_at = None
        txn.put_task(task)

    write(store, finish_one_a)
    assert read(lambda txn: (txn.leased_count("q"), txn.leased_count("q", "a"))) == (3, 1)
    assert read(lambda txn: txn.leased_count("q", "zzz")) == 0
    assert read(lambda txn: txn.leased_count("nothing")) == 0


def test_a_keyed_task_round_trips_its_key(store: Any, make_task) -> None:
    task = make_task(queue="q", concurrency_key="tenant-42")
    put(store, task)
    assert store.read(lambda txn: txn.get_task(task.id)).concurrency_key == "tenant-42"


def test_keyed_queues_lists_queues_with_keyed_ready_tasks(store: Any, make_task) -> None:
    put(store, make_task(queue="plain"), make_task(queue="k1", concurrency_key="x"))
    put(store, make_task(queue="k2", concurrency_key="y"), make_task(queue="k2"))
    assert store.read(lambda txn: txn.keyed_queues()) == ["k1", "k2"]


def test_queue_depths_and_oldest_ready_see_keyed_tasks(store: Any, make_task) -> None:
    put(
        store,
        make_task(queue="q", run_at=NOW + 5),
        make_task(queue="q", concurrency_key="k", run_at=NOW - 7, priority=-3),
    )
    (depth,) = store.read(lambda txn: txn.queue_depths())
    assert depth.counts == {TaskState.READY: 2}
    assert depth.oldest_ready_at == NOW - 7


def test_queue_flows_are_stored_listed_and_removed(store: Any) -> None:
    limits = QueueLimits(rate=12.5, burst=4, concurrency=10, key_concurrency=2)
    write(store, lambda txn: txn.put_queue_flow("q", QueueFlow(limits, 3.25, NOW)))
    write(store, lambda txn: txn.put_queue_flow("a", QueueFlow(QueueLimits(concurrency=1))))
    got = store.read(lambda txn: txn.get_queue_flow("q"))
    assert got == QueueFlow(limits, 3.25, NOW)
    assert list(store.read(lambda txn: txn.queue_flows())) == ["a", "q"]
    write(store, lambda txn: txn.put_queue_flow("q", QueueFlow(limits, 1.0, NOW + 1)))
    assert store.read(lambda txn: txn.get_queue_flow("q")).tokens == 1.0
    write(store, lambda txn: txn.put_queue_flow("q", None))
    assert store.read(lambda txn: txn.get_queue_flow("q")) is None
    assert list(store.read(lambda txn: txn.queue_flows())) == ["a"]


def test_flows_and_keyed_tasks_survive_reopening_lmdb(tmp_path: Path, make_task) -> None:
    path = tmp_path / "data"
    store = LmdbStore(path, initial_map_bytes=16 << 20, max_bytes=64 << 20)
    task = make_task(queue="q", concurrency_key="k")
    put(store, task)
    flow = QueueFlow(QueueLimits(rate=3), 2.0, NOW)
    write(store, lambda txn: txn.put_queue_flow("q", flow))
    store.close()
    again = LmdbStore(path, initial_map_bytes=16 << 20, max_bytes=64 << 20)
    try:
        assert again.read(lambda txn: txn.get_queue_flow("q")) == flow
        assert again.read(lambda txn: txn.ready_task_ids("q", 5, "k")) == [task.id]
    finally:
        again.close()


def test_a_schema_3_data_dir_opens_as_schema_4_with_its_tasks(tmp_path: Path, make_task) -> None:
    import lmdb
    import pytest

    from conveyor_server.core.errors import StoreSchemaError
    from conveyor_server.store import keys
    from conveyor_server.store.base import DATABASES, SCHEMA_VERSION
    from conveyor_server.upgrades import LMDB_UPGRADES

    path = tmp_path / "data"
    store = LmdbStore(path, initial_map_bytes=16 << 20, max_bytes=64 << 20)
    task = make_task(queue="q")
    put(store, task)
    store.close()
    env = lmdb.open(str(path), max_dbs=len(DATABASES) + 1)  # as schema 3 left it
    try:
        with env.begin(write=True) as txn:
            for name in (b"keyed", b"keyleased"):
                txn.drop(env.open_db(name, txn=txn), delete=True)
            txn.put(b"schema_version", keys.pack_u64(3), db=env.open_db(b"meta", txn=txn))
    finally:
        env.close()
    with pytest.raises(StoreSchemaError, match="schema version 3"):
        LmdbStore(path, initial_map_bytes=16 << 20, max_bytes=64 << 20)
    upgraded = LmdbStore(
        path, initial_map_bytes=16 << 20, max_bytes=64 << 20, upgrades=LMDB_UPGRADES
    )
    try:
        assert SCHEMA_VERSION == 4
        assert upgraded.read(lambda txn: txn.ready_task_ids("q", 5)) == [task.id]
        keyed = make_task(queue="q", concurrency_key="k")
        put(upgraded, keyed)
        assert upgraded.read(lambda txn: txn.ready_keys("q", "", 5)) == ["k"]
    finally:
        upgraded.close()


def test_queue_flows_for_reads_the_named_queues_with_a_flow(store: Any) -> None:
    one, two = QueueLimits(concurrency=1), QueueLimits(rate=2.0)
    write(store, lambda txn: txn.put_queue_flow("b", QueueFlow(one, 0.0, NOW)))
    write(store, lambda txn: txn.put_queue_flow("a", QueueFlow(two, 1.5, NOW)))
    write(store, lambda txn: txn.put_queue_flow("c", QueueFlow(one, 0.0, NOW)))
    got = store.read(lambda txn: txn.queue_flows_for(["b", "none", "a", "b"]))
    assert got == {"a": QueueFlow(two, 1.5, NOW), "b": QueueFlow(one, 0.0, NOW)}
    assert write(store, lambda txn: txn.queue_flows_for(["none"])) == {}
    assert write(store, lambda txn: txn.queue_flows_for([])) == {}
