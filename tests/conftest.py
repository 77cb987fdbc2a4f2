"""Shared fixtures: a real `conveyor serve` subprocess on a loopback port with a temp data dir."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from conveyor_server.testing import BrokerProcess
from conveyor_server.testing.postgres import PostgresServer, find_bin_dir


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


@pytest.fixture
def broker_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., BrokerProcess]]:
    """Start brokers with extra `conveyor serve` flags; all are killed at teardown."""
    started: list[BrokerProcess] = []

    def start(*extra_args: str) -> BrokerProcess:
        process = BrokerProcess(tmp_path_factory.mktemp("data"), extra_args)
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def broker(broker_factory: Callable[..., BrokerProcess]) -> BrokerProcess:
    """A fresh broker with default settings."""
    return broker_factory()


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for a whole test module (tests must use their own queue names)."""
    process = BrokerProcess(tmp_path_factory.mktemp("shared-data"))
    process.start()
    yield process
    process.kill()
