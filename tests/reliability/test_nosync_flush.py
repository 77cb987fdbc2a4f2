"""nosync mode's promise (README, --durability): commits reach the disk about once a second.

The flush runs after a commit once a second has passed since the last one, and the writer
thread flushes a commit that no later commit follows (store/lmdb_store.py idle()).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import SystemClock
from conveyor_server.core.model import TaskSpec
from conveyor_server.store.lmdb_store import LmdbStore


class _CountingEnv:
    """Delegates to the LMDB environment and counts the flushes to disk (env.sync)."""

    def __init__(self, env: Any) -> None:
        self._env = env
        self.syncs = 0

    def sync(self, force: bool = False) -> None:
        self.syncs += 1
        self._env.sync(force)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


def _counted_store(tmp_path: Path) -> tuple[LmdbStore, _CountingEnv]:
    store = LmdbStore(tmp_path / "data", durable=False, initial_map_bytes=8 << 20)
    counting = _CountingEnv(store._env)
    store._env = counting  # the observer: every flush to disk goes through here
    return store, counting


def test_nosync_flushes_at_most_about_once_a_second_under_steady_writes(tmp_path: Path) -> None:
    """The control for the test below: the observer sees flushes, and they stay rare."""
    store, counting = _counted_store(tmp_path)
    broker = Broker(store, SystemClock())
    try:
        started = time.monotonic()
        while time.monotonic() - started < 2.2:
            broker.enqueue(TaskSpec(kind="job")).result(5)
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        assert 1 <= counting.syncs <= elapsed + 1, counting.syncs
    finally:
        store._env = counting._env
        store.close()


def test_nosync_flushes_a_write_within_about_a_second_without_a_later_commit(
    tmp_path: Path,
) -> None:
    store, counting = _counted_store(tmp_path)
    try:
        Broker(store, SystemClock()).enqueue(TaskSpec(kind="job")).result(5)  # one commit
        time.sleep(2.5)  # "about once a second", with room for a loaded machine
        assert counting.syncs >= 1, "the write was not flushed to disk 2.5 s after its commit"
    finally:
        store._env = counting._env
        store.close()
