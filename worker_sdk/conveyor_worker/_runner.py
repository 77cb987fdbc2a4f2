"""Runs one handler call, sync (thread pool) or async (the loop), within its timeout."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable
from concurrent.futures import Executor
from typing import Any

from conveyor_worker._context import Context
from conveyor_worker._outcome import Outcome
from conveyor_worker._registry import Handler

__all__ = ["HandlerRun"]


class HandlerRun:
    """One attempt of one task. `outcome()` resolves when the result is known.

    `work` stays pending while a sync handler's thread still runs after a timeout
    or shutdown: the worker keeps that slot busy until it ends, so no task waits
    for a thread behind a stuck one.
    """

    def __init__(self, handler: Handler, payload: Any, ctx: Context, pool: Executor) -> None:
        self.handler = handler
        self.ctx = ctx
        self._abandon: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.work: asyncio.Future[Any] = self._start(payload, pool)

    def _start(self, payload: Any, pool: Executor) -> asyncio.Future[Any]:
        args = (payload, self.ctx) if self.handler.takes_context else (payload,)
        fn = self.handler.fn
        if self.handler.is_async:
            coroutine: Awaitable[Any] = fn(*args)
            return asyncio.ensure_future(coroutine)
        call = contextvars.copy_context().run
        return asyncio.get_running_loop().run_in_executor(pool, call, fn, *args)

    def request_cancel(self) -> None:
        """A producer cancelled the task: tell the handler; cancel an async one."""
        self.ctx.is_cancel_requested = True
        self.ctx._set()
        if self.handler.is_async and self.handler.cancel_on_request:
            self.work.cancel()

    def abandon(self, *, is_lease_lost: bool = False) -> None:
        """Stop waiting for the handler (lease lost, or shutdown grace over)."""
        if is_lease_lost:
            self.ctx.is_lease_lost = True
        else:
            self.ctx.is_shutting_down = True
        self.ctx._set()
        if self.handler.is_async:
            self.work.cancel()
        if not self._abandon.done():
            self._abandon.set_result(None)

    async def outcome(self) -> Outcome:
        done, _ = await asyncio.wait(
            {self.work, self._abandon},
            timeout=self.handler.timeout_seconds,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self.work in done:
            return self._finished()
        if self._abandon in done and not self.work.done():
            return Outcome("drop" if self.ctx.is_lease_lost else "release")
        if self.work.done():  # finished in the same instant as the abandon/timeout
            return self._finished()
        return self._timed_out()

    def _timed_out(self) -> Outcome:
        self.ctx._set()
        if self.handler.is_async:
            self.work.cancel()
        return Outcome(
            "fail",
            error_type="HandlerTimeout",
            message=f"handler {self.handler.kind!r} ran past its timeout of "
            f"{self.handler.timeout_seconds:g} s",
        )

    def _finished(self) -> Outcome:
        ctx = self.ctx
        if self.work.cancelled():
            if ctx.is_lease_lost:
                return Outcome("drop")
            if ctx.is_shutting_down:
                return Outcome("release")
            return Outcome.cancelled()
        exc = self.work.exception()
        if exc is not None:
            if ctx.is_lease_lost:
                return Outcome("drop")
            return Outcome.from_exception(exc, self.handler.non_retryable)
        if ctx.is_cancel_requested:
            return Outcome.cancelled("cancel requested while running; the result was dropped")
        if ctx.is_lease_lost:
            return Outcome("drop")
        return Outcome.succeeded(self.work.result())
