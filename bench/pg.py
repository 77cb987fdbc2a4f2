"""`--store postgres`: one throwaway PostgreSQL 15 (fsync on) per bench run, a fresh
database per scenario run, and the CPU its server processes spend in a timed window."""

from __future__ import annotations

import atexit
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager

from conveyor_server.testing.postgres import PostgresServer

_server: PostgresServer | None = None
_numbers = itertools.count(1)


def server() -> PostgresServer:
    """The run's server, started on first use (fsync and synchronous_commit on)."""
    global _server
    if _server is None:
        _server = PostgresServer(fsync=True).start()
        atexit.register(_server.stop)
    return _server


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new empty database (the brokers migrate it); dropped afterwards."""
    pg = server()
    name = f"bench_{os.getpid()}_{next(_numbers)}"
    url = pg.create_database(name)
    try:
        yield url
    finally:
        pg.drop_database(name)


def is_running() -> bool:
    return _server is not None


def server_pids() -> list[int]:
    """The postmaster and its children (backends, walwriter, checkpointer...), if running."""
    if _server is None:
        return []
    try:
        postmaster = int((_server.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            pids.append(int(entry))
    return pids
