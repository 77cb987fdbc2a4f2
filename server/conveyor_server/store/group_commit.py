"""Group commit: many waiting writes in one transaction, each rolled back alone on error.

Any store whose commits are expensive (an fsync, a network round trip) can
reuse this. The store supplies a `GroupBackend`; this module owns the writer
thread, the queue, batching, inline commits on the event loop, and resolving
each write's future after the commit that holds it.

Batches form from what is waiting (up to `max_group`), never from a timer, so
an idle broker adds no latency.

Inline commits: writes asked for on an event loop are first gathered until
the end of that loop turn. If the writer thread is idle (nothing queued or
committing), the loop turn was quick (less than `quiet_turn_seconds` from its
first write to its end: a busy turn means other callbacks wait on the loop) and
it asked for at most `inline_max` writes, the loop commits
them itself, in one transaction: no hand-off to the writer thread and back
(two thread wake-ups and a GIL hand-over each way). Otherwise they go to the
writer thread, in order. The loop is blocked during that commit, which is why
only small turns on a quiet loop go inline: a burst of writes keeps the writer
thread's overlap of the commit with RPC work. Figures: docs/performance.md.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: (write function, its future, is_growth). A tuple: it is built once per write.
Write = tuple[Callable[[Any], Any], Future[Any], bool]
#: (ok, result or exception) for each write of a group, in order.
Outcome = tuple[bool, Any]
_STOP = object()
_LOOK_AGAIN = object()  # wakes the writer thread to ask the backend's idle() again


class GroupBackend(Protocol):
    """The store-specific half of a group commit."""

    def apply_group(self, batch: list[Write]) -> list[Outcome]:
        """Apply each write in its own savepoint inside one transaction, then commit once.

        Returns one outcome per write, in order; a write that raised is rolled back
        alone and reported as (False, exc). Raises only if the commit itself fails
        (then nothing in the group is durable).
        """
        ...

    def after_commit(self) -> None:
        """Housekeeping after each group (growth, size accounting, periodic flush)."""
        ...

    def is_inline_allowed(self) -> bool:
        """False while the next commit would do slow work that does not belong on the loop."""
        ...

    def idle(self) -> float | None:
        """Housekeeping while no write waits (a deferred flush), on the writer thread.

        Returns the seconds after which to call it again, or None: not until the next
        commit or `GroupCommitter.look_again()`.
        """
        ...


def _refuse(future: Future[Any]) -> None:
    if future.set_running_or_notify_cancel():  # False: cancelled, nobody is waiting
        future.set_exception(RuntimeError("store is closed"))


class GroupCommitter:
    """Runs write functions through a GroupBackend on one writer thread (or inline)."""

    def __init__(
        self,
        backend: GroupBackend,
        *,
        name: str,
        max_group: int = 2000,
        inline_max: int = 4,
        quiet_turn_seconds: float = 100e-6,
    ) -> None:
        self._backend = backend
        self._max_group = max_group
        self._inline_max = inline_max
        self._quiet_turn_seconds = quiet_turn_seconds
        self._turn_started = 0.0  # perf_counter() at the first write of this loop turn
        #: Told (writes in the group, seconds to apply and commit it) after each group, on
        #: the thread that committed it (wired by the service layer's metrics).
        self.on_commit: Callable[[int, float], None] | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._inline_loop: asyncio.AbstractEventLoop | None = None
        self._inline_batch: list[Write] = []
        self._write_lock = threading.Lock()  # held while a transaction is open for writing
        self._count_lock = threading.Lock()
        self._queued = 0  # writes handed to the writer thread and not yet committed
        self._writer = threading.Thread(target=self._run_writer, name=name, daemon=True)
        self._writer.start()

    def submit(self, write: Write) -> None:
        """Queue a write; its future resolves after the commit that holds it."""
        if self._closed:
            _refuse(write[1])
        elif self._gathers_on_this_loop():
            self._inline_batch.append(write)
            if len(self._inline_batch) == 1:
                self._turn_started = time.perf_counter()
                self._inline_loop.call_soon(self._flush_turn)  # type: ignore[union-attr]
        else:
            self._to_writer([write])

    def look_again(self) -> None:
        """Have the writer thread call the backend's idle() soon (e.g. a flush is now owed)."""
        self._queue.put(_LOOK_AGAIN)

    def close(self) -> None:
        """Commit everything asked for so far, then stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._to_writer(self._take_turn())  # gathered this loop turn: committed, not lost
        self._queue.put(_STOP)
        self._writer.join()

    # -- where a write commits -------------------------------------------------

    def _gathers_on_this_loop(self) -> bool:
        """Whether this write is asked for on the event loop that gathers inline writes."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a thread without a loop: straight to the writer thread
            return False
        if self._inline_loop is None:
            self._inline_loop = loop
        return loop is self._inline_loop

    def _take_turn(self) -> list[Write]:
        batch, self._inline_batch = self._inline_batch, []
        return batch

    def _flush_turn(self) -> None:
        """End of a loop turn: commit its writes here, or hand them to the writer thread."""
        batch = self._take_turn()
        if not batch:
            return
        if self._closed:
            for _, future, _ in batch:
                _refuse(future)
            return
        if (
            len(batch) <= self._inline_max
            and self._queued == 0  # nothing asked for earlier is still waiting to commit
            and time.perf_counter() - self._turn_started < self._quiet_turn_seconds
            and self._backend.is_inline_allowed()
            and self._write_lock.acquire(blocking=False)
        ):
            try:
                self._commit_safely(batch)
            finally:
                self._write_lock.release()
        else:
            self._to_writer(batch)

    def _to_writer(self, batch: list[Write]) -> None:
        if not batch:
            return
        with self._count_lock:
            self._queued += len(batch)
        for item in batch:
            self._queue.put(item)

    # -- the writer thread ---------------------------------------------------

    def _run_writer(self) -> None:
        stopping = False
        idle_in: float | None = None
        while not stopping:
            try:
                item = self._queue.get(timeout=idle_in)
            except queue.Empty:
                item = _LOOK_AGAIN
            if item is _STOP:
                break
            if item is _LOOK_AGAIN:
                idle_in = self._idle()
                continue
            batch = [item]
            while len(batch) < self._max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                if item is not _LOOK_AGAIN:
                    batch.append(item)
            try:
                with self._write_lock:
                    self._commit_safely(batch)
            finally:
                with self._count_lock:
                    self._queued -= len(batch)
            idle_in = self._idle()
        # Anything submitted after close() began is refused rather than lost silently.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and item is not _LOOK_AGAIN:
                _refuse(item[1])

    def _idle(self) -> float | None:
        try:
            with self._write_lock:
                return self._backend.idle()
        except Exception:  # the boundary: the writer thread must live on
            log.exception("store: idle housekeeping failed")
            return 1.0

    def _commit_safely(self, batch: list[Write]) -> None:
        """Commit a group; anything that escapes fails the group's open futures instead of
        ending the writer thread (every later write would hang) or the loop's callback."""
        try:
            self._commit_group(batch)
        except Exception as exc:
            log.exception("store: a group of %d writes failed", len(batch))
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)

    def _commit_group(self, batch: list[Write]) -> None:
        # A write whose future was cancelled before it ran is not applied (and a result
        # set on a cancelled future would raise here and end the writer thread).
        batch = [item for item in batch if item[1].set_running_or_notify_cancel()]
        if not batch:
            return
        started = time.perf_counter()
        try:
            outcomes = self._backend.apply_group(batch)
        except Exception as exc:  # a commit failure: nothing in the group is durable
            log.exception("store commit failed for a group of %d writes", len(batch))
            outcomes = [(False, exc)] * len(batch)
        if self.on_commit is not None:
            self.on_commit(len(batch), time.perf_counter() - started)
        for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._backend.after_commit()
