"""LMDB store: named databases, schema version, map growth, one writer thread with group commit.

Durability promise: `write()` futures resolve only after the LMDB transaction
holding the change is committed. In `sync` mode (the default) every commit is
fsync'd, so an acknowledged write survives a process crash and a power loss.
In `nosync` mode commits are flushed to disk by a background sync about once a
second: a process crash loses nothing, an OS crash can lose the last moments
and, on file systems that reorder writes, can damage the store; it is opt-in.

Group commit: RPC handlers on the event loop hand write functions to one
writer thread. The thread takes everything that is waiting (up to
`max_group`), applies each function in a nested transaction (so one that
raises is rolled back alone), commits once, fsyncs once, then resolves all
their futures. Batches form from what is waiting, never from a timer, so an
idle broker adds no latency. Key layout: see store/keys.py.

Inline commits: writes asked for on an event loop are first gathered until
the end of that loop turn. If the writer thread is idle (nothing queued or
committing) and the turn asked for at most `inline_max` writes, the loop
commits them itself, in one transaction: no hand-off to the writer thread and
back (two thread wake-ups and a GIL hand-over each way). Otherwise they go to
the writer thread, in order. The loop is blocked during that fsync (~0.1 ms
here; the GIL is released), which is why only small turns go inline: a burst
of writes keeps the writer thread's overlap of fsync with RPC work. Measured
on the round trip: broker CPU per trip 3,300 -> 2,700 us; see
docs/performance.md.

`writemap` is never used: with it a full disk kills the process with SIGBUS.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from conveyor_server.core.errors import ConveyorError, StoreFull, StoreSchemaError
from conveyor_server.store import keys
from conveyor_server.store.base import DATABASES, SCHEMA_VERSION
from conveyor_server.store.tasks import TaskTxn, run_write

T = TypeVar("T")
log = logging.getLogger(__name__)

GIB = 1 << 30
_STOP = object()
_BUSY_READY = 2  # callbacks waiting on the loop beyond which a turn's writes go to the writer
_GROW_AT = 0.8
#: New tasks are refused once live data passes this share of max_bytes; the rest
#: is kept for the writes that drain the store (lease, ack, fail, retention).
_GROWTH_LIMIT = 0.9
_Write = tuple[Callable[[TaskTxn], Any], Future[Any], bool]


def _has_other_work(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether enough other callbacks wait on the loop that an fsync there would hold up RPCs.

    Reads the ready queue of CPython's event loops (`_ready`, a deque); a loop
    without one counts as busy, which keeps every write on the writer thread.
    Measured at the end of turns that wrote: one-at-a-time traffic (a round
    trip, a worker's stream) finds 0-2 callbacks waiting; 64 unary Enqueue
    calls in flight find 3-20, and committing there cost them a quarter of
    their throughput.
    """
    ready = getattr(loop, "_ready", None)
    return ready is None or len(ready) > _BUSY_READY


def _refuse(future: Future[Any]) -> None:
    if future.set_running_or_notify_cancel():  # False: cancelled, nobody is waiting
        future.set_exception(RuntimeError("store is closed"))


class StoreLocked(ConveyorError):
    """Another broker process holds this data directory."""


class _LmdbKv:
    """KvTxn over one LMDB transaction."""

    __slots__ = ("_dbs", "_txn")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._txn.get(key, db=self._dbs[db])  # type: ignore[return-value]  # no buffers=

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._dbs[db])

    def delete(self, db: str, key: bytes) -> None:
        self._txn.delete(key, db=self._dbs[db])

    def scan(
        self, db: str, start: bytes, end: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if limit <= 0:
            return out
        with self._txn.cursor(db=self._dbs[db]) as cursor:
            if not cursor.set_range(start):
                return out
            for key, value in cursor:
                if end is not None and key >= end:  # type: ignore[operator]  # bytes, no buffers=
                    break
                out.append((key, value))  # type: ignore[arg-type]
                if len(out) >= limit:
                    break
        return out


class LmdbStore:
    """The durable store. One instance per data directory per machine (a lock file enforces it)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        max_bytes: int = 32 * GIB,
        initial_map_bytes: int = GIB,
        max_group: int = 2000,
        inline_max: int = 4,
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._take_lock()
        self._durable = durable
        self._max_bytes = max_bytes
        self._max_group = max_group
        self._map_size = min(initial_map_bytes, max_bytes)
        try:
            self._env = lmdb.open(
                str(self.path),
                map_size=self._map_size,
                max_dbs=len(DATABASES) + 1,
                sync=durable,
                metasync=durable,
                writemap=False,
                max_readers=256,
            )
        except BaseException:
            self._lock_file.close()
            raise
        try:
            self._env.reader_check()
            self._map_size = max(self._map_size, self._env.info()["map_size"])
            self._dbs = {name: self._env.open_db(name.encode()) for name in DATABASES}
            self._check_schema()
        except BaseException:  # a refused open must not keep the directory locked
            self._env.close()
            self._lock_file.close()
            raise
        self._page_size: int = self._env.stat()["psize"]
        self._resize_lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._is_accepting_growth = True
        self._last_flush = time.monotonic()
        self._inline_max = inline_max
        self._inline_loop: asyncio.AbstractEventLoop | None = None
        self._inline_batch: list[_Write] = []
        self._write_lock = threading.Lock()  # held while a transaction is open for writing
        self._count_lock = threading.Lock()
        self._queued = 0  # writes handed to the writer thread and not yet committed
        self._writer = threading.Thread(target=self._run_writer, name="lmdb-writer", daemon=True)
        self._writer.start()

    # -- public interface --------------------------------------------------

    def write(self, fn: Callable[[TaskTxn], T], *, is_growth: bool = False) -> Future[T]:
        future: Future[T] = Future()
        if self._closed:
            future.set_exception(RuntimeError("store is closed"))
        elif is_growth and not self._is_accepting_growth:
            future.set_exception(self._full_error())
        elif self._gathers_on_this_loop():
            self._inline_batch.append((fn, future, is_growth))
            if len(self._inline_batch) == 1:
                self._inline_loop.call_soon(self._flush_turn)  # type: ignore[union-attr]
        else:
            self._to_writer([(fn, future, is_growth)])
        return future

    def read(self, fn: Callable[[TaskTxn], T]) -> T:
        with self._resize_lock, self._env.begin(write=False) as txn:
            return fn(TaskTxn(_LmdbKv(txn, self._dbs)))

    def close(self) -> None:
        """Finish queued writes, flush, and release the data directory."""
        if self._closed:
            return
        self._closed = True
        self._to_writer(self._take_turn())  # gathered this loop turn: committed, not lost
        self._queue.put(_STOP)
        self._writer.join()
        self._env.sync(True)
        self._env.close()
        self._lock_file.close()

    @property
    def map_size(self) -> int:
        return self._map_size

    # -- where a write commits -------------------------------------------------

    def _gathers_on_this_loop(self) -> bool:
        """Whether this write is asked for on the event loop that gathers inline writes."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a thread without a loop: straight to the writer thread
            return False
        if self._inline_loop is None:
            self._inline_loop = loop
        return loop is self._inline_loop

    def _take_turn(self) -> list[_Write]:
        batch, self._inline_batch = self._inline_batch, []
        return batch

    def _flush_turn(self) -> None:
        """End of a loop turn: commit its writes here, or hand them to the writer thread."""
        batch = self._take_turn()
        if not batch:
            return
        if self._closed:
            for _, future, _ in batch:
                _refuse(future)
            return
        if (
            len(batch) <= self._inline_max
            and self._queued == 0  # nothing asked for earlier is still waiting to commit
            and not _has_other_work(self._inline_loop)
            and not self._is_flush_due()  # a whole-file flush does not belong on the loop
            and self._write_lock.acquire(blocking=False)
        ):
            try:
                self._commit_safely(batch)
            finally:
                self._write_lock.release()
        else:
            self._to_writer(batch)

    def _to_writer(self, batch: list[_Write]) -> None:
        if not batch:
            return
        with self._count_lock:
            self._queued += len(batch)
        for item in batch:
            self._queue.put(item)

    # -- opening -------------------------------------------------------------

    def _take_lock(self) -> Any:
        lock_file = open(self.path / "conveyor.lock", "a+")  # noqa: SIM115 - held while open
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise StoreLocked(
                f"data directory {str(self.path)!r} is in use by another conveyor process"
            ) from None
        return lock_file

    def _check_schema(self) -> None:
        with self._env.begin(write=True) as txn:
            stored = txn.get(b"schema_version", db=self._dbs["meta"])
            if stored is None:
                if txn.stat(self._dbs["tasks"])["entries"]:
                    raise StoreSchemaError(
                        f"{str(self.path)!r} holds tasks but no schema version; "
                        "it was not written by Conveyor"
                    )
                txn.put(b"schema_version", keys.pack_u64(SCHEMA_VERSION), db=self._dbs["meta"])
                return
            version = keys.unpack_u64(stored)
        if version != SCHEMA_VERSION:
            raise StoreSchemaError(
                f"{str(self.path)!r} has store schema version {version}, this Conveyor "
                f"reads version {SCHEMA_VERSION}; use a matching Conveyor release"
            )

    # -- the writer thread ---------------------------------------------------

    def _run_writer(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < self._max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            try:
                with self._write_lock:
                    self._commit_safely(batch)
            finally:
                with self._count_lock:
                    self._queued -= len(batch)
        # Anything submitted after close() began is refused rather than lost silently.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                _refuse(item[1])

    def _full_error(self) -> StoreFull:
        return StoreFull(
            f"the store is full (limit {self._max_bytes} bytes, --max-store-bytes): "
            "new tasks are refused until workers drain it or the limit is raised"
        )

    def _commit_safely(self, batch: list[_Write]) -> None:
        """Commit a group; anything that escapes fails the group's open futures instead of
        ending the writer thread (every later write would hang) or the loop's callback."""
        try:
            self._commit_group(batch)
        except Exception as exc:
            log.exception("store: a group of %d writes failed", len(batch))
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)

    def _commit_group(self, batch: list[_Write]) -> None:
        # A write whose future was cancelled before it ran is not applied (and a result
        # set on a cancelled future would raise here and end the writer thread).
        batch = [item for item in batch if item[1].set_running_or_notify_cancel()]
        if not batch:
            return
        while True:
            try:
                outcomes = self._apply(batch)
            except lmdb.MapFullError:
                if self._grow():
                    continue
                if any(is_growth for _, _, is_growth in batch):
                    # Keep the draining writes; refuse only the ones that add tasks.
                    self._is_accepting_growth = False
                    for _, future, is_growth in batch:
                        if is_growth:
                            future.set_exception(self._full_error())
                    batch = [item for item in batch if not item[2]]
                    if batch:
                        continue
                    return
                outcomes = [(False, self._full_error())] * len(batch)
            except Exception as exc:  # a commit failure: nothing in the group is durable
                log.exception("store commit failed for a group of %d writes", len(batch))
                outcomes = [(False, exc)] * len(batch)
            break
        for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._after_commit()

    def _apply(self, batch: list[_Write]) -> list[Any]:
        outcomes: list[tuple[bool, Any]] = []
        with self._env.begin(write=True) as txn:
            for fn, _, _ in batch:
                child = self._env.begin(write=True, parent=txn)
                try:
                    value = run_write(_LmdbKv(child, self._dbs), fn)
                except lmdb.MapFullError:
                    child.abort()
                    raise
                except Exception as exc:
                    child.abort()
                    outcomes.append((False, exc))
                else:
                    child.commit()
                    outcomes.append((True, value))
        return outcomes

    def _after_commit(self) -> None:
        used = (self._env.info()["last_pgno"] + 1) * self._page_size
        if used > _GROW_AT * self._map_size:
            self._grow()
        # The file's high-water mark bounds the live data, so counting live pages (a read
        # transaction and a stat per database) is needed only once the file is near the limit.
        if used >= _GROWTH_LIMIT * self._max_bytes:
            live = self._live_bytes(self._page_size)
            self._is_accepting_growth = live < _GROWTH_LIMIT * self._max_bytes
        else:
            self._is_accepting_growth = True
        if self._is_flush_due():
            self._env.sync(True)
            self._last_flush = time.monotonic()

    def _is_flush_due(self) -> bool:
        """nosync mode: the background flush to disk, about once a second, is due."""
        return not self._durable and time.monotonic() - self._last_flush > 1.0

    def _live_bytes(self, page_size: int) -> int:
        """Bytes held by live pages of every database (freed pages are reused, not counted)."""
        pages = 0
        with self._env.begin() as txn:
            for db in self._dbs.values():
                stat = txn.stat(db)
                pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        return pages * page_size

    def _grow(self) -> bool:
        """Double the map (up to max_bytes). Runs on the writer thread between transactions."""
        if self._map_size >= self._max_bytes:
            return False
        new_size = min(self._map_size * 2, self._max_bytes)
        with self._resize_lock:
            self._env.set_mapsize(new_size)
        log.info("store map size grown from %d to %d bytes", self._map_size, new_size)
        self._map_size = new_size
        return True
