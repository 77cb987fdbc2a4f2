"""The byte-level ordered KV that the KV stores (LMDB, memory) rest on: databases, schema.

The store protocol the core writes through is core/store.py; store/kv_txn.py
implements it over any KvTxn.
"""

from __future__ import annotations

from typing import Protocol

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
    "counts",
    "keyed",
    "keyleased",
)

#: 1: schedule records were conveyor.v1.Schedule protobuf messages.
#: 2: schedule records are store/schedule_record.py tuples (upgrade: conveyor_server/upgrades.py).
#: 3: tasks per (queue, state) kept in `counts` (upgrade: kv_txn.rebuild_queue_counts).
#: 4: tasks may carry a concurrency_key: READY keyed tasks in `keyed`, LEASED ones indexed
#:    per key in `keyleased`, queue flows in `meta` (upgrade: nothing to rewrite, no task
#:    of schema 3 has a key; the version keeps an older broker from opening the store).
SCHEMA_VERSION = 4


class WriteInReadTransaction(RuntimeError):
    """A write function ran in a read transaction: a bug in the caller, never user input."""


class KvTxn(Protocol):
    """Ordered byte keys per named database: all a store must provide."""

    def get(self, db: str, key: bytes) -> bytes | None: ...

    def put(self, db: str, key: bytes, value: bytes) -> None: ...

    def delete(self, db: str, key: bytes) -> None: ...

    def scan(
        self, db: str, start: bytes, end: bytes | None, limit: int, *, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` items with start <= key < end (end None: no bound), in key order;
        `reverse`: the last `limit` of them, in descending key order."""
        ...
