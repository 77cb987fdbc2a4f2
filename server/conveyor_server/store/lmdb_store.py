"""LMDB store: named databases, schema version, map growth, group commit on one writer thread.

Durability promise: `write()` futures resolve only after the LMDB transaction
holding the change is committed. In `sync` mode (the default) every commit is
fsync'd, so an acknowledged write survives a process crash and a power loss.
In `nosync` mode commits are flushed to disk by a background sync about once a
second: a process crash loses nothing, an OS crash can lose the last moments
and, on file systems that reorder writes, can damage the store; it is opt-in.

Writes go through store/group_commit.py: each write function runs in a nested
transaction (rolled back alone if it raises) inside one group transaction,
committed and fsync'd once. Key layout: store/keys.py; records: store/record.py
and store/schedule_record.py.

`writemap` is never used: with it a full disk kills the process with SIGBUS.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import lmdb

from conveyor_server.core.errors import ConveyorError, DiskFull, StoreFull, StoreSchemaError
from conveyor_server.store import keys
from conveyor_server.store.base import DATABASES, SCHEMA_VERSION, KvTxn, WriteInReadTransaction
from conveyor_server.store.group_commit import GroupCommitter, Outcome, Write
from conveyor_server.store.kv_txn import KvTaskTxn, run_write

if TYPE_CHECKING:
    from conveyor_server.core.store import ChangeListener, TaskTxn

T = TypeVar("T")
log = logging.getLogger(__name__)

GIB = 1 << 30
_GROW_AT = 0.8
#: New tasks are refused once live data passes this share of max_bytes; the rest
#: is kept for the writes that drain the store (lease, ack, fail, retention).
_GROWTH_LIMIT = 0.9
#: After a commit failed for want of disk, writes that add tasks are refused at once for
#: this long, then tried again: space that comes back is found without a restart.
_DISK_RETRY_SECONDS = 1.0
#: How a commit that could not write reads (LMDB reports a short write as EIO).
_DISK_ERRORS = tuple(
    os.strerror(code) for code in (errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT)
)
#: Rewrites a store of schema version N into version N + 1, inside one transaction.
Upgrade = Callable[[KvTxn], None]


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
        try:
            self._txn.put(key, value, db=self._dbs[db])
        except lmdb.ReadonlyError as exc:
            raise WriteInReadTransaction("write in a read transaction") from exc

    def delete(self, db: str, key: bytes) -> None:
        try:
            self._txn.delete(key, db=self._dbs[db])
        except lmdb.ReadonlyError as exc:
            raise WriteInReadTransaction("write in a read transaction") from exc

    def scan(
        self, db: str, start: bytes, end: bytes | None, limit: int, *, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if limit <= 0:
            return out
        if reverse:
            return self._scan_reverse(db, start, end, limit)
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

    def _scan_reverse(
        self, db: str, start: bytes, end: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        with self._txn.cursor(db=self._dbs[db]) as cursor:
            if end is None or not cursor.set_range(end):
                is_positioned = cursor.last()
            else:
                is_positioned = cursor.prev()  # the first key before `end`
            if not is_positioned:
                return out
            for key, value in cursor.iterprev():
                if key < start:  # type: ignore[operator]  # bytes, no buffers=
                    break
                out.append((key, value))  # type: ignore[arg-type]
                if len(out) >= limit:
                    break
        return out


class LmdbStore:
    """The durable store. One instance per data directory per machine (a lock file enforces it)."""

    is_shared = False  # only this process writes it

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        max_bytes: int = 32 * GIB,
        initial_map_bytes: int = GIB,
        max_group: int = 2000,
        inline_max: int = 4,
        quiet_turn_seconds: float = 100e-6,
        upgrades: Mapping[int, Upgrade] | None = None,
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
            self._check_schema(upgrades or {})
        except BaseException:  # a refused open must not keep the directory locked
            self._env.close()
            self._lock_file.close()
            raise
        self._page_size: int = self._env.stat()["psize"]
        self._resize_lock = threading.Lock()
        self._closed = False
        self._is_accepting_growth = True
        self._disk_full_until = 0.0  # monotonic; 0.0: the last commit wrote
        self._disk_error: DiskFull | None = None
        self._has_committed = False  # whether the last group committed (apply_group)
        self._is_unflushed = False  # nosync: a commit since the last flush to disk
        self._last_flush = time.monotonic()
        self.committer = GroupCommitter(
            self,
            name="lmdb-writer",
            max_group=max_group,
            inline_max=inline_max,
            quiet_turn_seconds=quiet_turn_seconds,
        )

    # -- public interface --------------------------------------------------

    def write(self, fn: Callable[[TaskTxn], T], *, is_growth: bool = False) -> Future[T]:
        future: Future[T] = Future()
        if self._closed:
            future.set_exception(RuntimeError("store is closed"))
        elif is_growth and not self._is_accepting_growth:
            future.set_exception(self._full_error())
        elif is_growth and self._disk_full_until and time.monotonic() < self._disk_full_until:
            future.set_exception(self._disk_error or DiskFull("the disk is full"))
        else:
            self.committer.submit((fn, future, is_growth))
        return future

    def read(self, fn: Callable[[TaskTxn], T]) -> T:
        with self._resize_lock, self._env.begin(write=False) as txn:
            return fn(KvTaskTxn(_LmdbKv(txn, self._dbs)))

    def watch(self, listener: ChangeListener) -> None:
        """Nothing to report: only this process writes an LMDB data directory (the lock)."""

    def close(self) -> None:
        """Finish queued writes, flush, and release the data directory."""
        if self._closed:
            return
        self._closed = True
        self.committer.close()
        self._env.sync(True)
        self._env.close()
        self._lock_file.close()

    @property
    def map_size(self) -> int:
        return self._map_size

    def usage(self) -> dict[str, int]:
        """Sizes in bytes: live pages (what the limit is checked against), the file up to
        its highest page, the map, and the limit. A read transaction and a stat per db."""
        with self._resize_lock:
            file_bytes = (self._env.info()["last_pgno"] + 1) * self._page_size
            live = self._live_bytes(self._page_size)
        return {
            "live_bytes": live,
            "file_bytes": file_bytes,
            "map_bytes": self._map_size,
            "limit_bytes": self._max_bytes,
        }

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

    def _check_schema(self, upgrades: Mapping[int, Upgrade]) -> None:
        """Stamp a new store, upgrade an older one step by step, refuse anything else."""
        meta = self._dbs["meta"]
        with self._env.begin(write=True) as txn:
            stored = txn.get(b"schema_version", db=meta)
            if stored is None:
                if txn.stat(self._dbs["tasks"])["entries"]:
                    raise StoreSchemaError(
                        f"{str(self.path)!r} holds tasks but no schema version; "
                        "it was not written by Conveyor"
                    )
                txn.put(b"schema_version", keys.pack_u64(SCHEMA_VERSION), db=meta)
                return
            version = keys.unpack_u64(stored)
            if version > SCHEMA_VERSION:
                raise StoreSchemaError(
                    f"{str(self.path)!r} has store schema version {version}; this Conveyor "
                    f"reads version {SCHEMA_VERSION}: use a newer Conveyor release"
                )
            while version < SCHEMA_VERSION:
                upgrade = upgrades.get(version)
                if upgrade is None:
                    raise StoreSchemaError(
                        f"{str(self.path)!r} has store schema version {version} and no upgrade "
                        f"to {SCHEMA_VERSION} was given; open it with `conveyor serve`, "
                        "which upgrades it in place (see docs/operations.md)"
                    )
                upgrade(_LmdbKv(txn, self._dbs))
                version += 1
                txn.put(b"schema_version", keys.pack_u64(version), db=meta)
                log.info("store %s upgraded to schema version %d", self.path, version)

    # -- the group commit backend (called on the writer thread, or inline) ------

    def apply_group(self, batch: list[Write]) -> list[Outcome]:
        """Apply a group; on a full map grow it and retry, or refuse only the growth writes."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        pending = list(range(len(batch)))
        self._has_committed = False
        while pending:
            try:
                applied = self._apply([batch[i] for i in pending])
            except lmdb.MapFullError:
                if self._grow():
                    continue
                if not any(batch[i][2] for i in pending):
                    full: Outcome = (False, self._full_error())
                    for i in pending:
                        outcomes[i] = full
                    break
                # Keep the draining writes; refuse only the ones that add tasks.
                self._is_accepting_growth = False
                for i in pending:
                    if batch[i][2]:
                        outcomes[i] = (False, self._full_error())
                pending = [i for i in pending if not batch[i][2]]
                continue
            except lmdb.Error as exc:
                if not str(exc).endswith(_DISK_ERRORS):
                    raise
                # Nothing of the group was written. Refuse the writes that add tasks and
                # try the rest once more: updates may fit in pages the file already has.
                refused: Outcome = (False, self._disk_full(exc))
                growth = [i for i in pending if batch[i][2]]
                for i in growth or pending:
                    outcomes[i] = refused
                if not growth:
                    break
                pending = [i for i in pending if not batch[i][2]]
                continue
            for i, outcome in zip(pending, applied, strict=True):
                outcomes[i] = outcome
            self._has_committed = True
            if self._disk_full_until and any(batch[i][2] for i in pending):
                log.info("store: writing to disk again; new tasks are accepted")
                self._disk_full_until = 0.0
            break
        return outcomes  # type: ignore[return-value]  # every slot is set above

    def _disk_full(self, exc: lmdb.Error) -> DiskFull:
        """Note a commit that could not write: new tasks wait a moment before trying again."""
        if not self._disk_full_until:
            log.warning("store: a commit could not write to %s (%s)", self.path, exc)
        self._disk_full_until = time.monotonic() + _DISK_RETRY_SECONDS
        reason = str(exc).rsplit(": ", 1)[-1]
        self._disk_error = DiskFull(
            f"the disk under the store is full or failing ({reason} at commit): "
            "new tasks are refused until writes succeed again"
        )
        return self._disk_error

    def is_inline_allowed(self) -> bool:
        return not self._is_flush_due()  # a whole-file flush does not belong on the loop

    def _full_error(self) -> StoreFull:
        return StoreFull(
            f"the store is full (limit {self._max_bytes} bytes, --max-store-bytes): "
            "new tasks are refused until workers drain it or the limit is raised"
        )

    def _apply(self, batch: list[Write]) -> list[Outcome]:
        outcomes: list[Outcome] = []
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

    def after_commit(self) -> None:
        if not self._has_committed:  # every write was refused: nothing changed on disk
            return
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
        if self._durable:
            return
        if self._is_flush_due():
            self._flush()
        elif not self._is_unflushed:
            self._is_unflushed = True
            self.committer.look_again()  # the writer thread flushes it within the second

    def idle(self) -> float | None:
        """nosync: flush what was committed about a second after the last flush, even if
        no later commit comes (the promise of `--durability nosync`)."""
        if not self._is_unflushed:
            return None
        wait = 1.0 - (time.monotonic() - self._last_flush)
        if wait > 0:
            return wait
        self._flush()
        return None

    def _flush(self) -> None:
        self._env.sync(True)
        self._last_flush = time.monotonic()
        self._is_unflushed = False

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
