"""Await a store write from the event loop: `settle(future, then)` instead of asyncio.wrap_future.

Three differences, all on the path of every RPC that writes:

- `then(result)` runs on the loop as soon as the write commits, whether or not
  the awaiting coroutine is still there: what a commit means outside the store
  (waking waiters, poking the timer, handing a task to a parked Lease) must not
  be skipped because the RPC's caller went away in the meantime.
- A write the loop committed itself (an inline commit, see store/lmdb_store.py)
  completes directly; wrap_future always went through call_soon_threadsafe (a
  write to the loop's wake-up pipe and an extra loop turn). Writes the writer
  thread committed still cross threads that way.
- Cancelling the awaiting coroutine does not cancel the store's future: the
  write may already be queued or committing, and its outcome is the store's to
  report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def settle(future: Future[T], then: Callable[[T], object] | None = None) -> asyncio.Future[T]:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def copy(done: Future[T]) -> None:
        if done.cancelled():
            waiter.cancel()
            return
        error = done.exception()
        if error is not None:
            if not waiter.cancelled():
                waiter.set_exception(error)
            return
        result = done.result()
        try:
            if then is not None:
                then(result)
        finally:  # a follow-up that raises is logged; the caller still gets its answer
            if not waiter.cancelled():
                waiter.set_result(result)

    def on_done(done: Future[T]) -> None:
        try:
            is_loop_thread = asyncio.get_running_loop() is loop
        except RuntimeError:  # the writer thread has no loop
            is_loop_thread = False
        if is_loop_thread:
            copy(done)
        else:
            loop.call_soon_threadsafe(copy, done)

    future.add_done_callback(on_done)
    return waiter
