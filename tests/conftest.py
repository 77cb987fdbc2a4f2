"""Shared fixtures: a real `conveyor serve` subprocess on a loopback port with a temp data dir.

Brokers use the store that `broker_store` names: "lmdb" here; tests/rpc, tests/e2e and
tests/client override it with both "lmdb" and "postgres" (a fresh database per broker,
copied from a migrated template). A test marked `lmdb_only` is not run on "postgres".
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from conveyor_server.testing import BrokerProcess
from conveyor_server.testing.databases import TemplateDatabases
from conveyor_server.testing.postgres import PostgresServer, find_bin_dir


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lmdb_only: tests LMDB itself (data dir, fsync, disk full); not run on postgres"
    )
    config.addinivalue_line("markers", "postgres: runs brokers on the PostgreSQL store")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the "postgres" variant of tests marked `lmdb_only`."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("broker_store") == "postgres"
        (dropped if on_postgres and item.get_closest_marker("lmdb_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def require_tool(name: str) -> str:
    """Path of an external tool; under CI=true a missing tool fails instead of skipping."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI but not installed (see .ci/run)")
        pytest.skip(f"{name} not installed")
    return path


def require_postgres() -> None:
    """Debian's PostgreSQL binaries; under CI=true missing ones fail instead of skipping."""
    if find_bin_dir() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is required in CI but not installed (see .ci/run)")
        pytest.skip("PostgreSQL (initdb, pg_ctl) not installed")
    if os.geteuid() == 0:
        require_tool("runuser")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session (fsync off: tests, not power loss)."""
    require_postgres()
    server = PostgresServer(fsync=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def template_databases(postgres_server: PostgresServer) -> TemplateDatabases:
    """Fresh migrated databases on the session's PostgreSQL server."""
    return TemplateDatabases(postgres_server)


@pytest.fixture(scope="module")
def broker_store() -> str:
    """The store of the brokers the fixtures start; rpc, e2e and client ask for both."""
    return "lmdb"


BOTH_STORES = ["lmdb", pytest.param("postgres", marks=pytest.mark.postgres)]
"""`params=` for a suite's `broker_store` override that runs it on both stores."""


def new_database_url(request: pytest.FixtureRequest, broker_store: str) -> str:
    """A fresh database's URL for a "postgres" broker, "" for an LMDB one."""
    if broker_store != "postgres":
        return ""
    databases: TemplateDatabases = request.getfixturevalue("template_databases")
    return databases.create()


def drop_database(request: pytest.FixtureRequest, url: str) -> None:
    if url:
        databases: TemplateDatabases = request.getfixturevalue("template_databases")
        databases.drop(url)


@pytest.fixture
def broker_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, broker_store: str
) -> Iterator[Callable[..., BrokerProcess]]:
    """Start brokers with extra `conveyor serve` flags; all are killed at teardown.

    On "postgres" each broker gets its own fresh database, unless the test names one
    (`--database-url`: several brokers on one database).
    """
    started: list[BrokerProcess] = []

    def start(*extra_args: str) -> BrokerProcess:
        names_one = any(arg.split("=", 1)[0] == "--database-url" for arg in extra_args)
        url = "" if names_one else new_database_url(request, broker_store)
        process = BrokerProcess(tmp_path_factory.mktemp("data"), extra_args, database_url=url)
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.kill()
    for process in started:
        drop_database(request, process.database_url)


@pytest.fixture
def broker(broker_factory: Callable[..., BrokerProcess]) -> BrokerProcess:
    """A fresh broker with default settings."""
    return broker_factory()


@pytest.fixture(scope="module")
def shared_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, broker_store: str
) -> Iterator[BrokerProcess]:
    """One broker for a whole test module (tests must use their own queue names)."""
    url = new_database_url(request, broker_store)
    process = BrokerProcess(tmp_path_factory.mktemp("shared-data"), database_url=url)
    try:
        process.start()
        yield process
    finally:
        process.kill()
        drop_database(request, url)
