"""PostgreSQL store beyond the contract suite: fencing, two stores on one database (SKIP
LOCKED), schema refusal, a unique violation rolled back alone, NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.errors import LeaseLost, StoreSchemaError, WriteConflict
from conveyor_server.core.model import TaskSpec, TaskState
from tests.store.conftest import NOW, empty_postgres

pytest.importorskip("psycopg")

from conveyor_server.store import pg_schema
from conveyor_server.store.pg_store import PgStore, migrate


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    empty_postgres(postgres_url)
    return postgres_url


@pytest.fixture
def two_stores(pg_url: str) -> Iterator[tuple[PgStore, PgStore]]:
    a, b = PgStore(pg_url), PgStore(pg_url)
    yield a, b
    a.close()
    b.close()


def _put_all(store: PgStore, tasks: list[Any]) -> None:
    def fn(txn: Any) -> None:
        for task in tasks:
            txn.put_task(task, is_new=True)

    store.write(fn).result(timeout=10)


def test_a_write_of_a_lease_taken_over_meanwhile_raises_and_rolls_back(two_stores, make_task):
    a, b = two_stores
    task = make_task(id="t1", state=TaskState.LEASED, lease_token="old", lease_expires_at=NOW)
    _put_all(a, [task])
    # b takes the lease over and commits; a's write still holds the old token.
    b.write(lambda txn: txn.put_task(replace(txn.get_task("t1"), lease_token="new"))).result(
        timeout=10
    )
    future = a.write(lambda txn: _stale_ack(txn, task))
    with pytest.raises(LeaseLost):
        future.result(timeout=10)
    assert a.read(lambda txn: txn.get_task("t1")).lease_token == "new"


def _stale_ack(txn: Any, stale: Any) -> None:
    # a write function that trusts an old copy: the fenced UPDATE refuses it
    txn._loaded[stale.id] = (stale.queue, stale.state, stale.lease_token)
    txn.put_task(replace(stale, state=TaskState.SUCCEEDED, lease_token=""))


@pytest.mark.parametrize("size", [5, 40])  # unnest arrays; COPY into the temp table
def test_a_batched_write_with_one_lease_taken_over_rolls_back_whole(two_stores, make_task, size):
    """Several rows go in one fenced UPDATE: one stale row fails the write, none of its
    rows change, and the next batched write works."""
    a, b = two_stores
    tasks = [
        make_task(id=f"m{n}", state=TaskState.LEASED, lease_token="old", lease_expires_at=NOW)
        for n in range(size)
    ]
    _put_all(a, tasks)
    b.write(lambda txn: txn.put_task(replace(txn.get_task("m3"), lease_token="new"))).result(
        timeout=10
    )

    def ack_all(txn: Any, stale: list[Any]) -> None:
        for task in stale:
            _stale_ack(txn, task)

    with pytest.raises(LeaseLost, match="m3"):
        a.write(lambda txn: ack_all(txn, tasks)).result(timeout=10)
    states = a.read(lambda txn: [txn.get_task(t.id).state for t in tasks])
    assert states == [TaskState.LEASED] * size
    fresh = [t for t in tasks if t.id != "m3"]
    a.write(lambda txn: ack_all(txn, fresh)).result(timeout=10)
    states = a.read(lambda txn: [txn.get_task(t.id).state for t in tasks])
    assert states.count(TaskState.SUCCEEDED) == size - 1 and states[3] is TaskState.LEASED


def test_deletes_go_in_one_statement_and_keep_the_write_order(pg_url, make_task):
    """Retention's deletes are buffered into one DELETE ... WHERE id = ANY: the counts
    follow, a read in between sees them gone, and a task put again after its delete
    (same write) is there afterwards."""
    store = PgStore(pg_url)
    try:
        done = [make_task(id=f"d{n}", state=TaskState.SUCCEEDED, finished_at=NOW) for n in range(6)]
        _put_all(store, [*done, make_task(id="keep")])

        def retention(txn: Any) -> int | None:
            for task in done:
                txn.delete_task(task)
            seen = txn.get_task("d0")  # a read flushes the deletes first
            txn.put_task(make_task(id="d5"), is_new=True)  # again, READY this time
            return None if seen is None else 1

        assert store.write(retention).result(timeout=10) is None
        ids = store.read(lambda txn: [t.id for t in txn.scan_tasks("", 10)])
        assert ids == ["d5", "keep"]
        depth = store.read(lambda txn: txn.queue_depths())
        assert depth[0].counts == {TaskState.READY: 2}
    finally:
        store.close()


def test_two_stores_never_lease_the_same_task(two_stores, make_task):
    a, b = two_stores
    _put_all(a, [make_task(id=f"t{n:04d}") for n in range(400)])
    taken: list[str] = []
    lock = threading.Lock()

    def lease(txn: Any) -> list[str]:
        ids = txn.ready_task_ids("default", 10)
        for task_id in ids:
            task = txn.get_task(task_id)
            txn.put_task(replace(task, state=TaskState.LEASED, lease_token="x",
                                 lease_expires_at=NOW + 30))  # fmt: skip
        return ids

    def worker(store: PgStore) -> None:
        while True:
            ids = store.write(lease).result(timeout=10)
            if not ids:
                return
            with lock:
                taken.extend(ids)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (a, b, a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 400 and len(set(taken)) == 400


def test_two_stores_never_promote_a_due_task_twice(two_stores, make_task):
    a, b = two_stores
    _put_all(a, [make_task(id=f"s{n:04d}", state=TaskState.SCHEDULED) for n in range(300)])
    promoted: list[str] = []
    lock = threading.Lock()

    def tick(txn: Any) -> list[str]:
        ids = txn.due_task_ids("scheduled", NOW + 1, 7)
        for task_id in ids:
            txn.put_task(replace(txn.get_task(task_id), state=TaskState.READY))
        return ids

    def timer(store: PgStore) -> None:
        while ids := store.write(tick).result(timeout=10):
            with lock:
                promoted.extend(ids)

    threads = [threading.Thread(target=timer, args=(s,)) for s in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(promoted) == sorted(set(promoted)) and len(promoted) == 300


def test_a_duplicate_id_is_rolled_back_alone(pg_url, make_task):
    store = PgStore(pg_url)
    try:
        _put_all(store, [make_task(id="dup")])
        futures = [
            store.write(lambda txn: txn.put_task(make_task(id="before"), is_new=True)),
            store.write(lambda txn: txn.put_task(make_task(id="dup"), is_new=True)),
            store.write(lambda txn: txn.put_task(make_task(id="after"), is_new=True)),
        ]
        futures[0].result(timeout=10)
        with pytest.raises(WriteConflict, match="duplicate key"):  # ABORTED, not INTERNAL
            futures[1].result(timeout=10)
        futures[2].result(timeout=10)
        assert store.read(lambda txn: txn.count("tasks")) == 3
        depth = store.read(lambda txn: txn.queue_depths())
        assert depth[0].counts[TaskState.READY] == 3
    finally:
        store.close()


def test_a_batch_insert_holding_a_duplicate_id_is_rolled_back_alone(pg_url, make_task):
    """Several new tasks go as one COPY: a duplicate among them fails that write only."""
    store = PgStore(pg_url)
    try:
        _put_all(store, [make_task(id="dup")])
        batch = [make_task(id="x1"), make_task(id="dup"), make_task(id="x2")]
        futures = [
            store.write(lambda txn: txn.put_task(make_task(id="before"), is_new=True)),
            store.write(lambda txn: [txn.put_task(t, is_new=True) for t in batch]),
            store.write(
                lambda txn: [txn.put_task(make_task(id=f"y{n}"), is_new=True) for n in range(3)]
            ),
        ]
        futures[0].result(timeout=10)
        with pytest.raises(WriteConflict, match="duplicate key"):
            futures[1].result(timeout=10)
        futures[2].result(timeout=10)
        ids = store.read(lambda txn: [t.id for t in txn.scan_tasks("", 100)])
        assert ids == ["before", "dup", "y0", "y1", "y2"]
    finally:
        store.close()


def test_a_write_that_raises_after_writing_leaves_no_trace_in_its_group(pg_url, make_task):
    """One group (apply_group called directly): the group runs without savepoints first;
    the middle write inserts a row, then raises, so the group runs again with savepoints:
    the others commit, the middle one leaves nothing, each answer is its own."""
    from concurrent.futures import Future

    store = PgStore(pg_url)

    def failing(txn: Any) -> None:
        txn.put_task(make_task(id="ghost"), is_new=True)
        txn.flush()
        raise ValueError("the write changed its mind")

    def adding(task_id: str) -> Any:
        return lambda txn: txn.put_task(make_task(id=task_id), is_new=True) or task_id

    try:
        batch = [(fn, Future(), False) for fn in (adding("first"), failing, adding("third"))]
        with store.committer._write_lock:  # the writer thread is idle: the group is ours
            outcomes = store.apply_group(batch)  # type: ignore[arg-type]
        assert outcomes[0] == (True, "first") and outcomes[2] == (True, "third")
        assert outcomes[1][0] is False and isinstance(outcomes[1][1], ValueError)
        ids = store.read(lambda txn: [t.id for t in txn.scan_tasks("", 10)])
        assert ids == ["first", "third"]
        depth = store.read(lambda txn: txn.queue_depths())
        assert depth[0].counts[TaskState.READY] == 2
    finally:
        store.close()


def test_an_enqueue_racing_another_broker_for_one_id_answers_the_duplicate(two_stores, make_task):
    """Broker B inserts id "race" and holds its transaction open; broker A's Enqueue of the
    same id waits on the key, meets a unique violation when B commits, runs again in a new
    savepoint and answers B's task as the duplicate (not an error, and not INTERNAL)."""
    a, b = two_stores
    inside, release = threading.Event(), threading.Event()

    def hold(txn: Any) -> None:
        txn.put_task(make_task(id="race", kind="from-b"), is_new=True)
        txn.flush()  # the row is in B's open transaction now
        inside.set()
        release.wait(10)

    held = b.write(hold)
    assert inside.wait(10)
    broker = Broker(a, FakeClock(NOW))
    enqueued = broker.enqueue(TaskSpec(kind="from-a", id="race"))
    with pytest.raises(TimeoutError):  # A waits on the key B holds
        enqueued.result(timeout=0.5)
    release.set()
    held.result(timeout=10)
    outcome = enqueued.result(timeout=10)
    assert outcome.duplicate and outcome.task.kind == "from-b"


def test_a_newer_schema_is_refused(postgres_server):
    url = postgres_server.create_database("newer_schema")
    migrate(url)
    postgres_server.psql("UPDATE conveyor_meta SET value = 99", database="newer_schema")
    with pytest.raises(StoreSchemaError, match="newer"):
        migrate(url)
    for command in (["migrate"], ["serve", "--listen", "127.0.0.1:0"]):
        result = subprocess.run(
            [sys.executable, "-m", "conveyor_server", *command, "--database-url", url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "schema version 99" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_migrate_creates_the_schema_once(postgres_server):
    url = postgres_server.create_database("migrate_twice")
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "conveyor_server", "migrate", "--database-url", url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"schema version {pg_schema.SCHEMA_VERSION}" in result.stdout


class _Listener:
    def __init__(self) -> None:
        self.ready: list[str] = []
        self.finished: list[str] = []
        self.freed: list[str] = []
        self.event = asyncio.Event()

    def tasks_ready(self, queues: Any) -> None:
        self.ready += queues
        self.event.set()

    def tasks_finished(self, task_ids: Any) -> None:
        self.finished += task_ids
        self.event.set()

    def slots_freed(self, queues: Any) -> None:
        self.freed += queues
        self.event.set()


def test_a_notify_from_another_store_reaches_the_listener(two_stores, make_task):
    a, b = two_stores

    async def main() -> _Listener:
        listener = _Listener()
        b.watch(listener)
        await asyncio.sleep(0.3)  # LISTEN in place
        # writes from threads: a .result() on the loop would block its own group commit
        await asyncio.to_thread(_put_all, b, [make_task(id="own", queue="mine")])  # ignored
        others = [make_task(id="n1", queue="q1"), make_task(id="n2", state=TaskState.SUCCEEDED)]
        await asyncio.to_thread(_put_all, a, others)
        await asyncio.wait_for(listener.event.wait(), 5)
        await asyncio.sleep(0.2)
        return listener

    listener = asyncio.run(main())
    assert listener.ready == ["q1"] and listener.finished == ["n2"]


def test_a_task_leaving_leased_on_another_store_reports_a_freed_slot(two_stores, make_task):
    a, b = two_stores
    _put_all(a, [make_task(id="held", queue="lim", state=TaskState.LEASED, lease_token="t",
                           lease_expires_at=NOW + 60)])  # fmt: skip

    def finish(txn: Any) -> None:
        task = txn.get_task("held")
        txn.put_task(replace(task, state=TaskState.SUCCEEDED, finished_at=NOW, lease_token=""))

    async def main() -> _Listener:
        listener = _Listener()
        b.watch(listener)
        await asyncio.sleep(0.3)  # LISTEN in place
        await asyncio.to_thread(lambda: a.write(finish).result(timeout=10))
        await asyncio.wait_for(listener.event.wait(), 5)
        await asyncio.sleep(0.2)
        return listener

    listener = asyncio.run(main())
    assert listener.freed == ["lim"] and listener.finished == ["held"]


def test_postgres_down_answers_unavailable_then_the_store_reconnects(make_task):
    from conveyor_server.core.errors import StoreUnavailable
    from conveyor_server.testing.postgres import PostgresServer

    server = PostgresServer(fsync=False).start()
    try:
        url = server.create_database("down")
        store = PgStore(url)
        _put_all(store, [make_task(id="kept")])
        server.stop(remove=False)
        with pytest.raises(StoreUnavailable):
            _put_all(store, [make_task(id="lost")])
        with pytest.raises(StoreUnavailable):
            store.read(lambda txn: txn.get_task("kept"))
        server.start()
        _put_all(store, [make_task(id="after")])
        assert store.read(lambda txn: txn.count("tasks")) == 2
        store.close()
    finally:
        server.stop()


def test_a_version_1_database_migrates_to_version_2_keeping_its_tasks(postgres_server, make_task):
    import psycopg

    from conveyor_server.core.flow import QueueFlow, QueueLimits
    from conveyor_server.store import record

    url = postgres_server.create_database("from_version_1")
    old = make_task(id="old-task", queue="q")
    with psycopg.connect(url) as conn:  # the schema as version 1 left it, with one task
        conn.execute("CREATE TABLE conveyor_meta (key text PRIMARY KEY, value bigint NOT NULL)")
        for statement in pg_schema.statements(1):
            conn.execute(statement)  # type: ignore[arg-type]
        conn.execute("INSERT INTO conveyor_meta VALUES ('schema_version', 1)")
        conn.execute(
            "INSERT INTO conveyor_tasks (id, queue, state, priority, run_at_us, sequence, "
            "record, payload) VALUES (%s, 'q', %s, 0, 1, 1, %s, %s)",
            (old.id, int(TaskState.READY), record.encode(old), old.payload),
        )
        conn.commit()
    assert migrate(url) == 2
    store = PgStore(url)
    try:
        assert store.read(lambda txn: txn.ready_task_ids("q", 10)) == [old.id]
        assert store.read(lambda txn: txn.ready_keys("q", "", 10)) == []
        keyed = make_task(id="new-task", queue="q", concurrency_key="k")
        _put_all(store, [keyed])
        assert store.read(lambda txn: txn.ready_task_ids("q", 10, "k")) == [keyed.id]
        flow = QueueFlow(QueueLimits(concurrency=2), 0.0, NOW)
        store.write(lambda txn: txn.put_queue_flow("q", flow)).result(timeout=10)
        assert store.read(lambda txn: txn.get_queue_flow("q")) == flow
    finally:
        store.close()
