"""PgStore: the core's Store over PostgreSQL, shared by several stateless brokers.

Driver: psycopg 3, synchronous (bench/pg_drivers.py measures it against asyncpg). The
write functions are synchronous and run on one writer thread (GroupCommitter), so a sync
driver fits without an event loop per call. Writes: one writer connection; a group of
write functions runs in one transaction; one COMMIT (synchronous_commit on) before any
future resolves. The group runs first without savepoints; if a write raises (a lost
lease, a duplicate cron fire's unique violation), the transaction is rolled back and the
group runs again with each write in a SAVEPOINT, so the failing one rolls back alone and
is answered.

Reads (`read`, called on the event loop) use their own autocommit connection with a
short statement_timeout, one statement at a time (READ COMMITTED: a transaction around
them would add two round trips and no consistency).

Wake-ups across brokers: each commit that made tasks READY or final sends ONE pg_notify
(debounced per group: the queues and final ids, chunked under 8000 bytes, tagged with this
store's id so it ignores its own); `watch` starts a LISTEN thread that hands them to the
ChangeListener on the loop with call_soon_threadsafe. The queues of tasks that left LEASED
ride along ("l"), so a Lease held back by a concurrency limit on another broker wakes when a
slot frees here (docs/flow-control.md).

PostgreSQL down: a write or read fails with StoreUnavailable (gRPC UNAVAILABLE); the next
write reconnects (connect_timeout 3 s: never hangs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from conveyor_server.core.errors import StoreSchemaError, StoreUnavailable, WriteConflict
from conveyor_server.store import pg_schema
from conveyor_server.store.group_commit import GroupCommitter, Outcome, Write
from conveyor_server.store.pg_txn import PgTaskTxn, SequenceBlock, prepare_writer

if TYPE_CHECKING:
    from conveyor_server.core.store import ChangeListener, TaskTxn

log = logging.getLogger(__name__)
T = TypeVar("T")
CHANNEL = "conveyor_changes"
_NOTIFY_BYTES = 7000  # pg_notify payloads must stay under 8000 bytes
_SLOTS = 64
#: What a write meets when another broker wrote the same row first (a task id, a unique
#: key, a cron tick) or locked rows in the other order: run once more, in a new savepoint,
#: where it sees the other broker's committed change (a duplicate, not an error).
#: In psycopg 3, DeadlockDetected (40P01) and SerializationFailure (40001) derive from
#: OperationalError, not TransactionRollback (40000): named here, or a deadlock would
#: read as a lost connection (the whole group UNAVAILABLE, the writer dropped).
_CONFLICTS = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.TransactionRollback,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)
#: What a group did: outcomes, queues made READY, final task ids, queues whose leases ended.
_Applied = tuple[list[Outcome], set[str], list[str], set[str]]


def connect(url: str, *, autocommit: bool = False, timeout_ms: int | None = None) -> Any:
    options = f"-c statement_timeout={timeout_ms}" if timeout_ms else None
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=3, options=options)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"PostgreSQL is unavailable: {_one_line(exc)}") from exc


def connect_writer(url: str) -> Any:
    """The writer connection, prepared for batched writes (pg_txn.prepare_writer)."""
    conn = connect(url)
    try:
        prepare_writer(conn)
    except psycopg.OperationalError as exc:
        conn.close()
        raise StoreUnavailable(f"PostgreSQL is unavailable: {_one_line(exc)}") from exc
    return conn


def _one_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def migrate(url: str) -> int:
    """Create or migrate the schema; refuse a newer one. Returns the version now in place."""
    with connect(url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(7470)")  # brokers migrating at once
        conn.execute(
            "CREATE TABLE IF NOT EXISTS conveyor_meta (key text PRIMARY KEY, value bigint NOT NULL)"
        )
        row = conn.execute(
            "SELECT value FROM conveyor_meta WHERE key = 'schema_version'"
        ).fetchone()
        version = int(row[0]) if row else 0
        if version > pg_schema.SCHEMA_VERSION:
            raise StoreSchemaError(
                f"the database has schema version {version}, newer than this broker's "
                f"{pg_schema.SCHEMA_VERSION}: upgrade the broker"
            )
        for number, _ in pg_schema.MIGRATIONS:
            if number > version:
                for statement in pg_schema.statements(number):
                    conn.execute(statement)  # type: ignore[arg-type]
                version = number
        conn.execute(
            "INSERT INTO conveyor_meta VALUES ('schema_version', %s) ON CONFLICT (key) "
            "DO UPDATE SET value = EXCLUDED.value",
            (version,),
        )
        conn.commit()
    return version


class PgStore:
    """The core's Store over PostgreSQL; several processes may share one database."""

    is_shared = True  # other brokers add due times: the timer also wakes on a period

    def __init__(self, url: str, *, max_group: int = 500) -> None:
        self.url = url
        self.store_id = uuid.uuid4().hex[:12]
        self._slot = zlib.crc32(self.store_id.encode()) % _SLOTS
        self._sequence = SequenceBlock()
        migrate(url)
        self._writer: Any = connect_writer(url)
        self._reader: Any = connect(url, autocommit=True, timeout_ms=2000)
        self._read_lock = threading.Lock()
        self._closed = False
        self._listen_thread: threading.Thread | None = None
        self.committer = GroupCommitter(self, name="pg-writer", max_group=max_group, inline_max=0)

    # -- Store ------------------------------------------------------------------

    def write(self, fn: Callable[[TaskTxn], T], *, is_growth: bool = False) -> Future[T]:
        future: Future[T] = Future()
        if self._closed:
            future.set_exception(RuntimeError("store is closed"))
        else:
            self.committer.submit((fn, future, is_growth))
        return future

    def read(self, fn: Callable[[TaskTxn], T]) -> T:
        with self._read_lock:
            for attempt in (1, 2):
                try:
                    if self._reader is None or self._reader.closed:
                        self._reader = connect(self.url, autocommit=True, timeout_ms=2000)
                    # No BEGIN/COMMIT around it (two round trips per read on the event
                    # loop): under READ COMMITTED each statement takes its own snapshot
                    # inside a transaction too, and a read takes no locks.
                    txn = PgTaskTxn(
                        self._reader, slot=self._slot, sequence=self._sequence, writable=False
                    )
                    return fn(txn)  # type: ignore[arg-type]
                except psycopg.OperationalError as exc:
                    self._reader = None
                    if attempt == 2:
                        raise StoreUnavailable(
                            f"PostgreSQL is unavailable: {_one_line(exc)}"
                        ) from exc
            raise AssertionError("unreachable")

    def watch(self, listener: ChangeListener) -> None:
        """LISTEN on a thread; other brokers' notifications reach `listener` on this loop."""
        loop = asyncio.get_running_loop()
        self._listen_thread = threading.Thread(
            target=self._listen, args=(listener, loop), name="pg-listen", daemon=True
        )
        self._listen_thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.committer.close()
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()

    def usage(self) -> dict[str, int]:
        return {}

    # -- GroupBackend --------------------------------------------------------------

    def apply_group(self, batch: list[Write]) -> list[Outcome]:
        """The group in one transaction. First without savepoints (two round trips fewer
        per write); if any write raises, roll it all back and run the group again with a
        savepoint per write, so the failing write alone is rolled back and answered."""
        if self._writer is None or self._writer.closed:
            self._writer = connect_writer(self.url)  # raises StoreUnavailable: the group fails
        conn = self._writer
        group_taken = self._sequence.mark()
        try:
            applied = self._apply_all(conn, batch)
            if applied is None:
                conn.rollback()
                self._sequence.give_back(group_taken)
                applied = self._apply_each(conn, batch)
            outcomes, ready, finished, freed = applied
            for payload in _notify_payloads(self.store_id, ready, finished, freed):
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            conn.commit()
        except psycopg.OperationalError as exc:
            self._sequence.give_back(group_taken)
            self._drop_writer()
            raise StoreUnavailable(f"PostgreSQL is unavailable: {_one_line(exc)}") from exc
        except BaseException:
            self._drop_writer()
            raise
        return outcomes

    def _apply_all(self, conn: Any, batch: list[Write]) -> _Applied | None:
        """Every write in the group's transaction, no savepoints; None if one raised (the
        transaction then holds partial changes: the caller rolls it back)."""
        outcomes: list[Outcome] = []
        ready: set[str] = set()
        finished: list[str] = []
        freed: set[str] = set()
        for fn, _, _ in batch:
            txn = PgTaskTxn(conn, slot=self._slot, sequence=self._sequence, writable=True)
            try:
                value = fn(txn)
                txn.flush()
            except _CONFLICTS:
                return None  # rolled back (its locks freed); again write by write
            except psycopg.OperationalError:
                raise  # the connection is gone: the whole group fails (apply_group)
            except Exception:
                return None
            outcomes.append((True, value))
            ready |= txn.ready_queues
            finished += txn.finished_ids
            freed |= txn.freed_queues
        return outcomes, ready, finished, freed

    def _apply_each(self, conn: Any, batch: list[Write]) -> _Applied:
        """Every write in its own savepoint: a failing one is rolled back alone."""
        outcomes: list[Outcome] = []
        ready: set[str] = set()
        finished: list[str] = []
        freed: set[str] = set()
        for fn, _, _ in batch:
            outcome, txn = self._apply_one(conn, fn)
            outcomes.append(outcome)
            if txn is not None:
                ready |= txn.ready_queues
                finished += txn.finished_ids
                freed |= txn.freed_queues
        return outcomes, ready, finished, freed

    def _apply_one(self, conn: Any, fn: Callable[[Any], Any]) -> tuple[Outcome, PgTaskTxn | None]:
        """Run one write function in a SAVEPOINT (rolled back alone if it raises), once
        more after a conflict with another broker. A write that fails gives back the
        sequence numbers it took. Returns its outcome and, if it succeeded, its txn."""
        for attempt in (1, 2):
            taken = self._sequence.mark()
            txn = PgTaskTxn(conn, slot=self._slot, sequence=self._sequence, writable=True)
            try:
                with conn.transaction():  # a SAVEPOINT inside the group's transaction
                    value = fn(txn)
                    txn.flush()
            except _CONFLICTS as exc:
                self._sequence.give_back(taken)
                if attempt == 2:
                    message = f"another broker wrote the same rows: {_one_line(exc)}"
                    return (False, WriteConflict(message)), None
            except psycopg.OperationalError:
                raise  # the connection is gone: the whole group fails (apply_group)
            except Exception as exc:
                self._sequence.give_back(taken)
                return (False, exc), None
            else:
                return (True, value), txn
        raise AssertionError("unreachable")

    def _drop_writer(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        self._writer = None

    def after_commit(self) -> None:
        pass

    def is_inline_allowed(self) -> bool:
        return False  # a network round trip does not belong on the event loop

    def idle(self) -> float | None:
        return None

    # -- LISTEN ----------------------------------------------------------------------

    def _listen(self, listener: ChangeListener, loop: asyncio.AbstractEventLoop) -> None:
        while not self._closed:
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._closed:
                        for note in conn.notifies(timeout=0.5):
                            self._deliver(note.payload, listener, loop)
            except Exception as exc:  # PostgreSQL away: try again in a moment
                if self._closed:
                    return
                log.warning("store: LISTEN connection lost (%s); reconnecting", _one_line(exc))
                threading.Event().wait(1.0)

    def _deliver(
        self, payload: str, listener: ChangeListener, loop: asyncio.AbstractEventLoop
    ) -> None:
        data = json.loads(payload)
        if data.get("s") == self.store_id:
            return
        if data.get("q"):
            loop.call_soon_threadsafe(listener.tasks_ready, data["q"])
        if data.get("f"):
            loop.call_soon_threadsafe(listener.tasks_finished, data["f"])
        if data.get("l"):
            loop.call_soon_threadsafe(listener.slots_freed, data["l"])


def _notify_payloads(
    store_id: str, queues: set[str], finished: list[str], freed: set[str] | None = None
) -> list[str]:
    """JSON payloads under _NOTIFY_BYTES: {"s": store id, "q": queues, "f": final ids,
    "l": queues whose LEASED tasks left that state (only when there are some)}. A slot
    freed this way wakes another broker's Lease held back by a concurrency limit."""
    if not queues and not finished and not freed:
        return []
    payloads: list[str] = []
    current: dict[str, Any] = {"s": store_id, "q": sorted(queues), "f": []}
    if freed:
        current["l"] = sorted(freed)
    size = len(json.dumps(current))
    for task_id in finished:
        if size + len(task_id) + 4 > _NOTIFY_BYTES:
            payloads.append(json.dumps(current))
            current = {"s": store_id, "q": [], "f": []}
            size = 30
        current["f"].append(task_id)
        size += len(task_id) + 4
    payloads.append(json.dumps(current))
    return payloads
