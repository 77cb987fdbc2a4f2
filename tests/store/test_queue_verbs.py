"""The operators' TaskTxn verbs (pause state, task scans), run against every store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor_server.core.store import TaskTxn
from conveyor_server.store.lmdb_store import LmdbStore
from tests.store.conftest import MakeTask


def _put(store: Any, tasks: list[Any]) -> None:
    def apply(txn: TaskTxn) -> None:
        for task in tasks:
            txn.put_task(task)

    store.write(apply).result(timeout=10)


def test_pause_state_is_stored_per_queue(store: Any) -> None:
    store.write(lambda txn: txn.set_paused("b", True)).result(timeout=10)
    store.write(lambda txn: txn.set_paused("a", True)).result(timeout=10)
    assert store.read(lambda txn: txn.paused_queues()) == ["a", "b"]
    assert store.read(lambda txn: (txn.is_paused("a"), txn.is_paused("c"))) == (True, False)
    store.write(lambda txn: txn.set_paused("a", False)).result(timeout=10)
    assert store.read(lambda txn: txn.paused_queues()) == ["b"]


def test_pause_survives_reopening(tmp_path: Path) -> None:
    first = LmdbStore(tmp_path / "data", initial_map_bytes=16 << 20, max_bytes=64 << 20)
    first.write(lambda txn: txn.set_paused("q", True)).result(timeout=10)
    first.close()
    again = LmdbStore(tmp_path / "data", initial_map_bytes=16 << 20, max_bytes=64 << 20)
    try:
        assert again.read(lambda txn: txn.is_paused("q"))
    finally:
        again.close()


def test_scan_tasks_pages_in_id_order_both_ways(store: Any, make_task: MakeTask) -> None:
    tasks = [make_task() for _ in range(5)]
    _put(store, tasks)
    ids = [t.id for t in tasks]

    def scan(after: str, limit: int, newest_first: bool = False) -> list[str]:
        found = store.read(lambda txn: txn.scan_tasks(after, limit, newest_first=newest_first))
        return [t.id for t in found]

    assert scan("", 2) == ids[:2]
    assert scan(ids[1], 10) == ids[2:]
    assert scan("", 2, True) == ids[::-1][:2]
    assert scan(ids[3], 10, True) == ids[:3][::-1]
    assert scan(ids[0], 10, True) == []
    assert scan(ids[4], 10) == []
    found = store.read(lambda txn: txn.scan_tasks("", 1))
    assert found[0].payload == b""  # payloads are not read
