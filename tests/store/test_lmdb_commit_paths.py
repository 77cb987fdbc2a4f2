"""Where LmdbStore commits: the writer thread, or the event loop itself for a small turn."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from conveyor_server.core.store import TaskTxn
from conveyor_server.service.settle import settle
from conveyor_server.store.lmdb_store import LmdbStore

MIB = 1 << 20


def _thread_name(txn: TaskTxn) -> str:
    return threading.current_thread().name


def test_a_small_loop_turn_commits_on_the_loop_and_a_burst_on_the_writer(tmp_path: Path):
    # A generous quiet-turn time: this checks the size rule, whatever the machine's load.
    store = LmdbStore(tmp_path, initial_map_bytes=16 * MIB, inline_max=4, quiet_turn_seconds=5)

    async def scenario() -> tuple[list[str], list[str]]:
        alone = await asyncio.gather(*(settle(store.write(_thread_name)) for _ in range(2)))
        burst = await asyncio.gather(*(settle(store.write(_thread_name)) for _ in range(10)))
        return alone, burst

    try:
        alone, burst = asyncio.run(scenario())
    finally:
        store.close()
    assert alone == [threading.main_thread().name] * 2
    assert burst == ["lmdb-writer"] * 10


def test_a_slow_loop_turn_hands_its_writes_to_the_writer(tmp_path: Path):
    """A turn that kept the loop busy means other callbacks wait: no fsync on the loop."""
    store = LmdbStore(tmp_path, initial_map_bytes=16 * MIB, quiet_turn_seconds=0.5)

    async def scenario() -> tuple[str, str]:
        quick = await settle(store.write(_thread_name))
        pending = settle(store.write(_thread_name))
        time.sleep(0.6)  # the rest of this turn takes longer than quiet_turn_seconds
        return quick, await pending

    try:
        quick, slow = asyncio.run(scenario())
    finally:
        store.close()
    assert (quick, slow) == (threading.main_thread().name, "lmdb-writer")


def test_writes_from_a_thread_without_a_loop_go_to_the_writer(tmp_path: Path):
    store = LmdbStore(tmp_path, initial_map_bytes=16 * MIB)
    try:
        assert store.write(_thread_name).result(timeout=5) == "lmdb-writer"
    finally:
        store.close()


def test_a_turn_waits_for_writes_still_queued_for_the_writer(tmp_path: Path):
    """Order is kept: a small turn does not commit ahead of a burst still being written."""
    store = LmdbStore(tmp_path, initial_map_bytes=16 * MIB, inline_max=2)
    order: list[int] = []

    def record(n: int, pause: float = 0.0):
        def apply(txn: TaskTxn) -> str:
            time.sleep(pause)
            order.append(n)
            return threading.current_thread().name

        return apply

    async def scenario() -> list[str]:
        burst = [settle(store.write(record(n, 0.01))) for n in range(5)]
        await asyncio.sleep(0)  # the burst's turn ends: it goes to the writer thread
        later = settle(store.write(record(99)))
        return await asyncio.gather(*burst, later)

    try:
        where = asyncio.run(scenario())
    finally:
        store.close()
    assert order == [0, 1, 2, 3, 4, 99]
    assert where[-1] == "lmdb-writer"


def test_a_write_cancelled_before_it_ran_is_skipped_and_the_writer_lives_on(tmp_path: Path):
    store = LmdbStore(tmp_path, initial_map_bytes=16 * MIB)
    applied: list[str] = []
    try:
        slow = store.write(lambda txn: time.sleep(0.2) or applied.append("slow"))
        cancelled = store.write(lambda txn: applied.append("cancelled"))
        assert cancelled.cancel()  # still queued behind the slow one
        after = store.write(lambda txn: applied.append("after") or "ok")
        assert after.result(timeout=5) == "ok"
        slow.result(timeout=5)
    finally:
        store.close()
    assert applied == ["slow", "after"]


def test_an_error_after_a_commit_is_logged_and_the_writer_lives_on(tmp_path: Path, caplog):
    """The writes were committed and answered; the writer must not die with the error."""
    store = LmdbStore(tmp_path, initial_map_bytes=16 * MIB)
    real_after_commit = store.after_commit
    calls = []

    def failing_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk said no")
        real_after_commit()

    store.after_commit = failing_once  # type: ignore[method-assign]
    try:
        assert store.write(lambda txn: "first").result(timeout=5) == "first"
        assert store.write(lambda txn: "second").result(timeout=5) == "second"
    finally:
        store.close()  # joins the writer: its after-commit work is done
    assert len(calls) == 2
    assert "disk said no" in caplog.text


def test_nosync_flushes_to_disk_on_the_writer_thread_not_on_the_loop(tmp_path: Path):
    store = LmdbStore(
        tmp_path, durable=False, initial_map_bytes=16 * MIB, inline_max=4, quiet_turn_seconds=5
    )
    env = store._env
    flushed_on: list[str] = []

    class RecordingEnv:
        """The store's environment, noting which thread flushes it."""

        def sync(self, force: bool = False) -> None:
            flushed_on.append(threading.current_thread().name)
            env.sync(force)

        def __getattr__(self, name: str):
            return getattr(env, name)

    store._env = RecordingEnv()  # type: ignore[assignment]

    async def scenario() -> list[str]:
        first = await settle(store.write(_thread_name))  # small turn, no flush due: inline
        store._last_flush -= 2.0  # a second has passed: this write's commit flushes
        second = await settle(store.write(_thread_name))
        return [first, second]

    try:
        committed_on = asyncio.run(scenario())
    finally:
        store._env = env
        store.close()
    assert committed_on == [threading.main_thread().name, "lmdb-writer"]
    assert flushed_on == ["lmdb-writer"]
