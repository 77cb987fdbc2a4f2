"""PgTaskTxn: the core's TaskTxn verbs over one psycopg connection inside a transaction.

Same semantics as KvTaskTxn (store/kv_txn.py). Fencing: a write of a task this
transaction loaded as LEASED matches id, state and lease_token in the same UPDATE; a
row not matched raises LeaseLost, and the write rolls back alone (its savepoint).
Leases and timer claims use FOR UPDATE SKIP LOCKED, so two brokers never take the
same row; READ COMMITTED re-checks the WHERE clause on a row it waited for.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Collection, Sequence
from typing import Any

from conveyor_server.core.errors import LeaseLost
from conveyor_server.core.flow import QueueFlow, QueueLimits
from conveyor_server.core.model import QueueDepth, Task, TaskState
from conveyor_server.core.schedules.model import Schedule
from conveyor_server.core.store import TIME_INDEXES
from conveyor_server.store import record, schedule_record
from conveyor_server.store.base import WriteInReadTransaction
from conveyor_server.store.keys import micros

_R, _S, _L = int(TaskState.READY), int(TaskState.SCHEDULED), int(TaskState.LEASED)
_DUE_SQL = {
    "scheduled": f"SELECT id FROM conveyor_tasks WHERE state = {_S} AND run_at_us <= %s "
    "ORDER BY run_at_us, sequence LIMIT %s FOR UPDATE SKIP LOCKED",
    "leases": f"SELECT id FROM conveyor_tasks WHERE state = {_L} AND lease_expires_us "
    "IS NOT NULL AND lease_expires_us <= %s ORDER BY lease_expires_us, id LIMIT %s "
    "FOR UPDATE SKIP LOCKED",
    "deadlines": f"SELECT id FROM conveyor_tasks WHERE state IN ({_S}, {_R}) AND deadline_us "
    "IS NOT NULL AND deadline_us <= %s ORDER BY deadline_us, id LIMIT %s FOR UPDATE SKIP LOCKED",
    "retention": "SELECT id FROM conveyor_tasks WHERE remove_at_us IS NOT NULL AND "
    "remove_at_us <= %s ORDER BY remove_at_us, id LIMIT %s FOR UPDATE SKIP LOCKED",
}
_NEXT_SQL = {
    "scheduled": f"SELECT min(run_at_us) FROM conveyor_tasks WHERE state = {_S}",
    "leases": f"SELECT min(lease_expires_us) FROM conveyor_tasks WHERE state = {_L} "
    "AND lease_expires_us IS NOT NULL",
    "deadlines": f"SELECT min(deadline_us) FROM conveyor_tasks WHERE state IN ({_S}, {_R}) "
    "AND deadline_us IS NOT NULL",
    "retention": "SELECT min(remove_at_us) FROM conveyor_tasks WHERE remove_at_us IS NOT NULL",
}
_COLUMNS = "id, record, payload"
#: The columns of a buffered task row, in order (put_task builds the tuples), and their
#: types for binary COPY. Several rows go by COPY: its rows are encoded in C, where
#: array parameters (unnest) cost ~15 µs a row in Python (docs/performance.md).
_ROW_COLUMNS = (
    "queue, state, priority, run_at_us, sequence, lease_token, lease_expires_us, deadline_us, "
    "remove_at_us, record, id"
)
_ROW_TYPES = ["text", "int2", "int4", "int8", "int8", "text", "int8", "int8", "int8", "bytea"]
_COPY_INSERT = (
    f"COPY conveyor_tasks ({_ROW_COLUMNS}, payload, concurrency_key) FROM STDIN (FORMAT BINARY)"
)
_INSERT_TYPES = [*_ROW_TYPES, "text", "bytea", "text"]
#: Updates of several rows: COPY them into this session's temp table (created once per
#: writer connection by prepare_writer), tagged with a batch number, then one fenced
#: UPDATE ... FROM it. ON COMMIT DELETE ROWS empties it at each commit.
_WRITE_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS conveyor_write (batch bigint NOT NULL, queue text, "
    "state smallint, priority integer, run_at_us bigint, sequence bigint, lease_token text, "
    "lease_expires_us bigint, deadline_us bigint, remove_at_us bigint, record bytea, "
    "id text, fence text) ON COMMIT DELETE ROWS"
)
_COPY_UPDATE = f"COPY conveyor_write (batch, {_ROW_COLUMNS}, fence) FROM STDIN (FORMAT BINARY)"
_UPDATE_TYPES = ["int8", *_ROW_TYPES, "text", "text"]
_SET_COLUMNS = (
    "queue = u.queue, state = u.state, priority = u.priority, run_at_us = u.run_at_us, "
    "sequence = u.sequence, lease_token = u.lease_token, lease_expires_us = u.lease_expires_us, "
    "deadline_us = u.deadline_us, remove_at_us = u.remove_at_us, record = u.record"
)
_FENCE = f"(u.fence IS NULL OR (t.state = {int(TaskState.LEASED)} AND t.lease_token = u.fence))"
_UPDATE = (
    f"UPDATE conveyor_tasks t SET {_SET_COLUMNS} FROM conveyor_write u "
    f"WHERE u.batch = %s AND t.id = u.id AND {_FENCE} RETURNING t.id"
)
#: A few rows: the columns as array parameters through unnest (one round trip). psycopg
#: dumps arrays in Python (~15 us a row), but the temp table's UPDATE scans every row
#: copied earlier in the transaction, which a group of many small updates pays for.
_COPY_ROWS = 32
_UPDATE_FEW = (
    f"UPDATE conveyor_tasks t SET {_SET_COLUMNS} FROM unnest(%s::text[], %s::smallint[], "
    "%s::int[], %s::bigint[], %s::bigint[], %s::text[], %s::bigint[], %s::bigint[], "
    "%s::bigint[], %s::bytea[], %s::text[], %s::text[]) AS u(queue, state, priority, "
    "run_at_us, sequence, lease_token, lease_expires_us, deadline_us, remove_at_us, record, "
    f"id, fence) WHERE t.id = u.id AND {_FENCE} RETURNING t.id"
)
#: One row: the same fenced UPDATE with the values as parameters (one round trip).
_UPDATE_ONE = (
    f"UPDATE conveyor_tasks t SET {_SET_COLUMNS} FROM (VALUES (%s::text, %s::smallint, "
    "%s::integer, %s::bigint, %s::bigint, %s::text, %s::bigint, %s::bigint, %s::bigint, "
    "%s::bytea, %s::text, %s::text)) AS u(queue, state, priority, run_at_us, sequence, "
    "lease_token, lease_expires_us, deadline_us, remove_at_us, record, id, fence) "
    f"WHERE t.id = u.id AND {_FENCE} RETURNING t.id"
)
_BATCHES = itertools.count(1)
#: The oldest READY run time of a queue without reading all its READY rows. Tasks without
#: a concurrency key sit under key '' of the ready index, ordered by priority next: skip
#: from one priority to the next (a recursive CTE) and take each one's earliest run time,
#: O(priorities x log n). Keyed tasks (flow control) are read by a min() over the queue's
#: keyed READY rows: O(n) in those only, paid by queues that use keys.
_READY_ROWS = (
    f"FROM conveyor_tasks WHERE queue = %(queue)s AND concurrency_key = '' AND state = {_R}"
)
_OLDEST_READY = (
    f"WITH RECURSIVE p(priority) AS ((SELECT priority {_READY_ROWS} ORDER BY priority DESC "
    f"LIMIT 1) UNION ALL SELECT (SELECT priority {_READY_ROWS} AND priority < p.priority "
    "ORDER BY priority DESC LIMIT 1) FROM p WHERE p.priority IS NOT NULL) "
    f"SELECT least(min((SELECT run_at_us {_READY_ROWS} AND priority = p.priority ORDER BY "
    "priority DESC, run_at_us LIMIT 1)), (SELECT min(run_at_us) FROM conveyor_tasks "
    f"WHERE queue = %(queue)s AND concurrency_key <> '' AND state = {_R})) "
    "FROM p WHERE p.priority IS NOT NULL"
)
_INSERT = (
    "INSERT INTO conveyor_tasks (queue, state, priority, run_at_us, sequence, lease_token, "
    "lease_expires_us, deadline_us, remove_at_us, record, id, payload, concurrency_key) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
#: The distinct keys of a queue's READY tasks past a key: a loose index scan (one seek of
#: the ready index per key), not a DISTINCT over every READY row.
_READY_KEYS = (
    "WITH RECURSIVE k(key) AS ("
    f"(SELECT concurrency_key FROM conveyor_tasks WHERE queue = %(q)s AND state = {_R} "
    "AND concurrency_key > %(after)s ORDER BY concurrency_key LIMIT 1) "
    "UNION ALL SELECT (SELECT t.concurrency_key FROM conveyor_tasks t WHERE "
    f"t.queue = %(q)s AND t.state = {_R} AND t.concurrency_key > k.key "
    "ORDER BY t.concurrency_key LIMIT 1) FROM k WHERE k.key IS NOT NULL) "
    "SELECT key FROM k WHERE key IS NOT NULL LIMIT %(limit)s"
)
_FLOW_COLUMNS = "rate, burst, concurrency, key_concurrency, tokens, tokens_at"
_SEQUENCE_BLOCK = 1000  # conveyor_sequence INCREMENT BY: one nextval per 1000 tasks


def prepare_writer(conn: Any) -> None:
    """Make a new writer connection ready: its session's temp table for batched updates.
    (Session state, like LISTEN: the store needs direct or session-pooled connections.)"""
    conn.execute(_WRITE_TABLE)
    conn.commit()


def _us(seconds: float | None) -> int | None:
    return None if seconds is None else micros(seconds)


class SequenceBlock:
    """Enqueue sequence numbers handed out from blocks of _SEQUENCE_BLOCK (per store)."""

    def __init__(self) -> None:
        self.next = 0
        self.end = 0

    def mark(self) -> tuple[int, int]:
        return self.next, self.end

    def give_back(self, mark: tuple[int, int]) -> None:
        """A write that failed hands back the numbers it took (a block it took stays ours:
        nextval is not transactional, and none of its numbers was committed)."""
        taken_next, taken_end = mark
        self.next = taken_next if self.end == taken_end else self.end - _SEQUENCE_BLOCK


class PgTaskTxn:
    """The core's TaskTxn over a psycopg connection (one transaction, autocommit off)."""

    def __init__(self, conn: Any, *, slot: int, sequence: SequenceBlock, writable: bool) -> None:
        self._conn = conn
        self._slot = slot
        self._sequence = sequence
        self._writable = writable
        #: id -> (queue, state, lease_token) of every task loaded or written here
        self._loaded: dict[str, tuple[str, TaskState, str]] = {}
        self._rows: dict[str, Task] = {}  # rows a SKIP LOCKED lease read returned
        self._count_deltas: dict[tuple[str, int], int] = {}
        self.ready_queues: set[str] = set()
        self.finished_ids: list[str] = []
        #: queues of tasks that left LEASED here: other brokers' limited Leases may go on
        self.freed_queues: set[str] = set()
        self._inserts: list[tuple[Any, ...]] = []
        self._updates: list[tuple[Any, ...]] = []
        self._deletes: list[str] = []  # ids: one DELETE ... WHERE id = ANY at flush

    def _exec(self, sql: str, params: Any = None) -> Any:
        if self._inserts or self._updates or self._deletes:
            self._flush_writes()
        return self._conn.execute(sql, params)

    def _flush_writes(self) -> None:
        # Deletes pending means no puts pending (each kind flushes the other before it
        # buffers), so this order keeps the write function's order.
        if self._deletes:
            self._flush_deletes()
        if self._inserts:
            self._flush_inserts()
        if self._updates:
            self._flush_updates()

    def _flush_updates(self) -> None:
        """Buffered updates as one UPDATE ... FROM unnest; a row not matched (its lease
        changed meanwhile) raises LeaseLost and the whole write rolls back alone."""
        rows, self._updates = self._updates, []
        latest: dict[str, tuple[Any, ...]] = {}
        for row in rows:  # the same task twice: the last write wins, the first fence holds
            earlier = latest.get(row[10])
            latest[row[10]] = row if earlier is None else (*row[:11], earlier[11])
        if len(latest) == 1:
            done = self._conn.execute(_UPDATE_ONE, next(iter(latest.values()))).fetchall()
        elif len(latest) < _COPY_ROWS:
            columns = [list(column) for column in zip(*latest.values(), strict=True)]
            done = self._conn.execute(_UPDATE_FEW, columns).fetchall()
        else:
            batch = next(_BATCHES)
            with self._conn.cursor() as cursor:
                with cursor.copy(_COPY_UPDATE) as rows_in:
                    rows_in.set_types(_UPDATE_TYPES)
                    for row in latest.values():
                        rows_in.write_row((batch, *row))
                done = cursor.execute(_UPDATE, (batch,)).fetchall()
        if len(done) != len(latest):
            lost = sorted(set(latest) - {r[0] for r in done})
            raise LeaseLost(f"task {lost[0]}: its lease changed in another transaction")

    def _flush_inserts(self) -> None:
        """New tasks are buffered and sent before the next statement and at the end of the
        write function: one INSERT, or one binary COPY for several."""
        rows, self._inserts = self._inserts, []
        if len(rows) == 1:
            self._conn.execute(_INSERT, rows[0])
        else:  # a duplicate id fails the COPY like the INSERT: UniqueViolation
            with self._conn.cursor() as cursor, cursor.copy(_COPY_INSERT) as rows_in:
                rows_in.set_types(_INSERT_TYPES)
                for row in rows:
                    rows_in.write_row(row)

    def _check_writable(self) -> None:
        if not self._writable:
            raise WriteInReadTransaction("write in a read transaction")

    def _remember(self, task: Task) -> Task:
        self._loaded[task.id] = (task.queue, task.state, task.lease_token)
        return task

    def load_tasks(self, task_ids: list[str]) -> None:
        """Hint: load and lock these tasks in id order with one statement (no N+1)."""
        missing = sorted(set(task_ids) - self._rows.keys())
        if not missing:
            return
        lock = " FOR UPDATE" if self._writable else ""
        rows = self._exec(
            f"SELECT {_COLUMNS} FROM conveyor_tasks WHERE id = ANY(%s) ORDER BY id{lock}",
            (missing,),
        ).fetchall()
        for task_id, data, payload in rows:
            self._rows[task_id] = record.decode(bytes(data), bytes(payload))

    def get_task(self, task_id: str) -> Task | None:
        """A copy of the cached row: a batch naming one big task 1,000 times (duplicates)
        reads its row once, not 1,000 times (it was 30 s for a 2 MiB row)."""
        task = self._rows.get(task_id)
        if task is None:
            lock = " FOR UPDATE" if self._writable else ""
            row = self._exec(
                f"SELECT record, payload FROM conveyor_tasks WHERE id = %s{lock}", (task_id,)
            ).fetchone()
            if row is None:
                return None
            task = self._rows[task_id] = record.decode(bytes(row[0]), bytes(row[1]))
        return self._remember(copy.copy(task))

    def put_task(self, task: Task, *, is_new: bool = False) -> None:
        self._check_writable()
        if self._deletes:
            self._flush_deletes()
        counted = (task.queue, int(task.state))
        values = (
            task.queue,
            int(task.state),
            task.priority,
            micros(task.run_at),
            task.sequence,
            task.lease_token,
            _us(task.lease_expires_at) if task.state is TaskState.LEASED else None,
            _us(task.deadline),
            _us(task.remove_at),
            record.encode(task),
        )
        loaded = None if is_new else self._loaded.get(task.id)
        if loaded is None and not is_new:
            row = self._exec(
                "SELECT queue, state, lease_token FROM conveyor_tasks WHERE id = %s FOR UPDATE",
                (task.id,),
            ).fetchone()
            if row is not None:
                loaded = (row[0], TaskState(row[1]), row[2])
        if loaded is None:  # a plain INSERT: a duplicate id raises (a cron fire twice)
            self._inserts.append((*values, task.id, task.payload, task.concurrency_key))
            self._delta(counted, +1)
        else:
            queue, state, token = loaded
            # fencing: a task read as LEASED is written only if its row still holds the
            # lease this txn read (state and token checked in the same UPDATE, at flush)
            fence = token if state is TaskState.LEASED else None
            self._updates.append((*values, task.id, fence))
            if (queue, int(state)) != counted:
                self._delta((queue, int(state)), -1)
                self._delta(counted, +1)
                if state is TaskState.LEASED:
                    self.freed_queues.add(queue)
        self._remember(task)
        self._rows[task.id] = copy.copy(task)  # what a later get_task here must see
        if task.state is TaskState.READY:
            self.ready_queues.add(task.queue)
        elif task.state.is_final:
            self.finished_ids.append(task.id)

    def delete_task(self, task: Task) -> None:
        """Buffered: retention's batch of deletes goes as one statement at flush."""
        self._check_writable()
        if self._inserts or self._updates:
            self._flush_writes()
        self._deletes.append(task.id)
        self._loaded.pop(task.id, None)
        self._rows.pop(task.id, None)

    def _flush_deletes(self) -> None:
        ids, self._deletes = self._deletes, []
        rows = self._conn.execute(
            "DELETE FROM conveyor_tasks WHERE id = ANY(%s) RETURNING queue, state", (ids,)
        ).fetchall()
        for queue, state in rows:
            self._delta((queue, int(state)), -1)

    def _delta(self, key: tuple[str, int], n: int) -> None:
        self._count_deltas[key] = self._count_deltas.get(key, 0) + n

    def ready_task_ids(self, queue: str, limit: int, concurrency_key: str = "") -> list[str]:
        """READY tasks of one key in lease order, locked (SKIP LOCKED) and cached for
        get_task."""
        lock = " FOR UPDATE SKIP LOCKED" if self._writable else ""
        rows = self._exec(
            f"SELECT {_COLUMNS} FROM conveyor_tasks WHERE queue = %s AND concurrency_key = %s "
            f"AND state = {_R} ORDER BY priority DESC, run_at_us, sequence LIMIT %s{lock}",
            (queue, concurrency_key, limit),
        ).fetchall()
        for task_id, data, payload in rows:
            self._rows[task_id] = record.decode(bytes(data), bytes(payload))
        return [row[0] for row in rows]

    def ready_keys(self, queue: str, after: str, limit: int) -> list[str]:
        rows = self._exec(_READY_KEYS, {"q": queue, "after": after, "limit": limit}).fetchall()
        return [row[0] for row in rows]

    def ready_heads(self, queue: str, after: str, limit: int) -> list[tuple[str, str]]:
        """Each key's first task through ready_task_ids, so a write locks it SKIP LOCKED.
        A key whose READY tasks another broker holds locked is left out, and the keys
        past it fill its place: a page is short only where the keys end (fair.ring
        stops there). The extra keys read are at most as many as were locked."""
        heads: list[tuple[str, str]] = []
        while len(heads) < limit:
            wanted = limit - len(heads)
            keys = self.ready_keys(queue, after, wanted)
            for key in keys:
                ids = self.ready_task_ids(queue, 1, key)
                if ids:
                    heads.append((key, ids[0]))
            if len(keys) < wanted:
                break  # no more keys
            after = keys[-1]
        return heads

    def leased_count(self, queue: str, concurrency_key: str | None = None) -> int:
        """The queue's: its count shards plus this write's changes; a key's: a count over
        the small partial index of LEASED keyed tasks (this write's rows already sent)."""
        if concurrency_key is None:
            row = self._exec(
                "SELECT coalesce(sum(n), 0) FROM conveyor_counts "
                f"WHERE queue = %s AND state = {_L}",
                (queue,),
            ).fetchone()
            return int(row[0]) + self._count_deltas.get((queue, _L), 0)
        if not concurrency_key:
            return int(
                self._exec(
                    f"SELECT count(*) FROM conveyor_tasks WHERE queue = %s AND state = {_L} "
                    "AND concurrency_key = ''",
                    (queue,),
                ).fetchone()[0]
            )
        row = self._exec(
            f"SELECT count(*) FROM conveyor_tasks WHERE queue = %s AND state = {_L} "
            "AND concurrency_key = %s AND concurrency_key <> ''",
            (queue, concurrency_key),
        ).fetchone()
        return int(row[0])

    def leased_counts(self, queue: str, concurrency_keys: Sequence[str]) -> dict[str, int]:
        """One count over the partial index of LEASED keyed tasks for the page's keys."""
        counts = dict.fromkeys(concurrency_keys, 0)
        if not counts:
            return counts
        rows = self._exec(
            f"SELECT concurrency_key, count(*) FROM conveyor_tasks WHERE queue = %s "
            f"AND state = {_L} AND concurrency_key = ANY(%s) AND concurrency_key <> '' "
            "GROUP BY concurrency_key",
            (queue, list(counts)),
        ).fetchall()
        for key, n in rows:
            counts[key] = int(n)
        return counts

    def keyed_queues(self) -> list[str]:
        """Queues with READY or LEASED keyed tasks: one statement, two index seeks per
        queue that holds READY or LEASED tasks at all."""
        rows = self._exec(
            "SELECT q.queue FROM (SELECT DISTINCT queue FROM conveyor_counts WHERE state IN "
            f"({_R}, {_L})) q WHERE EXISTS (SELECT 1 FROM conveyor_tasks t WHERE "
            f"t.queue = q.queue AND t.state = {_R} AND t.concurrency_key > '') OR EXISTS "
            f"(SELECT 1 FROM conveyor_tasks t WHERE t.queue = q.queue AND t.state = {_L} "
            "AND t.concurrency_key <> '') ORDER BY q.queue"
        ).fetchall()
        return [row[0] for row in rows]

    def due_task_ids(self, index: str, now: float, limit: int) -> list[str]:
        sql = _DUE_SQL[index]
        if not self._writable:
            sql = sql.replace(" FOR UPDATE SKIP LOCKED", "")
        return [row[0] for row in self._exec(sql, (micros(now), limit)).fetchall()]

    def next_due_time(self) -> float | None:
        times = [self._exec(_NEXT_SQL[index]).fetchone()[0] for index in TIME_INDEXES]
        known = [t for t in times if t is not None]
        return min(known) / 1_000_000 if known else None

    def get_unique(self, queue: str, unique_key: str) -> str | None:
        row = self._exec(
            "SELECT task_id FROM conveyor_unique WHERE queue = %s AND unique_key = %s",
            (queue, unique_key),
        ).fetchone()
        return row[0] if row else None

    def put_unique(self, queue: str, unique_key: str, task_id: str) -> None:
        self._check_writable()
        self._exec(
            "INSERT INTO conveyor_unique VALUES (%s, %s, %s) ON CONFLICT (queue, unique_key) "
            "DO UPDATE SET task_id = EXCLUDED.task_id",
            (queue, unique_key, task_id),
        )

    def delete_unique(self, queue: str, unique_key: str) -> None:
        self._check_writable()
        self._exec(
            "DELETE FROM conveyor_unique WHERE queue = %s AND unique_key = %s", (queue, unique_key)
        )

    def next_sequence(self) -> int:
        """From a block of _SEQUENCE_BLOCK numbers: one nextval per block, not per task."""
        self._check_writable()
        block = self._sequence
        if block.next >= block.end:
            start = self._exec("SELECT nextval('conveyor_sequence')").fetchone()[0]
            block.next, block.end = start - 1, start - 1 + _SEQUENCE_BLOCK
        block.next += 1
        return block.next

    def flush(self) -> None:
        """Send buffered inserts, then the summed count changes: one upsert statement for
        every (queue, state) changed, into this store's slot (rows in key order)."""
        self._flush_writes()
        deltas = sorted((k, n) for k, n in self._count_deltas.items() if n)
        self._count_deltas = {}
        if deltas:
            rows = ", ".join(["(%s, %s, %s, %s)"] * len(deltas))
            self._exec(
                f"INSERT INTO conveyor_counts VALUES {rows} ON CONFLICT "
                "(slot, queue, state) DO UPDATE SET n = conveyor_counts.n + EXCLUDED.n",
                [v for (queue, state), n in deltas for v in (self._slot, queue, state, n)],
            )

    # -- schedules -------------------------------------------------------------

    def get_schedule(self, name: str) -> Schedule | None:
        row = self._exec(
            "SELECT record FROM conveyor_schedules WHERE name = %s", (name,)
        ).fetchone()
        return schedule_record.decode(bytes(row[0])) if row else None

    def put_schedule(self, schedule: Schedule) -> None:
        self._check_writable()
        due = _us(schedule.next_fire_time) if schedule.is_active else None
        self._exec(
            "INSERT INTO conveyor_schedules VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
            "SET record = EXCLUDED.record, next_fire_us = EXCLUDED.next_fire_us",
            (schedule.name, schedule_record.encode(schedule), due),
        )

    def delete_schedule(self, name: str) -> None:
        self._check_writable()
        self._exec("DELETE FROM conveyor_schedules WHERE name = %s", (name,))

    def list_schedules(self) -> list[Schedule]:
        rows = self._exec("SELECT record FROM conveyor_schedules ORDER BY name").fetchall()
        return [schedule_record.decode(bytes(row[0])) for row in rows]

    def due_schedule_names(self, now: float, limit: int) -> list[str]:
        lock = " FOR UPDATE SKIP LOCKED" if self._writable else ""
        rows = self._exec(
            "SELECT name FROM conveyor_schedules WHERE next_fire_us IS NOT NULL AND "
            f"next_fire_us <= %s ORDER BY next_fire_us, name LIMIT %s{lock}",
            (micros(now), limit),
        ).fetchall()
        return [row[0] for row in rows]

    def next_schedule_due_time(self) -> float | None:
        row = self._exec(
            "SELECT min(next_fire_us) FROM conveyor_schedules WHERE next_fire_us IS NOT NULL"
        ).fetchone()
        return row[0] / 1_000_000 if row and row[0] is not None else None

    def queue_depths(self) -> list[QueueDepth]:
        """O(queues x states): the count shards summed, plus one index seek per queue."""
        depths: dict[str, QueueDepth] = {}
        rows = self._exec(
            "SELECT queue, state, sum(n) FROM conveyor_counts GROUP BY queue, state "
            "HAVING sum(n) > 0"
        ).fetchall()
        for queue, state, n in rows:
            depth = depths.setdefault(queue, QueueDepth(queue))
            depth.counts[TaskState(state)] = int(n)
        for depth in depths.values():
            if depth.counts.get(TaskState.READY):
                row = self._exec(_OLDEST_READY, {"queue": depth.queue}).fetchone()
                depth.oldest_ready_at = row[0] / 1_000_000 if row[0] is not None else None
        return [depths[name] for name in sorted(depths)]

    def count(self, index: str) -> int:
        """Entries in an index (tests and operators; O(n))."""
        where = {
            "tasks": "TRUE",
            "ready": f"state = {_R}",
            "scheduled": f"state = {_S}",
            "leases": f"state = {_L} AND lease_expires_us IS NOT NULL",
            "deadlines": f"state IN ({_S}, {_R}) AND deadline_us IS NOT NULL",
            "retention": "remove_at_us IS NOT NULL",
        }
        if index == "unique":
            return int(self._exec("SELECT count(*) FROM conveyor_unique").fetchone()[0])
        if index == "payloads":
            where["payloads"] = "payload <> ''::bytea"
        return int(
            self._exec(f"SELECT count(*) FROM conveyor_tasks WHERE {where[index]}").fetchone()[0]
        )

    # -- operators ---------------------------------------------------------------

    def is_paused(self, queue: str) -> bool:
        return (
            self._exec("SELECT 1 FROM conveyor_paused WHERE queue = %s", (queue,)).fetchone()
            is not None
        )

    def set_paused(self, queue: str, is_paused: bool) -> None:
        self._check_writable()
        if is_paused:
            self._exec("INSERT INTO conveyor_paused VALUES (%s) ON CONFLICT DO NOTHING", (queue,))
        else:
            self._exec("DELETE FROM conveyor_paused WHERE queue = %s", (queue,))

    def paused_queues(self) -> list[str]:
        return [r[0] for r in self._exec("SELECT queue FROM conveyor_paused ORDER BY queue")]

    def get_queue_flow(self, queue: str) -> QueueFlow | None:
        """In a write, locked until commit: brokers leasing from the queue take turns."""
        lock = " FOR UPDATE" if self._writable else ""
        row = self._exec(
            f"SELECT {_FLOW_COLUMNS} FROM conveyor_queue_flows WHERE queue = %s{lock}", (queue,)
        ).fetchone()
        return _flow(row) if row is not None else None

    def put_queue_flow(self, queue: str, flow: QueueFlow | None) -> None:
        self._check_writable()
        if flow is None:
            self._exec("DELETE FROM conveyor_queue_flows WHERE queue = %s", (queue,))
            return
        limits = flow.limits
        self._exec(
            f"INSERT INTO conveyor_queue_flows (queue, {_FLOW_COLUMNS}) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (queue) DO UPDATE SET rate = EXCLUDED.rate, "
            "burst = EXCLUDED.burst, concurrency = EXCLUDED.concurrency, "
            "key_concurrency = EXCLUDED.key_concurrency, tokens = EXCLUDED.tokens, "
            "tokens_at = EXCLUDED.tokens_at",
            (
                queue,
                limits.rate,
                limits.burst,
                limits.concurrency,
                limits.key_concurrency,
                flow.tokens,
                flow.tokens_at,
            ),
        )

    def queue_flows_for(self, queues: Collection[str]) -> dict[str, QueueFlow]:
        """One statement; in a write every row is locked until commit, in queue order
        (ORDER BY sits below FOR UPDATE: rows are locked as sorted), so brokers whose
        leases list the queues in other orders never hold them crosswise."""
        names = sorted(set(queues))
        if not names:
            return {}
        lock = " FOR UPDATE" if self._writable else ""
        rows = self._exec(
            f"SELECT queue, {_FLOW_COLUMNS} FROM conveyor_queue_flows "
            f"WHERE queue = ANY(%s) ORDER BY queue{lock}",
            (names,),
        ).fetchall()
        return {row[0]: _flow(row[1:]) for row in rows}

    def queue_flows(self) -> dict[str, QueueFlow]:
        rows = self._exec(
            f"SELECT queue, {_FLOW_COLUMNS} FROM conveyor_queue_flows ORDER BY queue"
        ).fetchall()
        return {row[0]: _flow(row[1:]) for row in rows}

    def scan_tasks(self, after: str, limit: int, *, newest_first: bool = False) -> list[Task]:
        if newest_first:
            where, order = ("id < %s" if after else "TRUE"), "DESC"
        else:
            where, order = "id > %s", "ASC"
        params: tuple[Any, ...] = ((after,) if (after or not newest_first) else ()) + (limit,)
        rows = self._exec(
            f"SELECT record FROM conveyor_tasks WHERE {where} ORDER BY id {order} LIMIT %s",
            params,
        ).fetchall()
        return [record.index_state(bytes(row[0])) for row in rows]


def _flow(row: Any) -> QueueFlow:
    rate, burst, concurrency, key_concurrency, tokens, tokens_at = row
    limits = QueueLimits(float(rate), int(burst), int(concurrency), int(key_concurrency))
    return QueueFlow(limits, float(tokens), float(tokens_at))
