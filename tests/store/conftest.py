"""Store fixtures: every store implementation, and a factory for Task records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor_server.core.model import RetryPolicy, Task, TaskState
from conveyor_server.store.lmdb_store import LmdbStore
from conveyor_server.store.memory import MemoryStore

NOW = 1_800_000_000.0

MakeTask = Callable[..., Task]


_TABLES = (
    "conveyor_tasks, conveyor_unique, conveyor_schedules, conveyor_paused, conveyor_counts, "
    "conveyor_queue_flows"
)


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """One migrated database for the session; tests empty it (TRUNCATE) before use."""
    server = request.getfixturevalue("postgres_server")
    url = server.create_database("store_tests")
    from conveyor_server.store.pg_store import migrate

    migrate(url)
    return str(url)


def empty_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {_TABLES}")
        conn.execute("ALTER SEQUENCE conveyor_sequence RESTART")


@pytest.fixture(params=["memory", "lmdb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each store in turn; the contract suite runs once per implementation."""
    opened: Any
    if request.param == "memory":
        opened = MemoryStore()
    elif request.param == "postgres":
        from conveyor_server.store.pg_store import PgStore

        url = request.getfixturevalue("postgres_url")
        empty_postgres(url)
        opened = PgStore(url)
    else:
        opened = LmdbStore(tmp_path / "data", initial_map_bytes=16 << 20, max_bytes=64 << 20)
    yield opened
    opened.close()


@pytest.fixture
def make_task() -> MakeTask:
    """Build a Task record; ids and sequences count up unless given."""
    counter = iter(range(1, 1 << 30))

    def make(**fields: Any) -> Task:
        number = next(counter)
        values: dict[str, Any] = {
            "id": f"task-{number:04d}",
            "queue": "default",
            "kind": "job",
            "payload": b"payload",
            "content_type": "",
            "headers": {},
            "priority": 0,
            "run_at": NOW,
            "deadline": None,
            "max_attempts": 3,
            "retry_policy": RetryPolicy(),
            "lease_duration": 30.0,
            "unique_key": "",
            "unique_window": 0.0,
            "result_retention": 3600.0,
            "state": TaskState.READY,
            "sequence": number,
            "created_at": NOW,
            "updated_at": NOW,
        }
        values.update(fields)
        return Task(**values)

    return make
