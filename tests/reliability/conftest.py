"""Reliability fixtures: several brokers on one fresh PostgreSQL database (a cluster)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from conveyor_server.testing import BrokerProcess
from conveyor_server.testing.databases import TemplateDatabases

ClusterFactory = Callable[..., list[BrokerProcess]]


@pytest.fixture
def pg_cluster(
    tmp_path_factory: pytest.TempPathFactory, template_databases: TemplateDatabases
) -> Iterator[ClusterFactory]:
    """`pg_cluster(n, *extra_args)`: n started brokers sharing one fresh database."""
    started: list[BrokerProcess] = []
    urls: list[str] = []

    def start(n: int, *extra_args: str, database_url: str = "") -> list[BrokerProcess]:
        if not database_url:
            database_url = template_databases.create()
            urls.append(database_url)
        brokers = [
            BrokerProcess(tmp_path_factory.mktemp("data"), extra_args, database_url=database_url)
            for _ in range(n)
        ]
        started.extend(brokers)
        for broker in brokers:
            broker.start()
        return brokers

    yield start
    for broker in started:
        broker.kill()
    for url in urls:
        template_databases.drop(url)
