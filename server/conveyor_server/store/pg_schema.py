"""PostgreSQL schema for the SQL store: tables, partial indexes for the hot questions, version.

Tasks keep the store's own record (store/record.py, a bytea) plus the columns the hot
questions need; one partial index per question, so each index holds only the rows that
can answer it:
- READY per queue in lease order: (queue, priority DESC, run_at_us, sequence), as the KV
  ready key (store/keys.py) orders them;
- each timer index (TIME_INDEXES) by due time: scheduled run_at, lease expiry, deadline
  (SCHEDULED/READY only), retention remove_at (final tasks only).
Depth counts sit in `counts`, sharded by a per-store slot and summed on read: no COUNT(*)
and no single hot row shared by every broker.

Version 2 (flow control, docs/flow-control.md): a `concurrency_key` column (COLLATE "C":
keys sort by bytes, as in the KV stores); the ready index becomes (queue, concurrency_key,
priority DESC, run_at_us, sequence), so one key's READY tasks are a range and the distinct
keys a loose index scan; LEASED keyed tasks get a small partial index for the per-key
count; `conveyor_queue_flows` holds each limited queue's limits and token bucket (read FOR
UPDATE in the lease transaction, so brokers take a limited queue's slots in turn).
"""

from __future__ import annotations

SCHEMA_VERSION = 2

#: (version, statements) applied in order inside one transaction by `migrate`.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            "CREATE TABLE IF NOT EXISTS conveyor_meta "
            "(key text PRIMARY KEY, value bigint NOT NULL)",
            """CREATE TABLE conveyor_tasks (
                id text PRIMARY KEY,
                queue text NOT NULL,
                state smallint NOT NULL,
                priority integer NOT NULL,
                run_at_us bigint NOT NULL,
                sequence bigint NOT NULL,
                lease_token text NOT NULL DEFAULT '',
                lease_expires_us bigint,
                deadline_us bigint,
                remove_at_us bigint,
                record bytea NOT NULL,
                payload bytea NOT NULL DEFAULT ''::bytea
            )""",
            # {READY} etc.: core/model.py TaskState numbers, filled in by `statements()`
            "CREATE INDEX conveyor_tasks_ready ON conveyor_tasks "
            "(queue, priority DESC, run_at_us, sequence) WHERE state = {READY}",
            "CREATE INDEX conveyor_tasks_scheduled ON conveyor_tasks (run_at_us, sequence) "
            "WHERE state = {SCHEDULED}",
            "CREATE INDEX conveyor_tasks_leases ON conveyor_tasks (lease_expires_us, id) "
            "WHERE state = {LEASED} AND lease_expires_us IS NOT NULL",
            "CREATE INDEX conveyor_tasks_deadlines ON conveyor_tasks (deadline_us, id) "
            "WHERE state IN ({SCHEDULED}, {READY}) AND deadline_us IS NOT NULL",
            "CREATE INDEX conveyor_tasks_retention ON conveyor_tasks (remove_at_us, id) "
            "WHERE remove_at_us IS NOT NULL",
            """CREATE TABLE conveyor_unique (
                queue text NOT NULL, unique_key text NOT NULL, task_id text NOT NULL,
                PRIMARY KEY (queue, unique_key))""",
            """CREATE TABLE conveyor_schedules (
                name text PRIMARY KEY, record bytea NOT NULL, next_fire_us bigint)""",
            "CREATE INDEX conveyor_schedules_due ON conveyor_schedules (next_fire_us, name) "
            "WHERE next_fire_us IS NOT NULL",
            "CREATE TABLE conveyor_paused (queue text PRIMARY KEY)",
            """CREATE TABLE conveyor_counts (
                slot integer NOT NULL, queue text NOT NULL, state smallint NOT NULL,
                n bigint NOT NULL, PRIMARY KEY (slot, queue, state))""",
            "CREATE SEQUENCE conveyor_sequence INCREMENT BY 1000",
            # the hot table churns: vacuum it early (docs/scaling.md)
            "ALTER TABLE conveyor_tasks SET (autovacuum_vacuum_scale_factor = 0.02, "
            "autovacuum_analyze_scale_factor = 0.02)",
        ],
    ),
    (
        2,
        [
            # a constant default: no table rewrite (PostgreSQL 11+)
            'ALTER TABLE conveyor_tasks ADD COLUMN concurrency_key text COLLATE "C" '
            "NOT NULL DEFAULT ''",
            "DROP INDEX conveyor_tasks_ready",
            "CREATE INDEX conveyor_tasks_ready ON conveyor_tasks "
            "(queue, concurrency_key, priority DESC, run_at_us, sequence) WHERE state = {READY}",
            "CREATE INDEX conveyor_tasks_key_leased ON conveyor_tasks (queue, concurrency_key) "
            "WHERE state = {LEASED} AND concurrency_key <> ''",
            """CREATE TABLE conveyor_queue_flows (
                queue text PRIMARY KEY,
                rate double precision NOT NULL,
                burst bigint NOT NULL,
                concurrency bigint NOT NULL,
                key_concurrency bigint NOT NULL,
                tokens double precision NOT NULL,
                tokens_at double precision NOT NULL)""",
        ],
    ),
]


def statements(version: int) -> list[str]:
    """The migration to `version` with TaskState numbers filled in."""
    from conveyor_server.core.model import TaskState

    names = {state.name: int(state) for state in TaskState}
    for number, items in MIGRATIONS:
        if number == version:
            return [item.format(**names) if "{" in item else item for item in items]
    raise KeyError(version)
