"""The small Store protocol the core writes through, and the byte-level KV it rests on.

A store runs *write functions*: `store.write(fn)` applies `fn(txn)` inside a
write transaction and resolves the returned future only after the transaction
that holds the change is committed. A write function that raises leaves no
trace (its changes are rolled back) and its future carries the exception;
other functions in the same group commit are unaffected.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from conveyor_server.store.tasks import TaskTxn

T = TypeVar("T")

#: Named databases (LMDB sub-databases; dicts in the memory store).
DATABASES = (
    "meta",
    "tasks",
    "payloads",
    "ready",
    "scheduled",
    "leases",
    "deadlines",
    "retention",
    "unique",
    "schedules",
)

SCHEMA_VERSION = 1


class KvTxn(Protocol):
    """Ordered byte keys per named database: all a store must provide."""

    def get(self, db: str, key: bytes) -> bytes | None: ...

    def put(self, db: str, key: bytes, value: bytes) -> None: ...

    def delete(self, db: str, key: bytes) -> None: ...

    def scan(
        self, db: str, start: bytes, end: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` items with start <= key < end (end None: no bound), in key order."""
        ...


class Store(Protocol):
    """What the core needs from persistence."""

    def write(self, fn: Callable[[TaskTxn], T], *, is_growth: bool = False) -> Future[T]:
        """Run fn in a write transaction; the future resolves after commit.

        Implementations run fn through `store.tasks.run_write`, which writes what the
        TaskTxn kept back (the enqueue sequence) before the commit.

        `is_growth` marks writes that add tasks (enqueue). Near its size limit a
        store refuses them with StoreFull but keeps room for the writes that
        drain it (lease, ack, fail, retention), so a full broker can recover.
        """
        ...

    def read(self, fn: Callable[[TaskTxn], T]) -> T:
        """Run fn in a short read transaction and return its result."""
        ...

    def close(self) -> None: ...
