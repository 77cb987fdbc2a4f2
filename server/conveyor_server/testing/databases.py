"""Fresh PostgreSQL databases for tests, each a copy of one migrated template (fast).

`CREATE DATABASE … TEMPLATE` copies the already migrated schema, so a broker started on a
new database does not run the migrations itself, and no test sees another test's rows.
"""

from __future__ import annotations

import itertools
import os

from conveyor_server.testing.postgres import PostgresServer

_TEMPLATE = "conveyor_template"


class TemplateDatabases:
    """Makes databases from a migrated template on one server; `drop_all` removes them."""

    def __init__(self, server: PostgresServer, prefix: str = "conveyor_test") -> None:
        self.server = server
        self.prefix = f"{prefix}_{os.getpid()}"
        self._numbers = itertools.count(1)
        self._made: list[str] = []
        self._has_template = False

    def _ensure_template(self) -> None:
        if self._has_template:
            return
        from conveyor_server.store.pg_store import migrate

        self.server.drop_database(_TEMPLATE)
        migrate(self.server.create_database(_TEMPLATE))
        self._has_template = True

    def create(self) -> str:
        """A new, empty, migrated database; returns its URL."""
        self._ensure_template()
        name = f"{self.prefix}_{next(self._numbers)}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{_TEMPLATE}" STRATEGY FILE_COPY')
        self._made.append(name)
        return self.server.url_for(name)

    def drop(self, url: str) -> None:
        """Drop the database of `url` (made by `create`), closing any connection left to it."""
        name = url.rsplit("/", 1)[1]
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._made:
            self._made.remove(name)

    def drop_all(self) -> None:
        for name in list(self._made):
            self.drop(self.server.url_for(name))

    def _execute(self, sql: str) -> None:
        from conveyor_server.store.pg_store import connect  # the one module with the driver

        with connect(self.server.url, autocommit=True) as conn:
            conn.execute(sql)
