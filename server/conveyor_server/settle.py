"""Await a store write from the event loop: `settle(future)` instead of asyncio.wrap_future.

Two differences, both on the hot path of every RPC that writes:

- A write the loop committed itself (an inline commit, see store/lmdb_store.py)
  completes its asyncio future directly; wrap_future would always go through
  call_soon_threadsafe, which writes to the loop's wake-up pipe and costs a
  system call and an extra loop turn. Writes the writer thread committed still
  cross threads that way.
- Cancelling the awaiting coroutine (the RPC's caller went away) does not
  cancel the store's future: the write may already be queued or committing,
  and its outcome is the store's to report. (wrap_future cancelled it, and a
  result set on a cancelled concurrent future raises in the writer thread.)
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def settle(future: Future[T]) -> asyncio.Future[T]:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def copy(done: Future[T]) -> None:
        if waiter.cancelled():
            return
        if done.cancelled():
            waiter.cancel()
            return
        error = done.exception()
        if error is None:
            waiter.set_result(done.result())
        else:
            waiter.set_exception(error)

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
