"""In-memory store with the LMDB store's interface: fast core tests, no durability."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, TypeVar

from conveyor_server.store.base import DATABASES, WriteInReadTransaction
from conveyor_server.store.kv_txn import KvTaskTxn, run_write

if TYPE_CHECKING:
    from conveyor_server.core.store import ChangeListener, TaskTxn

T = TypeVar("T")


class _SortedTable:
    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.keys: list[bytes] = []


class _MemoryKv:
    """KvTxn over sorted tables, with an undo log so one write function can be rolled back."""

    def __init__(self, tables: dict[str, _SortedTable], writable: bool) -> None:
        self._tables = tables
        self._writable = writable
        self.undo: list[tuple[str, bytes, bytes | None]] = []

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._tables[db].values.get(key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self._check_writable()
        table = self._tables[db]
        old = table.values.get(key)
        if old is None:
            bisect.insort(table.keys, key)
        table.values[key] = value
        self.undo.append((db, key, old))

    def delete(self, db: str, key: bytes) -> None:
        self._check_writable()
        table = self._tables[db]
        old = table.values.pop(key, None)
        if old is not None:
            del table.keys[bisect.bisect_left(table.keys, key)]
            self.undo.append((db, key, old))

    def scan(
        self, db: str, start: bytes, end: bytes | None, limit: int, *, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        table = self._tables[db]
        first = bisect.bisect_left(table.keys, start)
        last = len(table.keys) if end is None else bisect.bisect_left(table.keys, end)
        if reverse:
            first = max(first, last - limit)
            return [(k, table.values[k]) for k in reversed(table.keys[first:last])]
        last = min(last, first + limit)
        return [(k, table.values[k]) for k in table.keys[first:last]]

    def rollback(self) -> None:
        for db, key, old in reversed(self.undo):
            table = self._tables[db]
            if old is None:
                table.values.pop(key, None)
                del table.keys[bisect.bisect_left(table.keys, key)]
            else:
                if key not in table.values:
                    bisect.insort(table.keys, key)
                table.values[key] = old
        self.undo.clear()

    def _check_writable(self) -> None:
        if not self._writable:
            raise WriteInReadTransaction("write in a read transaction")


class MemoryStore:
    """Runs each write function at once under a lock; futures are already resolved."""

    is_shared = False  # only this process writes it

    def __init__(self) -> None:
        self._tables = {name: _SortedTable() for name in DATABASES}
        self._lock = threading.Lock()

    def write(self, fn: Callable[[TaskTxn], T], *, is_growth: bool = False) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            kv = _MemoryKv(self._tables, writable=True)
            try:
                result = run_write(kv, fn)
            except BaseException as exc:  # rolled back, then reported through the future
                kv.rollback()
                future.set_exception(exc)
            else:
                future.set_result(result)
        return future

    def read(self, fn: Callable[[TaskTxn], T]) -> T:
        with self._lock:
            return fn(KvTaskTxn(_MemoryKv(self._tables, writable=False)))

    def watch(self, listener: ChangeListener) -> None:
        """Nothing to report: a memory store belongs to one process."""

    def close(self) -> None:
        pass
