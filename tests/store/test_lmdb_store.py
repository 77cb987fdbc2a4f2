"""LmdbStore beyond the contract: reopen, schema version, lock, map size, group commit, nosync."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.errors import ResourceExhausted, StoreFull, StoreSchemaError
from conveyor_server.core.model import TaskSpec, TaskState
from conveyor_server.core.schedules.model import Schedule, TaskTemplate
from conveyor_server.core.store import TaskTxn
from conveyor_server.rpc.schedule_codec import schedule_to_pb
from conveyor_server.store import keys
from conveyor_server.store.base import DATABASES, SCHEMA_VERSION
from conveyor_server.store.lmdb_store import LmdbStore, StoreLocked
from conveyor_server.upgrades import LMDB_UPGRADES

KIB = 1024
MIB = 1024 * KIB
NOW = 1_800_000_000.0


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def opened() -> Iterator[Callable[..., LmdbStore]]:
    """Open LmdbStores that are closed at teardown (close is idempotent)."""
    stores: list[LmdbStore] = []

    def open_store(path: Path, **kwargs: Any) -> LmdbStore:
        kwargs.setdefault("initial_map_bytes", 16 * MIB)
        kwargs.setdefault("max_bytes", 64 * MIB)
        store = LmdbStore(path, **kwargs)
        stores.append(store)
        return store

    yield open_store
    for store in stores:
        store.close()


def _write(store: LmdbStore, fn: Callable[[TaskTxn], Any]) -> Any:
    return store.write(fn).result(timeout=30)


def _set_raw_meta(path: Path, key: bytes, value: bytes | None) -> None:
    """Change the meta database behind the store's back, as another program would."""
    env = lmdb.open(str(path), max_dbs=len(DATABASES) + 1)
    try:
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            if value is None:
                txn.delete(key, db=meta)
            else:
                txn.put(key, value, db=meta)
    finally:
        env.close()


def _count_commits(store: LmdbStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every group the writer thread commits."""
    sizes: list[int] = []
    original = store._apply

    def counting_apply(batch: list[Any]) -> list[Any]:
        sizes.append(len(batch))
        return original(batch)

    monkeypatch.setattr(store, "_apply", counting_apply)
    return sizes


def _hold_writer(store: LmdbStore) -> tuple[threading.Event, Any]:
    """Park the writer thread inside a write so that later writes queue up behind it."""
    entered = threading.Event()
    gate = threading.Event()

    def wait(txn: TaskTxn) -> str:
        entered.set()
        assert gate.wait(30), "the test never opened the gate"
        return "held"

    future = store.write(wait)
    assert entered.wait(30)
    return gate, future


# -- reopen, schema, lock ------------------------------------------------------


def test_reopen_after_close_keeps_everything(opened, data_dir: Path, make_task) -> None:
    store = opened(data_dir)
    tasks = [
        make_task(id="ready", priority=3, payload=b"\x00" * 1000),
        make_task(id="scheduled", state=TaskState.SCHEDULED, run_at=NOW + 60),
        make_task(id="leased", state=TaskState.LEASED, lease_expires_at=NOW + 30),
        make_task(id="done", state=TaskState.SUCCEEDED, finished_at=NOW),
    ]

    def fill(txn: TaskTxn) -> None:
        for task in tasks:
            txn.put_task(task)
        txn.put_unique("default", "key", "ready")
        for _ in range(7):
            txn.next_sequence()

    _write(store, fill)
    store.close()

    again = opened(data_dir)
    assert again.read(lambda txn: [txn.get_task(t.id) for t in tasks]) == tasks
    assert again.read(lambda txn: txn.ready_task_ids("default", 10)) == ["ready"]
    assert again.read(lambda txn: txn.due_task_ids("scheduled", NOW + 60, 10)) == ["scheduled"]
    assert again.read(lambda txn: txn.due_task_ids("leases", NOW + 30, 10)) == ["leased"]
    assert again.read(lambda txn: txn.count("retention")) == 1
    assert again.read(lambda txn: txn.get_unique("default", "key")) == "ready"
    assert _write(again, lambda txn: txn.next_sequence()) == 8


def test_close_finishes_the_writes_already_submitted(data_dir: Path, make_task) -> None:
    store = LmdbStore(data_dir, initial_map_bytes=16 * MIB)
    futures = [store.write(lambda txn: txn.put_task(make_task())) for _ in range(100)]
    store.close()
    assert all(f.result(timeout=0) is None for f in futures)
    again = LmdbStore(data_dir, initial_map_bytes=16 * MIB)
    try:
        assert again.read(lambda txn: txn.count("tasks")) == 100
    finally:
        again.close()


def test_write_after_close_fails_and_close_is_idempotent(opened, data_dir: Path) -> None:
    store = opened(data_dir)
    store.close()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.write(lambda txn: txn.next_sequence()).result(timeout=5)


def test_new_store_records_the_schema_version(opened, data_dir: Path) -> None:
    opened(data_dir).close()
    env = lmdb.open(str(data_dir), max_dbs=len(DATABASES) + 1, readonly=True)
    try:
        with env.begin(db=env.open_db(b"meta", create=False)) as txn:
            assert keys.unpack_u64(txn.get(b"schema_version")) == SCHEMA_VERSION
    finally:
        env.close()


def test_other_schema_version_fails_with_a_clear_message(opened, data_dir: Path) -> None:
    opened(data_dir).close()
    _set_raw_meta(data_dir, b"schema_version", keys.pack_u64(SCHEMA_VERSION + 1))
    with pytest.raises(StoreSchemaError) as info:
        LmdbStore(data_dir)
    message = str(info.value)
    assert str(data_dir) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"reads version {SCHEMA_VERSION}" in message


def test_failed_schema_check_releases_the_data_directory(opened, data_dir: Path) -> None:
    opened(data_dir).close()
    _set_raw_meta(data_dir, b"schema_version", keys.pack_u64(99))
    with pytest.raises(StoreSchemaError) as refused:
        LmdbStore(data_dir)
    _set_raw_meta(data_dir, b"schema_version", keys.pack_u64(SCHEMA_VERSION))
    # The caller still holds the error (and its traceback): the directory must be free anyway.
    assert refused.value is not None
    assert opened(data_dir).read(lambda txn: txn.count("tasks")) == 0


def test_tasks_without_a_schema_version_are_refused(opened, data_dir: Path, make_task) -> None:
    store = opened(data_dir)
    _write(store, lambda txn: txn.put_task(make_task()))
    store.close()
    _set_raw_meta(data_dir, b"schema_version", None)
    with pytest.raises(StoreSchemaError, match="not written by Conveyor") as refused:
        LmdbStore(data_dir)
    # The refusal let go of the directory even while its error is held: with the version
    # back, it opens.
    _set_raw_meta(data_dir, b"schema_version", keys.pack_u64(SCHEMA_VERSION))
    assert refused.value is not None
    assert opened(data_dir).read(lambda txn: txn.count("tasks")) == 1


def test_second_store_on_the_same_directory_is_locked_out(opened, data_dir: Path) -> None:
    first = opened(data_dir)
    with pytest.raises(StoreLocked, match="in use by another conveyor process"):
        LmdbStore(data_dir)
    assert _write(first, lambda txn: txn.next_sequence()) == 1
    first.close()
    assert _write(opened(data_dir), lambda txn: txn.next_sequence()) == 2


# -- map size ------------------------------------------------------------------


def test_full_map_makes_writes_fail_with_store_full(opened, data_dir: Path, make_task) -> None:
    store = opened(data_dir, initial_map_bytes=256 * KIB, max_bytes=256 * KIB)
    committed: list[str] = []
    error: Exception | None = None
    for _ in range(200):
        task = make_task(payload=b"x" * (8 * KIB))
        try:
            _write(store, lambda txn, t=task: txn.put_task(t))
        except StoreFull as exc:
            error = exc
            break
        committed.append(task.id)
    assert error is not None, "256 KiB never filled up"
    assert isinstance(error, ResourceExhausted)
    assert "full" in str(error)
    assert 5 < len(committed) < 32
    assert store.map_size == 256 * KIB
    # What was committed before is intact and readable.
    assert store.read(lambda txn: txn.count("tasks")) == len(committed)
    assert store.read(lambda txn: txn.ready_task_ids("default", 100)) == committed


def test_enqueue_until_full_raises_store_full_and_keeps_what_was_committed(
    opened, data_dir: Path
) -> None:
    store = opened(data_dir, initial_map_bytes=256 * KIB, max_bytes=256 * KIB)
    broker = Broker(store, FakeClock(), rng=random.Random(5))
    created: list[str] = []
    with pytest.raises(StoreFull):
        for _ in range(200):
            spec = TaskSpec(kind="job", payload=b"p" * (8 * KIB))
            created.append(broker.enqueue(spec).result(timeout=30).task.id)
    assert created, "not even one task fitted"
    assert len(created) < 32
    assert [broker.get_task(task_id).state for task_id in created] == [TaskState.READY] * len(
        created
    )
    assert store.read(lambda txn: txn.count("ready")) == len(created)


def test_full_map_fails_the_whole_group(opened, data_dir: Path, make_task) -> None:
    store = opened(data_dir, initial_map_bytes=256 * KIB, max_bytes=256 * KIB)
    gate, held = _hold_writer(store)
    futures = [
        store.write(lambda txn: txn.put_task(make_task(payload=b"x" * (8 * KIB))))
        for _ in range(40)
    ]
    gate.set()
    assert held.result(timeout=30) == "held"
    for future in futures:
        with pytest.raises(StoreFull):
            future.result(timeout=30)
    assert store.read(lambda txn: txn.count("tasks")) == 0


def test_map_grows_before_it_is_full_when_max_bytes_allows(
    opened, data_dir: Path, make_task, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = opened(data_dir, initial_map_bytes=256 * KIB, max_bytes=64 * MIB)
    map_full_errors: list[Exception] = []
    original = store._apply

    def watching_apply(batch: list[Any]) -> list[Any]:
        try:
            return original(batch)
        except lmdb.MapFullError as exc:
            map_full_errors.append(exc)
            raise

    monkeypatch.setattr(store, "_apply", watching_apply)
    sizes = [store.map_size]
    for _ in range(300):  # about 2.4 MiB of payload, ten times the first map
        _write(store, lambda txn: txn.put_task(make_task(payload=b"y" * (8 * KIB))))
        sizes.append(store.map_size)
    assert store.map_size >= 2 * MIB
    assert sizes == sorted(sizes)
    assert map_full_errors == []
    assert store.read(lambda txn: txn.count("tasks")) == 300


def test_map_grows_when_one_group_needs_more_than_is_left(
    opened, data_dir: Path, make_task
) -> None:
    store = opened(data_dir, initial_map_bytes=256 * KIB, max_bytes=64 * MIB)
    gate, held = _hold_writer(store)
    futures = [
        store.write(lambda txn: txn.put_task(make_task(payload=b"z" * (8 * KIB))))
        for _ in range(100)
    ]
    gate.set()
    held.result(timeout=30)
    assert all(f.result(timeout=30) is None for f in futures)
    assert store.map_size > 256 * KIB
    assert store.read(lambda txn: txn.count("tasks")) == 100


def test_reopen_with_a_small_initial_map_opens_a_grown_store(
    opened, data_dir: Path, make_task
) -> None:
    store = opened(data_dir, initial_map_bytes=256 * KIB, max_bytes=64 * MIB)
    for _ in range(100):
        _write(store, lambda txn: txn.put_task(make_task(payload=b"y" * (8 * KIB))))
    assert store.map_size > 256 * KIB
    store.close()
    again = opened(data_dir, initial_map_bytes=256 * KIB, max_bytes=64 * MIB)
    assert again.map_size >= 800 * KIB  # at least what the data file holds
    assert again.read(lambda txn: txn.count("tasks")) == 100
    for _ in range(100):
        _write(again, lambda txn: txn.put_task(make_task(payload=b"y" * (8 * KIB))))
    assert again.read(lambda txn: txn.count("tasks")) == 200


# -- group commit --------------------------------------------------------------


def test_concurrent_writes_share_commits(
    opened, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = opened(data_dir)
    commits = _count_commits(store, monkeypatch)
    barrier = threading.Barrier(4)
    futures: list[Any] = []
    lock = threading.Lock()

    def submit() -> None:
        barrier.wait()
        mine = [store.write(lambda txn: txn.next_sequence()) for _ in range(50)]
        with lock:
            futures.extend(mine)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = sorted(f.result(timeout=30) for f in futures)
    assert values == list(range(1, 201))
    assert sum(commits) == 200
    assert len(commits) < 200


def test_writes_waiting_behind_a_commit_go_into_one_group(
    opened, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = opened(data_dir)
    commits = _count_commits(store, monkeypatch)
    gate, held = _hold_writer(store)

    def submit(out: list[Any]) -> None:
        out.extend(store.write(lambda txn: txn.next_sequence()) for _ in range(50))

    lists: list[list[Any]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=submit, args=(out,)) for out in lists]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gate.set()
    assert held.result(timeout=30) == "held"
    values = sorted(f.result(timeout=30) for out in lists for f in out)
    assert values == list(range(1, 201))
    assert commits == [1, 200]


def test_groups_are_capped_at_max_group(
    opened, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = opened(data_dir, max_group=64)
    commits = _count_commits(store, monkeypatch)
    gate, held = _hold_writer(store)
    futures = [store.write(lambda txn: txn.next_sequence()) for _ in range(200)]
    gate.set()
    held.result(timeout=30)
    assert [f.result(timeout=30) for f in futures] == list(range(1, 201))
    assert commits == [1, 64, 64, 64, 8]


def test_failing_write_in_a_group_is_rolled_back_alone(
    opened, data_dir: Path, make_task, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = opened(data_dir)
    commits = _count_commits(store, monkeypatch)
    gate, held = _hold_writer(store)

    def fail(txn: TaskTxn) -> None:
        txn.put_task(make_task(id="ghost"))
        txn.put_unique("default", "ghost", "ghost")
        txn.next_sequence()
        raise ValueError("rolled back")

    ok_before = store.write(lambda txn: txn.put_task(make_task(id="before")))
    failing = store.write(fail)
    ok_after = store.write(lambda txn: [txn.put_task(make_task(id="after")), txn.next_sequence()])
    gate.set()
    held.result(timeout=30)
    assert ok_before.result(timeout=30) is None
    with pytest.raises(ValueError, match="rolled back"):
        failing.result(timeout=30)
    assert ok_after.result(timeout=30) == [None, 1]
    assert commits == [1, 3]
    assert store.read(lambda txn: sorted(txn.ready_task_ids("default", 10))) == [
        "after",
        "before",
    ]
    assert store.read(lambda txn: txn.get_task("ghost")) is None
    assert store.read(lambda txn: txn.get_unique("default", "ghost")) is None


# -- nosync --------------------------------------------------------------------


def test_nosync_mode_commits_and_reopens(opened, data_dir: Path, make_task) -> None:
    store = opened(data_dir, durable=False)
    tasks = [make_task() for _ in range(50)]
    futures = [store.write(lambda txn, t=task: txn.put_task(t)) for task in tasks]
    assert all(f.result(timeout=30) is None for f in futures)
    assert store.read(lambda txn: txn.count("tasks")) == 50
    store.close()
    again = opened(data_dir, durable=False)
    assert again.read(lambda txn: [txn.get_task(t.id) for t in tasks]) == tasks
    again.close()
    durable = opened(data_dir, durable=True)
    assert durable.read(lambda txn: txn.count("ready")) == 50


def _write_schema_1_store(path: Path, schedule: Schedule) -> None:
    """A data dir as the release with schema 1 wrote it: schedules as protobuf messages."""
    env = lmdb.open(str(path), max_dbs=len(DATABASES) + 1)
    try:
        dbs = {name: env.open_db(name.encode()) for name in DATABASES}
        with env.begin(write=True) as txn:
            txn.put(b"schema_version", keys.pack_u64(1), db=dbs["meta"])
            record_key = keys.schedule_key(schedule.name)
            txn.put(record_key, schedule_to_pb(schedule).SerializeToString(), db=dbs["schedules"])
            due = keys.schedule_due_key(schedule.next_fire_time or 0.0, schedule.name)
            txn.put(due, b"", db=dbs["schedules"])
    finally:
        env.close()


def _schedule() -> Schedule:
    return Schedule(
        name="nightly",
        template=TaskTemplate(kind="report", queue="reports", payload=b'{"a": 1}'),
        cron="0 3 * * *",
        timezone="Europe/Berlin",
        next_fire_time=NOW + 3600,
        created_at=NOW,
        updated_at=NOW,
    )


def test_schema_1_data_dir_is_upgraded_in_place(opened, data_dir: Path) -> None:
    data_dir.mkdir()
    _write_schema_1_store(data_dir, _schedule())
    store = opened(data_dir, upgrades=LMDB_UPGRADES)
    assert store.read(lambda txn: txn.list_schedules()) == [_schedule()]
    assert store.read(lambda txn: txn.due_schedule_names(NOW + 3600, 10)) == ["nightly"]
    store.close()
    reopened = opened(data_dir)  # schema 2 now: no upgrade needed
    assert reopened.read(lambda txn: txn.get_schedule("nightly")) == _schedule()


def test_schema_1_without_an_upgrade_is_refused_clearly(opened, data_dir: Path) -> None:
    data_dir.mkdir()
    _write_schema_1_store(data_dir, _schedule())
    with pytest.raises(StoreSchemaError, match=r"schema version 1 .*conveyor serve"):
        opened(data_dir)
    # Refused before anything changed: the upgrade still works afterwards.
    assert opened(data_dir, upgrades=LMDB_UPGRADES).read(lambda txn: txn.list_schedules())
